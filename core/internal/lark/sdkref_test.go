package lark_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/ingest"
	"github.com/larkway/larkway/core/internal/lark"
)

// sealedRequest encrypts and signs a golden message event as Lark would.
func sealedRequest(t *testing.T, key, nonce string) (http.Header, []byte) {
	t.Helper()
	plain, err := os.ReadFile("../envelope/testdata/message_text_group.json")
	if err != nil {
		t.Fatal(err)
	}
	enc, err := ingest.Encrypt(plain, key, bytes.Repeat([]byte{7}, 16))
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"encrypt":"` + enc + `"}`)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(ingest.HeaderTimestamp, ts)
	h.Set(ingest.HeaderNonce, nonce)
	h.Set(ingest.HeaderSignature, ingest.EventSignature(ts, nonce, key, body))
	return h, body
}

func TestSDKReference(t *testing.T) {
	const key = "bench-encrypt-key"
	var handled atomic.Int64
	ref := lark.NewSDKReference("vt", key, func() { handled.Add(1) })

	h, body := sealedRequest(t, key, "n1")
	if got := ref.Handle(t.Context(), h, body); got != http.StatusOK {
		t.Fatalf("Handle: status %d, want 200", got)
	}
	// The same request over HTTP, through httpserverext.
	req := httptest.NewRequest(http.MethodPost, "/webhook/event", bytes.NewReader(body))
	req.Header = h.Clone()
	rec := httptest.NewRecorder()
	ref.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !bytes.Contains(rec.Body.Bytes(), []byte("success")) {
		t.Fatalf("ServeHTTP: %d %s", rec.Code, rec.Body)
	}
	if handled.Load() != 2 {
		t.Fatalf("handler ran %d times, want 2", handled.Load())
	}

	// A wrong signature is refused before the handler runs.
	h.Set(ingest.HeaderSignature, "00")
	if got := ref.Handle(t.Context(), h, body); got != http.StatusInternalServerError {
		t.Fatalf("bad signature: status %d, want 500", got)
	}
	if handled.Load() != 2 {
		t.Fatal("handler ran for a badly signed request")
	}
}
