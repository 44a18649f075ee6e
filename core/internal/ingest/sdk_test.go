package ingest

// Requests signed the way oapi-sdk-go verifies them must pass the
// authenticate-before-decrypt order. (Tests may import the SDK; only
// core/internal/lark may in production code.)

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	larkcard "github.com/larksuite/oapi-sdk-go/v3/card"
	larkevent "github.com/larksuite/oapi-sdk-go/v3/event"
)

func TestSDKSignedRequests(t *testing.T) {
	url, pub, _ := liveIngest(t)
	ts := strconv.FormatInt(testNow.Unix(), 10)
	seal := func(plain string) string {
		enc, err := Encrypt([]byte(plain), testKey, []byte("sdk-vector-iv-16"))
		if err != nil {
			t.Fatal(err)
		}
		// The SDK opens what we seal, so the vectors are Lark's format.
		if got, err := larkevent.EventDecrypt(enc, testKey); err != nil || string(got) != plain {
			t.Fatalf("the SDK decrypts %q, %v", got, err)
		}
		return fmt.Sprintf(`{"encrypt":%q}`, enc)
	}
	headers := func(nonce, sig string) http.Header {
		return http.Header{larkevent.EventRequestTimestamp: {ts}, larkevent.EventRequestNonce: {nonce}, larkevent.EventSignature: {sig}}
	}
	event, card := seal(messageEvent("vt")), seal(legacyCard)
	tests := []struct {
		name   string
		path   string
		body   string
		h      http.Header
		status int
		reason string
	}{
		{"event signed by the SDK's formula", oracleApp.EventPath, event, headers("s1", larkevent.Signature(ts, "s1", testKey, event)), 200, ""},
		{"legacy card signed by the SDK's formula", oracleApp.CardPath, card, headers("s2", larkcard.Signature(ts, "s2", "vt", card)), 200, ""},
		{"event signed with the wrong key", oracleApp.EventPath, event, headers("s3", larkevent.Signature(ts, "s3", "other", event)), 401, "bad_signature"},
		{"legacy card signed with the wrong token", oracleApp.CardPath, card, headers("s4", larkcard.Signature(ts, "s4", "other", card)), 401, "bad_signature"},
		{"encrypted challenge, unsigned as Lark sends it", oracleApp.EventPath, seal(`{"challenge":"sdk","token":"vt","type":"url_verification"}`), nil, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := post(t, url+tt.path, tt.body, tt.h)
			if got.status != tt.status || (tt.reason != "" && !strings.Contains(got.body, `"reason":"`+tt.reason+`"`)) {
				t.Fatalf("answered %v, want %d %s", got, tt.status, tt.reason)
			}
		})
	}
	if n := pub.stored(); n != 2 {
		t.Fatalf("stored %d, want the event and the card", n)
	}
}
