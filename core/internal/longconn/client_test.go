package longconn_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/bus/memory"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/longconn"
	"github.com/larkway/larkway/core/internal/longconn/pbbp2"
	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	app    = "cli_longconn"
	secret = "longconn-secret"
	wait   = 10 * time.Second // upper bound for Eventually; never a sleep
)

// logSink collects a test's logs; they are printed if the test fails.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func (s *logSink) has(sub string) bool { return strings.Contains(s.String(), sub) }

type harness struct {
	emu  *larkemu.WSServer
	srv  *httptest.Server
	logs *logSink
	log  *slog.Logger
}

func newHarness(t *testing.T, opts larkemu.WSOptions) *harness {
	t.Helper()
	h := &harness{logs: &logSink{}}
	h.log = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if opts.Apps == nil {
		opts.Apps = map[string]string{app: secret}
	}
	if opts.AckTimeout == 0 {
		opts.AckTimeout = 5 * time.Second
	}
	if opts.Retries == nil {
		opts.Retries = []time.Duration{}
	}
	opts.Logger = h.log
	h.emu = larkemu.NewWSServer(opts)
	h.srv = httptest.NewServer(h.emu)
	t.Cleanup(func() {
		h.emu.Close()
		h.srv.Close()
		if t.Failed() {
			t.Logf("logs:\n%s", h.logs.String())
		}
	})
	return h
}

// config is a client config with test-sized intervals.
func (h *harness) config() longconn.Config {
	return longconn.Config{
		AppID: app, AppSecret: secret, BaseURL: h.srv.URL,
		PingInterval: 100 * time.Millisecond, LivenessTimeout: 3 * time.Second,
		ReconnectMin: 5 * time.Millisecond, ReconnectMax: 50 * time.Millisecond,
		DiscoveryTimeout: 2 * time.Second,
	}
}

type running struct {
	client *longconn.Client
	cancel context.CancelFunc
	done   chan error
}

// start runs a client until the test ends (or stop).
func (h *harness) start(t *testing.T, cfg longconn.Config, pub bus.Publisher, cards longconn.CardResponder) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	r := &running{client: longconn.New(cfg, pub, cards, h.log), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- r.client.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and returns its result.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // later calls see it too
		return err
	case <-time.After(wait):
		t.Fatal("Run did not return after its context ended")
		return nil
	}
}

// connected waits for n open connections on both sides.
func (h *harness) connected(t *testing.T, r *running, n int) {
	t.Helper()
	testenv.Eventually(t, wait, fmt.Sprintf("%d connections open", n), func() bool {
		return r.client.Connected() == n && h.emu.Connections(app) == n
	})
}

func messageEvent(eventID, text string) []byte {
	content, _ := json.Marshal(map[string]string{"text": text})
	b, _ := json.Marshal(map[string]any{
		"schema": "2.0",
		"header": map[string]any{"event_id": eventID, "event_type": "im.message.receive_v1",
			"create_time": "1700000000000", "tenant_key": "t1", "app_id": app, "token": "v"},
		"event": map[string]any{
			"sender": map[string]any{"sender_id": map[string]string{"open_id": "ou_1"}, "sender_type": "user"},
			"message": map[string]any{"message_id": "om_" + eventID, "chat_id": "oc_chat", "chat_type": "group",
				"message_type": "text", "content": string(content)},
		},
	})
	return b
}

func cardEvent(eventID string) []byte {
	b, _ := json.Marshal(map[string]any{
		"schema": "2.0",
		"header": map[string]any{"event_id": eventID, "event_type": "card.action.trigger",
			"create_time": "1700000000000", "tenant_key": "t1", "app_id": app},
		"event": map[string]any{
			"operator": map[string]string{"open_id": "ou_1"},
			"token":    "c-token",
			"action":   map[string]any{"tag": "button", "value": map[string]string{"k": "v"}},
			"context":  map[string]string{"open_message_id": "om_card", "open_chat_id": "oc_chat"},
		},
	})
	return b
}

