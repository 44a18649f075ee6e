package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/envelope"
)

// recorder is a Publisher that stores messages, or fails with err.
type recorder struct {
	mu   sync.Mutex
	msgs []bus.Message
	err  error
}

func (r *recorder) Publish(_ context.Context, _ string, m bus.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.msgs = append(r.msgs, m)
	return nil
}

func newServer(pub bus.Publisher) *Server {
	return New(Config{
		Apps:           []App{{ID: "cli_test", VerificationToken: "vt", EventPath: "/lark/events"}},
		MaxBodyBytes:   1 << 20,
		PublishTimeout: time.Second,
	}, pub, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
}

func messageEvent(token string) string {
	return fmt.Sprintf(`{"schema":"2.0","header":{"event_id":"ev1","token":%q,"create_time":"1700000000000","event_type":"im.message.receive_v1","tenant_key":"t","app_id":"cli_test"},
"event":{"sender":{"sender_id":{"open_id":"ou_1"},"sender_type":"user"},"message":{"message_id":"om_1","chat_id":"oc_1","chat_type":"group","message_type":"text","content":"{\"text\":\"hi\"}"}}}`, token)
}

func TestWebhook(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		pubErr     error
		wantStatus int
		wantReason string
		wantStored int
	}{
		{"message stored", "POST", "/lark/events", messageEvent("vt"), nil, 200, "", 1},
		{"challenge", "POST", "/lark/events", `{"challenge":"c1","token":"vt","type":"url_verification"}`, nil, 200, "", 0},
		// Without an encrypt key nothing is signed: every failure before the
		// verification token is proven gets the one unauthenticated answer.
		{"challenge wrong token", "POST", "/lark/events", `{"challenge":"c1","token":"x","type":"url_verification"}`, nil, 401, "unauthenticated", 0},
		{"wrong token", "POST", "/lark/events", messageEvent("forged"), nil, 401, "unauthenticated", 0},
		{"missing token", "POST", "/lark/events", messageEvent(""), nil, 401, "unauthenticated", 0},
		{"malformed json", "POST", "/lark/events", `{"schema":`, nil, 401, "unauthenticated", 0},
		{"json array", "POST", "/lark/events", `[1,2]`, nil, 401, "unauthenticated", 0},
		{"empty body", "POST", "/lark/events", ``, nil, 401, "unauthenticated", 0},
		{"oversize", "POST", "/lark/events", `{"x":"` + strings.Repeat("a", 1<<20) + `"}`, nil, 413, "oversize", 0},
		{"unknown schema", "POST", "/lark/events", `{"schema":"3.0","header":{"token":"vt"}}`, nil, 400, "unknown_schema", 0},
		{"missing event id", "POST", "/lark/events", `{"schema":"2.0","header":{"token":"vt","event_type":"x"}}`, nil, 400, "malformed", 0},
		{"bus unavailable", "POST", "/lark/events", messageEvent("vt"), fmt.Errorf("down: %w", bus.ErrUnavailable), 503, "bus_unavailable", 0},
		{"wrong method", "GET", "/lark/events", ``, nil, 405, "method", 0},
		{"unknown path", "POST", "/lark/other", messageEvent("vt"), nil, 404, "unknown_path", 0},
		{"encrypted without key", "POST", "/lark/events", `{"encrypt":"abc"}`, nil, 401, "unauthenticated", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &recorder{err: tt.pubErr}
			s := newServer(pub)
			req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q, want JSON", ct)
			}
			var body map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body is not JSON: %s", rec.Body)
			}
			if tt.wantReason != "" && (body["reason"] != tt.wantReason || body["error"] == "") {
				t.Errorf("body %v, want reason %q and an error message", body, tt.wantReason)
			}
			if len(pub.msgs) != tt.wantStored {
				t.Errorf("stored %d messages, want %d", len(pub.msgs), tt.wantStored)
			}
		})
	}
}

func TestChallengeEchoesValue(t *testing.T) {
	s := newServer(&recorder{})
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("POST", "/lark/events", strings.NewReader(`{"challenge":"a\"b","token":"vt","type":"url_verification"}`)))
	var body map[string]string
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	if body["challenge"] != `a"b` {
		t.Fatalf("challenge = %q", body["challenge"])
	}
}

func TestStoredEventIsNormalizedAndKeyedByChat(t *testing.T) {
	pub := &recorder{}
	s := newServer(pub)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("POST", "/lark/events", strings.NewReader(messageEvent("vt"))))
	if rec.Code != 200 || len(pub.msgs) != 1 {
		t.Fatalf("status %d, %d stored", rec.Code, len(pub.msgs))
	}
	m := pub.msgs[0]
	if m.Key != "oc_1" {
		t.Errorf("key %q, want the chat id", m.Key)
	}
	ev, err := envelope.Decode(m.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetMessage().GetText() != "hi" || ev.GetDedupKey() != "om_1" || ev.GetAppId() != "cli_test" {
		t.Errorf("event %v", ev)
	}
}

// A slow bus must not hold Lark past its 3 s: the publish timeout answers 503.
func TestPublishTimeoutAnswers503(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	pub := publisherFunc(func(ctx context.Context, _ string, _ bus.Message) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-block:
			return nil
		}
	})
	s := New(Config{Apps: []App{{ID: "cli_test", VerificationToken: "vt", EventPath: "/e"}}, MaxBodyBytes: 1 << 20,
		PublishTimeout: 50 * time.Millisecond}, pub, slog.New(slog.DiscardHandler), nil)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("POST", "/e", strings.NewReader(messageEvent("vt"))))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d", rec.Code)
	}
	_, _ = io.Copy(io.Discard, rec.Body)
}

type publisherFunc func(context.Context, string, bus.Message) error

func (f publisherFunc) Publish(ctx context.Context, t string, m bus.Message) error {
	return f(ctx, t, m)
}
