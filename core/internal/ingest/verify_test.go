package ingest

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const testKey = "encrypt-key"

var testNow = time.Unix(1_700_000_000, 0)

func encryptedServer(pub *recorder) *Server {
	return New(Config{
		Apps:           []App{{ID: "cli_test", VerificationToken: "vt", EncryptKey: testKey, EventPath: "/lark/events"}},
		MaxBodyBytes:   1 << 20,
		PublishTimeout: time.Second,
		Now:            func() time.Time { return testNow },
	}, pub, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
}

// sealed builds what Lark sends for plain JSON: the encrypted wrapper and
// signature headers for timestamp ts and nonce.
func sealed(t *testing.T, plain string, key string, ts time.Time, nonce string) (string, http.Header) {
	t.Helper()
	enc, err := Encrypt([]byte(plain), key, []byte("0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"encrypt":%q}`, enc)
	h := http.Header{}
	tss := strconv.FormatInt(ts.Unix(), 10)
	h.Set(HeaderTimestamp, tss)
	h.Set(HeaderNonce, nonce)
	h.Set(HeaderSignature, EventSignature(tss, nonce, key, []byte(body)))
	return body, h
}

func TestEncryptedWebhook(t *testing.T) {
	event := messageEvent("vt")
	challenge := `{"challenge":"c9","token":"vt","type":"url_verification"}`
	tests := []struct {
		name       string
		build      func(t *testing.T) (string, http.Header)
		wantStatus int
		wantReason string
	}{
		{"signed event stored", func(t *testing.T) (string, http.Header) { return sealed(t, event, testKey, testNow, "n1") }, 200, ""},
		{"clock skew inside window", func(t *testing.T) (string, http.Header) {
			return sealed(t, event, testKey, testNow.Add(-4*time.Minute), "n2")
		}, 200, ""},
		{"stale timestamp", func(t *testing.T) (string, http.Header) {
			return sealed(t, event, testKey, testNow.Add(-6*time.Minute), "n3")
		}, 401, "stale_timestamp"},
		{"future timestamp", func(t *testing.T) (string, http.Header) {
			return sealed(t, event, testKey, testNow.Add(6*time.Minute), "n4")
		}, 401, "stale_timestamp"},
		{"forged signature", func(t *testing.T) (string, http.Header) {
			b, h := sealed(t, event, testKey, testNow, "n5")
			h.Set(HeaderSignature, strings.Repeat("0", 64))
			return b, h
		}, 401, "bad_signature"},
		{"signed with another key", func(t *testing.T) (string, http.Header) { return sealed(t, event, "other", testNow, "n6") }, 401, "bad_signature"},
		{"tampered body", func(t *testing.T) (string, http.Header) {
			b, h := sealed(t, event, testKey, testNow, "n7")
			return strings.Replace(b, `"encrypt":"`, `"encrypt":"A`, 1), h
		}, 401, "bad_signature"},
		// Unsigned, only url_verification can pass; anything else gets the
		// one unauthenticated answer.
		{"unsigned event", func(t *testing.T) (string, http.Header) {
			b, _ := sealed(t, event, testKey, testNow, "n8")
			return b, http.Header{}
		}, 401, "unauthenticated"},
		{"signature without timestamp and nonce", func(t *testing.T) (string, http.Header) {
			b, h := sealed(t, event, testKey, testNow, "n8")
			h.Del(HeaderTimestamp)
			h.Del(HeaderNonce)
			return b, h
		}, 401, "missing_signature"},
		{"missing nonce", func(t *testing.T) (string, http.Header) {
			b, h := sealed(t, event, testKey, testNow, "n9")
			h.Del(HeaderNonce)
			return b, h
		}, 401, "missing_signature"},
		{"non-numeric timestamp", func(t *testing.T) (string, http.Header) {
			b, h := sealed(t, event, testKey, testNow, "n10")
			h.Set(HeaderTimestamp, "yesterday")
			return b, h
		}, 401, "stale_timestamp"},
		{"unsigned plaintext when a key is set", func(t *testing.T) (string, http.Header) { return event, http.Header{} }, 401, "unauthenticated"},
		{"signed plaintext when a key is set", func(t *testing.T) (string, http.Header) {
			h := http.Header{}
			h.Set(HeaderTimestamp, strconv.FormatInt(testNow.Unix(), 10))
			h.Set(HeaderNonce, "n13")
			h.Set(HeaderSignature, EventSignature(h.Get(HeaderTimestamp), "n13", testKey, []byte(event)))
			return event, h
		}, 400, "not_encrypted"},
		{"unsigned challenge with the wrong token", func(t *testing.T) (string, http.Header) {
			b, _ := sealed(t, `{"challenge":"c9","token":"forged","type":"url_verification"}`, testKey, testNow, "x")
			return b, http.Header{}
		}, 401, "unauthenticated"},
		{"signed challenge", func(t *testing.T) (string, http.Header) { return sealed(t, challenge, testKey, testNow, "n14") }, 200, ""},
		{"encrypted challenge without headers", func(t *testing.T) (string, http.Header) {
			b, _ := sealed(t, challenge, testKey, testNow, "x")
			return b, http.Header{}
		}, 200, ""},
		{"signed garbage ciphertext", func(t *testing.T) (string, http.Header) {
			body := `{"encrypt":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`
			h := http.Header{}
			h.Set(HeaderTimestamp, strconv.FormatInt(testNow.Unix(), 10))
			h.Set(HeaderNonce, "n11")
			h.Set(HeaderSignature, EventSignature(h.Get(HeaderTimestamp), "n11", testKey, []byte(body)))
			return body, h
		}, 400, "undecryptable"},
		{"wrong token inside", func(t *testing.T) (string, http.Header) {
			return sealed(t, messageEvent("forged"), testKey, testNow, "n12")
		}, 401, "bad_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &recorder{}
			s := encryptedServer(pub)
			body, h := tt.build(t)
			req := httptest.NewRequest("POST", "/lark/events", strings.NewReader(body))
			for k, v := range h {
				req.Header[k] = v
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus || (tt.wantReason != "" && !strings.Contains(rec.Body.String(), `"reason":"`+tt.wantReason+`"`)) {
				t.Fatalf("got %d %s, want %d %s", rec.Code, rec.Body, tt.wantStatus, tt.wantReason)
			}
		})
	}
}

func TestReplayedNonceRejected(t *testing.T) {
	pub := &recorder{}
	s := encryptedServer(pub)
	body, h := sealed(t, messageEvent("vt"), testKey, testNow, "once")
	for i, want := range []int{200, 401} {
		req := httptest.NewRequest("POST", "/lark/events", strings.NewReader(body))
		for k, v := range h {
			req.Header[k] = v
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Fatalf("request %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	if len(pub.msgs) != 1 {
		t.Fatalf("stored %d", len(pub.msgs))
	}
}