// subscribe opens a memory-bus consumer on the app's topic.
func subscribe(t *testing.T, b *memory.Bus) bus.Consumer {
	t.Helper()
	c, err := b.Subscribe(t.Context(), bus.SubscribeOptions{Topic: envelope.Topic(app), Subscription: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func receive(t *testing.T, c bus.Consumer) *pluginv1.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	d, err := c.Receive(ctx)
	if err != nil {
		t.Fatalf("no event on the bus: %v", err)
	}
	_ = d.Ack()
	ev, err := envelope.Decode(d.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func nextAck(t *testing.T, ch <-chan larkemu.WSAck) larkemu.WSAck {
	t.Helper()
	select {
	case a, ok := <-ch:
		if !ok {
			t.Fatal("no more delivery attempts")
		}
		return a
	case <-time.After(wait):
		t.Fatal("no ack")
		return larkemu.WSAck{}
	}
}

func noMoreAttempts(t *testing.T, ch <-chan larkemu.WSAck) {
	t.Helper()
	select {
	case a, ok := <-ch:
		if ok {
			t.Fatalf("unexpected further attempt: %+v", a)
		}
	case <-time.After(wait):
		t.Fatal("delivery did not finish")
	}
}

func newBus(t *testing.T) *memory.Bus {
	b := memory.New(nil)
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

func TestEventIsPublishedThenAcked(t *testing.T) {
	h := newHarness(t, larkemu.WSOptions{})
	mem := newBus(t)
	sub := subscribe(t, mem)
	r := h.start(t, h.config(), mem, nil)
	h.connected(t, r, 1)

	acks, err := h.emu.PushEvent(app, messageEvent("ev1", "hello"))
	if err != nil {
		t.Fatal(err)
	}
	a := nextAck(t, acks)
	if !a.OK() || a.Data != nil {
		t.Fatalf("ack = %+v, want code 200 with null data", a)
	}
	if a.Headers[pbbp2.HeaderBizRT] == "" || a.Headers[pbbp2.HeaderMessageID] != a.MessageID {
		t.Errorf("ack headers %v do not echo the frame plus biz_rt", a.Headers)
	}
	noMoreAttempts(t, acks)
	ev := receive(t, sub)
	if ev.GetEventId() != "ev1" || ev.GetMessage().GetText() != "hello" || ev.GetChatId() != "oc_chat" || ev.GetAppId() != app {
		t.Errorf("published event = %v", ev)
	}
}

// failingPublisher fails its first n publishes, then hands over to next.
type failingPublisher struct {
	failures atomic.Int32
	calls    atomic.Int32
	next     bus.Publisher
}

func (p *failingPublisher) Publish(ctx context.Context, topic string, msg bus.Message) error {
	p.calls.Add(1)
	if p.failures.Add(-1) >= 0 {
		return fmt.Errorf("broker down: %w", bus.ErrUnavailable)
	}
	return p.next.Publish(ctx, topic, msg)
}

func TestFailedPublishIsAcked500AndRedelivered(t *testing.T) {
	h := newHarness(t, larkemu.WSOptions{Retries: []time.Duration{10 * time.Millisecond, 10 * time.Millisecond}})
	mem := newBus(t)
	sub := subscribe(t, mem)
	pub := &failingPublisher{next: mem}
	pub.failures.Store(1)
	r := h.start(t, h.config(), pub, nil)
	h.connected(t, r, 1)

	acks, err := h.emu.PushEvent(app, messageEvent("ev-retry", "again"))
	if err != nil {
		t.Fatal(err)
	}
	first := nextAck(t, acks)
	if first.Err != nil || first.Code != 500 || first.Attempt != 1 {
		t.Fatalf("first attempt = %+v, want ack code 500", first)
	}
	second := nextAck(t, acks)
	if !second.OK() || second.Attempt != 2 {
		t.Fatalf("redelivery = %+v, want ack code 200", second)
	}
	noMoreAttempts(t, acks)
	if ev := receive(t, sub); ev.GetEventId() != "ev-retry" {
		t.Errorf("bus got %v", ev)
	}
	if n := pub.calls.Load(); n != 2 {
		t.Errorf("%d publishes, want 2", n)
	}
	if !h.logs.has("event not stored; acking 500") {
		t.Error("no log about the failed publish")
	}
}

func TestUnnormalizableEventIsAcked500(t *testing.T) {
	h := newHarness(t, larkemu.WSOptions{})
	r := h.start(t, h.config(), newBus(t), nil)
	h.connected(t, r, 1)
	for _, payload := range []string{`{"not":"an event"}`, `not json`, `{"schema":"2.0","header":{}}`, "\xff\xfe"} {
		acks, err := h.emu.PushEvent(app, []byte(payload))
		if err != nil {
			t.Fatal(err)
		}
		if a := nextAck(t, acks); a.Err != nil || a.Code != 500 {
			t.Errorf("payload %q: ack %+v, want code 500", payload, a)
		}
	}
	if !h.logs.has("cannot normalize the payload") {
		t.Error("no log about the malformed payload")
	}
}

// cardResponder answers with a fixed body or error and records its calls.
type cardResponder struct {
	resp  []byte
	err   error
	calls chan *pluginv1.Event
}

func (c *cardResponder) Respond(ctx context.Context, ev *pluginv1.Event) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		return nil, errors.New("no deadline on the responder's context")
	}
	c.calls <- ev
	return c.resp, c.err
}

func TestCardCallbacks(t *testing.T) {
	toast := `{"toast":{"type":"success","content":"ok"}}`
	tests := []struct {
		name      string
		responder *cardResponder // nil: no responder
		frameType string
		payload   []byte
		wantCode  int
		wantData  string
		published bool
	}{
		{name: "toast for a card.action.trigger event frame", responder: &cardResponder{resp: []byte(toast)},
			frameType: pbbp2.TypeEvent, payload: cardEvent("card1"), wantCode: 200, wantData: toast},
		{name: "toast for a type=card frame", responder: &cardResponder{resp: []byte(toast)},
			frameType: pbbp2.TypeCard, payload: cardEvent("card2"), wantCode: 200, wantData: toast},
		{name: "legacy callback body in a type=card frame", responder: &cardResponder{resp: []byte(toast)},
			frameType: pbbp2.TypeCard, payload: []byte(`{"open_id":"ou_1","open_message_id":"om_1","open_chat_id":"oc_chat","token":"c-1","action":{"tag":"button","value":{"a":1}}}`),
			wantCode: 200, wantData: toast},
		{name: "nil response means {}", responder: &cardResponder{},
			frameType: pbbp2.TypeEvent, payload: cardEvent("card3"), wantCode: 200, wantData: "{}"},
		{name: "responder error is 500", responder: &cardResponder{err: errors.New("plugin down")},
			frameType: pbbp2.TypeEvent, payload: cardEvent("card4"), wantCode: 500},
		{name: "invalid JSON response is 500", responder: &cardResponder{resp: []byte("{toast")},
			frameType: pbbp2.TypeEvent, payload: cardEvent("card5"), wantCode: 500},
		{name: "no responder: published, answered {}", frameType: pbbp2.TypeEvent, payload: cardEvent("card6"),
			wantCode: 200, wantData: "{}", published: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, larkemu.WSOptions{})
			mem := newBus(t)
			sub := subscribe(t, mem)
			var cards longconn.CardResponder
			if tt.responder != nil {
				tt.responder.calls = make(chan *pluginv1.Event, 1)
				cards = tt.responder
			}
			r := h.start(t, h.config(), mem, cards)
			h.connected(t, r, 1)
			acks, err := h.emu.Push(app, larkemu.WSPush{Type: tt.frameType, Payload: tt.payload})
			if err != nil {
				t.Fatal(err)
			}
			a := nextAck(t, acks)
			if a.Err != nil || a.Code != tt.wantCode || string(a.Data) != tt.wantData {
				t.Fatalf("ack = code %d data %q err %v, want code %d data %q", a.Code, a.Data, a.Err, tt.wantCode, tt.wantData)
			}
			if tt.responder != nil {
				ev := <-tt.responder.calls
				if ev.GetCardAction().GetOpenMessageId() == "" || ev.GetCardAction().GetToken() == "" {
					t.Errorf("responder got %v, want a card action", ev)
				}
			}
			if tt.published {
				if ev := receive(t, sub); ev.GetCardAction() == nil {
					t.Errorf("published %v, want the card action", ev)
				}
			}
		})
	}
}

func TestFragmentedPayloadsReassemble(t *testing.T) {
	for _, reverse := range []bool{false, true} {
		t.Run(fmt.Sprintf("reverse=%v", reverse), func(t *testing.T) {
			h := newHarness(t, larkemu.WSOptions{})
			mem := newBus(t)
			sub := subscribe(t, mem)
			r := h.start(t, h.config(), mem, nil)
			h.connected(t, r, 1)
			payload := messageEvent("ev-frag", strings.Repeat("long text ", 3000))
			acks, err := h.emu.Push(app, larkemu.WSPush{Payload: payload, Fragments: 7, Reverse: reverse})
			if err != nil {
				t.Fatal(err)
			}
			a := nextAck(t, acks)
			if !a.OK() {
				t.Fatalf("ack = %+v", a)
			}
			if a.Headers[pbbp2.HeaderSum] != "7" {
				t.Errorf("ack headers %v: want the fragment's sum=7", a.Headers)
			}
			if ev := receive(t, sub); !bytes.Equal(ev.GetRawJson(), payload) {
				t.Errorf("reassembled %d bytes, pushed %d", len(ev.GetRawJson()), len(payload))
			}
		})
	}
}

func TestGarbageFramesAreLoggedAndSurvived(t *testing.T) {
	h := newHarness(t, larkemu.WSOptions{AckTimeout: 300 * time.Millisecond})
	mem := newBus(t)
	sub := subscribe(t, mem)
	cfg := h.config()
	cfg.MaxMessageBytes = 4 << 10
	r := h.start(t, cfg, mem, nil)
	h.connected(t, r, 1)
	connID := h.emu.ConnIDs(app)[0]

	frame := func(method int32, headers map[string]string, payload string) []byte {
		f := &pbbp2.Frame{SeqID: 1, LogID: 1, Method: method, Payload: []byte(payload)}
		for k, v := range headers {
			f.AddHeader(k, v)
		}
		return pbbp2.Encode(f)
	}
	const binary, text = 2, 1
	raws := []struct {
		name string
		mt   int
		b    []byte
		log  string
	}{
		{"garbage bytes", binary, []byte("\x0a\xff\xff\xff garbage"), "ignoring an undecodable frame"},
		{"empty message", binary, nil, "ignoring an undecodable frame"},
		{"text message", text, []byte("hello"), "ignoring a non-binary WebSocket message"},
		{"unknown method", binary, frame(9, map[string]string{"type": "event"}, "{}"), "unknown method"},
		{"unknown data type", binary, frame(1, map[string]string{"type": "telemetry"}, "{}"), "data frame of unknown type"},
		{"fragment with bad seq", binary, frame(1, map[string]string{"type": "event", "message_id": "m", "sum": "2", "seq": "5"}, "x"), "dropping a fragmented message"},
		{"fragment without seq", binary, frame(1, map[string]string{"type": "event", "message_id": "m", "sum": "2"}, "x"), "dropping a fragmented message"},
		{"oversized message", binary, frame(1, map[string]string{"type": "event", "message_id": "big"}, strings.Repeat("x", 5<<10)), "dropping an oversized message"},
		{"unknown control frame", binary, frame(0, map[string]string{"type": "hello"}, ""), ""},
		{"pong with garbage config", binary, frame(0, map[string]string{"type": "pong"}, "{{"), ""},
	}
	for _, raw := range raws {
		if _, err := h.emu.SendRaw(app, raw.mt, raw.b); err != nil {
			t.Fatalf("%s: %v", raw.name, err)
		}
	}
	// Reassembly limits hold across fragments too.
	big := messageEvent("ev-big", strings.Repeat("y", 8<<10))
	acks, err := h.emu.Push(app, larkemu.WSPush{Payload: big, Fragments: 4})
	if err != nil {
		t.Fatal(err)
	}
	if a := nextAck(t, acks); !errors.Is(a.Err, larkemu.ErrWSAckTimeout) {
		t.Errorf("oversized fragmented message: %+v, want no ack", a)
	}

	// The connection still works.
	acks, err = h.emu.PushEvent(app, messageEvent("ev-after", "still here"))
	if err != nil {
		t.Fatal(err)
	}
	if a := nextAck(t, acks); !a.OK() || a.ConnID != connID {
		t.Fatalf("after garbage: %+v, want 200 on connection %s", a, connID)
	}
	if ev := receive(t, sub); ev.GetEventId() != "ev-after" {
		t.Errorf("bus got %v", ev)
	}
	for _, raw := range raws {
		if raw.log != "" && !h.logs.has(raw.log) {
			t.Errorf("%s: no log %q", raw.name, raw.log)
		}
	}
	if !h.logs.has("reassembled message too large") {
		t.Error("no log about the oversized fragmented message")
	}
	if n := h.emu.Connects(app); n != 1 {
		t.Errorf("%d connections made, want 1 (garbage must not cost the connection)", n)
	}
}

func TestMessageBeyondReadLimitReplacesConnection(t *testing.T) {
	h := newHarness(t, larkemu.WSOptions{})
	cfg := h.config()
	cfg.MaxMessageBytes = 1 << 10
	r := h.start(t, cfg, newBus(t), nil)
	h.connected(t, r, 1)
	if _, err := h.emu.SendRaw(app, 2, make([]byte, 128<<10)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "a new connection after the oversized message", func() bool {
		return h.emu.Connects(app) == 2 && r.client.Connected() == 1
	})
	if !h.logs.has("exceeds") {
		t.Error("no log about the read limit")
	}
}

func TestSilentPeerIsReplacedWithinLiveness(t *testing.T) {
	h := newHarness(t, larkemu.WSOptions{})
	cfg := h.config()
	cfg.PingInterval, cfg.LivenessTimeout = 20*time.Millisecond, 300*time.Millisecond
	r := h.start(t, cfg, newBus(t), nil)
	h.connected(t, r, 1)
	// Pongs keep a healthy connection alive well past the deadline: 30
	// pongs at 20 ms take twice the liveness timeout.
	testenv.Eventually(t, wait, "30 pings answered", func() bool { return h.emu.Pongs() >= 30 })
	if n := h.emu.Connects(app); n != 1 {
		t.Fatalf("%d connections made while pongs flowed, want 1", n)
	}

	stalled := h.emu.Stall(app)
	start := time.Now()
	var replacedAfter time.Duration
	testenv.Eventually(t, wait, "the stalled connection replaced", func() bool {
		ids := h.emu.ConnIDs(app)
		if len(ids) == 1 && ids[0] != stalled[0] && r.client.Connected() == 1 {
			replacedAfter = time.Since(start)
			return true
		}
		return false
	})
	t.Logf("silent connection replaced after %s (liveness %s)", replacedAfter, cfg.LivenessTimeout)
	// Detection happens at the deadline; reconnecting adds at most
	// ReconnectMax, plus scheduling slack under -race.
	if limit := cfg.LivenessTimeout + cfg.ReconnectMax + time.Second; replacedAfter > limit {
		t.Errorf("replaced after %s, want within %s", replacedAfter, limit)
	}
	if !h.logs.has("connection presumed dead") {
		t.Error("no log about the dead connection")
	}
	// The new connection is healthy and carries events.
	acks, err := h.emu.PushEvent(app, messageEvent("ev-new", "x"))
	if err != nil {
		t.Fatal(err)
	}
	if a := nextAck(t, acks); !a.OK() {
		t.Errorf("on the new connection: %+v", a)
	}
}

func TestNoPongsAtAllKeepsReplacing(t *testing.T) {
	h := newHarness(t, larkemu.WSOptions{})
	h.emu.SetPongs(false)
	cfg := h.config()
	cfg.PingInterval, cfg.LivenessTimeout = 10*time.Millisecond, 100*time.Millisecond
	r := h.start(t, cfg, newBus(t), nil)
	testenv.Eventually(t, wait, "connections replaced repeatedly", func() bool { return h.emu.Connects(app) >= 3 })
	if !h.logs.has("connection presumed dead") {
		t.Error("no log about the dead connections")
	}
	h.emu.SetPongs(true)
	n := h.emu.Connects(app)
	h.connected(t, r, 1)
	// With pongs back, connections outlive several deadlines: 40 pongs at
	// 10 ms take four liveness timeouts. (The connection open when pongs
	// resumed may already have missed its deadline: allow one more.)
	pongs := h.emu.Pongs()
	testenv.Eventually(t, wait, "40 pings answered", func() bool { return h.emu.Pongs() >= pongs+40 })
	if got := h.emu.Connects(app); got > n+1 {
		t.Errorf("%d connections made after pongs resumed, want at most 1", got-n)
	}
}

func TestCancelStopsEverything(t *testing.T) {
	h := newHarness(t, larkemu.WSOptions{})
	// Let the emulator's own goroutines be; everything the client starts
	// must be gone once Run returns.
	before := goleak.IgnoreCurrent()
	cfg := h.config()
	cfg.Connections = 3
	ctx, cancel := context.WithCancel(t.Context())
	c := longconn.New(cfg, newBus(t), nil, h.log)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	testenv.Eventually(t, wait, "3 connections", func() bool { return c.Connected() == 3 && h.emu.Connections(app) == 3 })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() = %v, want nil after cancel", err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return")
	}
	if n := c.Connected(); n != 0 {
		t.Errorf("Connected() = %d after Run returned", n)
	}
	testenv.Eventually(t, wait, "emulator sees the connections closed", func() bool { return h.emu.Connections(app) == 0 })
	goleak.VerifyNone(t, before)
}

