package ingest

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/callback"
	"github.com/larkway/larkway/core/internal/envelope"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

const cardEvent = `{"schema":"2.0","header":{"event_id":"card-ev-1","token":"vt","create_time":"1700000000000","event_type":"card.action.trigger","tenant_key":"t","app_id":"cli_test"},
"event":{"operator":{"open_id":"ou_1"},"token":"c-tok","action":{"value":{"k":"v"},"tag":"button"},"context":{"open_message_id":"om_card","open_chat_id":"oc_1"}}}`

const legacyCard = `{"open_id":"ou_1","open_message_id":"om_card","open_chat_id":"oc_1","tenant_key":"t","token":"c-tok","action":{"value":{"k":"v"},"tag":"button"}}`

// answeringPublisher stores messages and, like a dispatcher with a plugin
// behind it, answers card clicks through the hub.
type answeringPublisher struct {
	hub    callback.Hub
	answer *pluginv1.CardResponse
	mu     sync.Mutex // got is appended by server goroutines in HTTP tests
	got    []bus.Message
}

func (p *answeringPublisher) stored() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.got)
}

func (p *answeringPublisher) Publish(ctx context.Context, _ string, m bus.Message) error {
	p.mu.Lock()
	p.got = append(p.got, m)
	p.mu.Unlock()
	ev, _ := envelope.Decode(m.Payload)
	if p.answer != nil && ev.GetCardAction().GetAwaitsResponse() {
		go func() { _, _ = p.hub.Deliver(context.Background(), ev.GetEventId(), p.answer) }()
	}
	return nil
}

