package htmx

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"testing"
)

// The embedded file is the pinned release, byte for byte.
func TestEmbeddedHTMXIsThePinnedRelease(t *testing.T) {
	const want = "e209dda5c8235479f3166defc7750e1dbcd5a5c1808b7792fc2e6733768fb447"
	sum := sha256.Sum256(JS())
	if got := hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("htmx sha256 %s, want %s (htmx.org@%s dist/htmx.min.js)", got, want, Version)
	}
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/"+File, nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "text/javascript; charset=utf-8" || rec.Body.Len() != len(JS()) {
		t.Fatalf("served %d %q, %d bytes", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len())
	}
}