// TestCancelInterruptsWaits: Run returns promptly when cancelled while
// discovery hangs or while a slot waits out its backoff.
func TestCancelInterruptsWaits(t *testing.T) {
	tests := []struct {
		name  string
		fault larkemu.WSEndpointFault
		edit  func(*longconn.Config)
	}{
		{"discovery hanging", larkemu.WSEndpointFault{Hang: true}, func(c *longconn.Config) { c.DiscoveryTimeout = time.Hour }},
		{"backing off", larkemu.WSEndpointFault{Code: 1}, func(c *longconn.Config) { c.ReconnectMin, c.ReconnectMax = time.Hour, time.Hour }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, larkemu.WSOptions{})
			h.emu.FailEndpoint(1, tt.fault)
			before := goleak.IgnoreCurrent()
			cfg := h.config()
			tt.edit(&cfg)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- longconn.New(cfg, newBus(t), nil, h.log).Run(ctx) }()
			testenv.Eventually(t, wait, "discovery called", func() bool { return h.emu.EndpointCalls() == 1 })
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run() = %v", err)
				}
			case <-time.After(wait):
				t.Fatal("Run did not return")
			}
			goleak.VerifyNone(t, before)
		})
	}
}

// blockingPublisher holds every publish until released.
type blockingPublisher struct {
	entered chan string
	release chan struct{}
	next    bus.Publisher
}