func cardServer(pub *answeringPublisher, budget time.Duration) *Server {
	return New(Config{
		Apps:         []App{{ID: "cli_test", VerificationToken: "vt", EventPath: "/lark/events", CardPath: "/lark/cards"}},
		MaxBodyBytes: 1 << 20, PublishTimeout: time.Second, Callbacks: pub.hub, CardBudget: budget,
		Now: func() time.Time { return testNow },
	}, pub, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
}

func TestCardCallbackAnsweredWithinBudget(t *testing.T) {
	pub := &answeringPublisher{hub: callback.NewMemory(), answer: &pluginv1.CardResponse{
		Toast: &pluginv1.Toast{Type: pluginv1.ToastType_TOAST_TYPE_SUCCESS, Content: "approved"}, CardJson: `{"elements":[]}`}}
	s := cardServer(pub, 2*time.Second)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("POST", "/lark/events", strings.NewReader(cardEvent)))
	if rec.Code != 200 {
		t.Fatalf("status %d %s", rec.Code, rec.Body)
	}
	var body struct {
		Toast struct{ Type, Content string }
		Card  struct {
			Type string
			Data json.RawMessage
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Toast.Type != "success" || body.Toast.Content != "approved" ||
		body.Card.Type != "raw" || string(body.Card.Data) != `{"elements":[]}` {
		t.Fatalf("body %s (%v)", rec.Body, err)
	}
	if len(pub.got) != 1 {
		t.Fatalf("published %d", len(pub.got))
	}
}

func TestCardCallbackBudgetExpires(t *testing.T) {
	pub := &answeringPublisher{hub: callback.NewMemory()} // the plugin never answers in time
	s := cardServer(pub, 50*time.Millisecond)
	rec := httptest.NewRecorder()
	start := time.Now()
	s.ServeHTTP(rec, httptest.NewRequest("POST", "/lark/events", strings.NewReader(cardEvent)))
	if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != "{}" {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("budget not honoured")
	}
	if len(pub.got) != 1 {
		t.Fatal("click not stored")
	}
}

func signedCard(body, token string, ts time.Time, nonce string) *http.Request {
	req := httptest.NewRequest("POST", "/lark/cards", strings.NewReader(body))
	tss := strconv.FormatInt(ts.Unix(), 10)
	req.Header.Set(HeaderTimestamp, tss)
	req.Header.Set(HeaderNonce, nonce)
	req.Header.Set(HeaderSignature, CardSignature(tss, nonce, token, []byte(body)))
	return req
}

func TestLegacyCardCallback(t *testing.T) {
	answer := &pluginv1.CardResponse{CardJson: `{"header":{"title":{"tag":"plain_text","content":"done"}}}`}
	tests := []struct {
		name   string
		req    func() *http.Request
		status int
		body   string
	}{
		{"signed click answered with the card", func() *http.Request { return signedCard(legacyCard, "vt", testNow, "n1") }, 200, answer.CardJson},
		{"unsigned click", func() *http.Request { return httptest.NewRequest("POST", "/lark/cards", strings.NewReader(legacyCard)) }, 401, "unauthenticated"},
		{"signed with the wrong token", func() *http.Request { return signedCard(legacyCard, "forged", testNow, "n2") }, 401, "bad_signature"},
		{"stale", func() *http.Request { return signedCard(legacyCard, "vt", testNow.Add(-time.Hour), "n3") }, 401, "stale_timestamp"},
		{"challenge", func() *http.Request {
			return httptest.NewRequest("POST", "/lark/cards", strings.NewReader(`{"challenge":"x","token":"vt","type":"url_verification"}`))
		}, 200, `"challenge":"x"`},
		{"challenge wrong token", func() *http.Request {
			return httptest.NewRequest("POST", "/lark/cards", strings.NewReader(`{"challenge":"x","token":"no","type":"url_verification"}`))
		}, 401, "unauthenticated"},
		{"unsigned not json", func() *http.Request { return httptest.NewRequest("POST", "/lark/cards", strings.NewReader(`<xml/>`)) }, 401, "unauthenticated"},
		{"unsigned encrypted without key", func() *http.Request {
			return httptest.NewRequest("POST", "/lark/cards", strings.NewReader(`{"encrypt":"AAAA"}`))
		}, 401, "unauthenticated"},
		{"signed challenge", func() *http.Request {
			return signedCard(`{"challenge":"y","token":"vt","type":"url_verification"}`, "vt", testNow, "n7")
		}, 200, `"challenge":"y"`},
		{"no message id", func() *http.Request { return signedCard(`{"action":{}}`, "vt", testNow, "n4") }, 400, "malformed"},
		{"not json", func() *http.Request { return signedCard(`<xml/>`, "vt", testNow, "n5") }, 400, "not_json"},
		{"encrypted without key", func() *http.Request { return signedCard(`{"encrypt":"AAAA"}`, "vt", testNow, "n6") }, 400, "undecryptable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &answeringPublisher{hub: callback.NewMemory(), answer: answer}
			rec := httptest.NewRecorder()
			cardServer(pub, 2*time.Second).ServeHTTP(rec, tt.req())
			if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.body) {
				t.Fatalf("got %d %s, want %d %s", rec.Code, rec.Body, tt.status, tt.body)
			}
		})
	}
}

func TestCardResponseBody(t *testing.T) {
	tests := []struct {
		resp   *pluginv1.CardResponse
		legacy bool
		want   string
	}{
		{nil, false, `{}`},
		{&pluginv1.CardResponse{}, false, `{}`},
		{&pluginv1.CardResponse{Toast: &pluginv1.Toast{Content: "hi"}}, false, `{"toast":{"content":"hi","type":"info"}}`},
		{&pluginv1.CardResponse{CardJson: `not json`}, false, `{}`},
		{&pluginv1.CardResponse{Toast: &pluginv1.Toast{Content: "hi"}}, true, `{}`},
		{&pluginv1.CardResponse{CardJson: `{"a":1}`}, true, `{"a":1}`},
	}
	for _, tt := range tests {
		if got := string(CardResponseBody(tt.resp, tt.legacy)); got != tt.want {
			t.Errorf("CardResponseBody(%v, %v) = %s, want %s", tt.resp, tt.legacy, got, tt.want)
		}
	}
}