func (p *blockingPublisher) Publish(ctx context.Context, topic string, msg bus.Message) error {
	p.entered <- msg.Properties[envelope.PropEventID]
	select {
	case <-p.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return p.next.Publish(ctx, topic, msg)
}

func TestShutdownFinishesInFlightFrames(t *testing.T) {
	h := newHarness(t, larkemu.WSOptions{})
	mem := newBus(t)
	sub := subscribe(t, mem)
	pub := &blockingPublisher{entered: make(chan string, 1), release: make(chan struct{}), next: mem}
	cfg := h.config()
	cfg.PublishTimeout = wait
	r := h.start(t, cfg, pub, nil)
	h.connected(t, r, 1)
	acks, err := h.emu.PushEvent(app, messageEvent("ev-inflight", "x"))
	if err != nil {
		t.Fatal(err)
	}
	<-pub.entered
	r.cancel() // Run must now wait for the publish and ack it
	close(pub.release)
	if a := nextAck(t, acks); !a.OK() {
		t.Fatalf("in-flight event: %+v, want acked 200 during shutdown", a)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run() = %v", err)
	}
	if ev := receive(t, sub); ev.GetEventId() != "ev-inflight" {
		t.Errorf("bus got %v", ev)
	}
}

func TestFullQueueAcks500(t *testing.T) {
	h := newHarness(t, larkemu.WSOptions{})
	mem := newBus(t)
	pub := &blockingPublisher{entered: make(chan string, 4), release: make(chan struct{}), next: mem}
	cfg := h.config()
	cfg.Workers, cfg.QueueSize, cfg.PublishTimeout = 1, 1, wait
	r := h.start(t, cfg, pub, nil)
	h.connected(t, r, 1)
	first, err := h.emu.PushEvent(app, messageEvent("ev-1", "x"))
	if err != nil {
		t.Fatal(err)
	}
	<-pub.entered // the only worker is busy
	b, _ := h.emu.PushEvent(app, messageEvent("ev-2", "x"))
	c, _ := h.emu.PushEvent(app, messageEvent("ev-3", "x"))
	// One of them waits in the queue; the other finds it full.
	var rejected larkemu.WSAck
	var queued <-chan larkemu.WSAck
	select {
	case rejected = <-b:
		queued = c
	case rejected = <-c:
		queued = b
	case <-time.After(wait):
		t.Fatal("no immediate ack for the frame that found the queue full")
	}
	if rejected.Err != nil || rejected.Code != 500 {
		t.Errorf("overflow frame: %+v, want code 500", rejected)
	}
	close(pub.release)
	if a := nextAck(t, first); !a.OK() {
		t.Errorf("first: %+v", a)
	}
	if a := nextAck(t, queued); !a.OK() {
		t.Errorf("queued: %+v", a)
	}
	if !h.logs.has("worker queue full") {
		t.Error("no log about the full queue")
	}
}

func TestConnectionsPerAppAndLimit(t *testing.T) {
	h := newHarness(t, larkemu.WSOptions{MaxConnsPerApp: 2})
	cfg := h.config()
	cfg.Connections = 3
	r := h.start(t, cfg, newBus(t), nil)
	h.connected(t, r, 2)
	testenv.Eventually(t, wait, "the third slot gives up", func() bool {
		return h.logs.has("permanent failure, not retrying") && h.logs.has("Handshake-Autherrcode 1000040350")
	})
	// The two connections keep working; the refused slot does not retry.
	acks, err := h.emu.PushEvent(app, messageEvent("ev-limit", "x"))
	if err != nil {
		t.Fatal(err)
	}
	if a := nextAck(t, acks); !a.OK() {
		t.Errorf("ack %+v", a)
	}
	if n := h.emu.Connects(app); n != 2 {
		t.Errorf("%d handshakes accepted, want 2", n)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run() = %v, want nil after cancel", err)
	}
}

func TestPermanentFailuresEndRun(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*larkemu.WSServer)
		cfg   func(*longconn.Config)
		check func(t *testing.T, err error)
	}{
		{
			name:  "wrong secret",
			setup: func(*larkemu.WSServer) {},
			cfg:   func(c *longconn.Config) { c.AppSecret = "wrong" },
			check: func(t *testing.T, err error) {
				var de *longconn.DiscoveryError
				if !errors.As(err, &de) || de.Code != 10014 {
					t.Errorf("error %v, want a DiscoveryError with code 10014", err)
				}
			},
		},
		{
			name:  "forbidden app",
			setup: func(e *larkemu.WSServer) { e.ForbidApp(app, true) },
			cfg:   func(*longconn.Config) {},
			check: func(t *testing.T, err error) {
				var he *longconn.HandshakeError
				if !errors.As(err, &he) || he.Status != 403 {
					t.Errorf("error %v, want a HandshakeError with status 403", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, larkemu.WSOptions{})
			tt.setup(h.emu)
			cfg := h.config()
			cfg.Connections = 2
			tt.cfg(&cfg)
			err := longconn.New(cfg, newBus(t), nil, h.log).Run(t.Context())
			if !longconn.IsPermanent(err) {
				t.Fatalf("Run() = %v, want a permanent error", err)
			}
			tt.check(t, err)
			if n := h.emu.EndpointCalls(); n != 2 {
				t.Errorf("%d discovery calls, want 2 (one per slot, no retry)", n)
			}
		})
	}
}

func TestDiscoveryFaultsAreRetried(t *testing.T) {
	tests := []struct {
		name  string
		fault larkemu.WSEndpointFault
	}{
		{"system busy (code 1)", larkemu.WSEndpointFault{Code: 1, Msg: "system busy"}},
		{"internal error", larkemu.WSEndpointFault{Code: 1000040343, Msg: "internal error"}},
		{"null data", larkemu.WSEndpointFault{NullData: true}},
		{"HTTP 502", larkemu.WSEndpointFault{HTTPStatus: 502}},
		{"timeout", larkemu.WSEndpointFault{Hang: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, larkemu.WSOptions{})
			h.emu.FailEndpoint(2, tt.fault)
			cfg := h.config()
			cfg.DiscoveryTimeout = 100 * time.Millisecond
			r := h.start(t, cfg, newBus(t), nil)
			h.connected(t, r, 1)
			if n := h.emu.EndpointCalls(); n != 3 {
				t.Errorf("%d discovery calls, want 3 (two failures, then success)", n)
			}
			if !h.logs.has("long connection lost; reconnecting") {
				t.Error("no log about the retry")
			}
		})
	}
}

func TestRunRejectsBadConfigAndSecondRun(t *testing.T) {
	if err := longconn.New(longconn.Config{}, nil, nil, nil).Run(t.Context()); err == nil || !strings.Contains(err.Error(), "AppID is required") {
		t.Errorf("Run(empty config) = %v", err)
	}
	h := newHarness(t, larkemu.WSOptions{})
	r := h.start(t, h.config(), newBus(t), nil)
	h.connected(t, r, 1)
	if err := r.client.Run(t.Context()); !errors.Is(err, longconn.ErrRunning) {
		t.Errorf("second Run() = %v, want ErrRunning", err)
	}
}
