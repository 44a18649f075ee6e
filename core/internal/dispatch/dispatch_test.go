package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/bus/memory"
	"github.com/larkway/larkway/core/internal/dlq"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/testenv"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// retryAfter is what the fake plugin asks for with "slowdown".
const retryAfter = 30 * time.Second

// fakePlugin answers deliveries by the message text: "retry", "slowdown"
// (retry, no sooner than retryAfter), "fail",
// "hang" (never answers), "forbidden" (an action outside the manifest),
// "end" (closes the stream); anything else: done with a reply.
type fakePlugin struct {
	pluginv1.UnimplementedPluginServiceServer
	manifest *pluginv1.Manifest
	conn     *grpc.ClientConn

	mu           sync.Mutex
	acks         []*pluginv1.ResultAck
	seen         []string          // message texts in delivery order
	events       []*pluginv1.Event // the events delivered, in order
	ids          map[string]string // message text → its last delivery id
	unknownFlood bool
	failAll      bool // answer every delivery RETRY
	batches      int  // DeliveryBatch messages received
	unasked      int  // of those, sent although the manifest did not accept batches

	// "slow" deliveries are answered, from another goroutine, once release
	// has a value for them; outstanding counts them meanwhile.
	release        chan struct{}
	sendMu         sync.Mutex
	outstanding    int
	maxOutstanding int
}

func newFakePlugin(t *testing.T, m *pluginv1.Manifest) *fakePlugin {
	t.Helper()
	fp := &fakePlugin{manifest: m}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	pluginv1.RegisterPluginServiceServer(srv, fp)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///buf", grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return lis.Dial() }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	fp.conn = conn
	t.Cleanup(func() { conn.Close(); srv.Stop() })
	return fp
}

func (f *fakePlugin) Manifest() *pluginv1.Manifest { return f.manifest }
func (f *fakePlugin) Service() pluginv1.PluginServiceClient {
	return pluginv1.NewPluginServiceClient(f.conn)
}

func (f *fakePlugin) Handle(stream pluginv1.PluginService_HandleServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		if ack := req.GetResultAck(); ack != nil {
			f.mu.Lock()
			f.acks = append(f.acks, ack)
			f.mu.Unlock()
			continue
		}
		ds := req.GetDeliveries().GetDeliveries()
		if req.GetDeliveries() != nil {
			f.mu.Lock()
			f.batches++
			if !f.manifest.GetAcceptsDeliveryBatches() {
				f.unasked++
			}
			f.mu.Unlock()
		}
		if d := req.GetDelivery(); d != nil {
			ds = append(ds, d)
		}
		var out []*pluginv1.Result
		for _, d := range ds {
			if d.GetEvent().GetMessage().GetText() == "slow" {
				f.slow(stream, d)
				continue
			}
			res, err := f.answer(stream, d)
			if err != nil {
				return err
			}
			if res != nil {
				out = append(out, res)
			}
		}
		// A batching plugin answers a request's deliveries together.
		if len(out) > 1 && f.manifest.GetAcceptsDeliveryBatches() {
			if err := stream.Send(&pluginv1.HandleResponse{Kind: &pluginv1.HandleResponse_Results{Results: &pluginv1.ResultBatch{Results: out}}}); err != nil {
				return nil
			}
			continue
		}
		for _, res := range out {
			f.sendMu.Lock()
			err := stream.Send(result(res))
			f.sendMu.Unlock()
			if err != nil {
				return nil
			}
		}
	}
}

// slow answers d DONE once f.release lets it.
func (f *fakePlugin) slow(stream pluginv1.PluginService_HandleServer, d *pluginv1.Delivery) {
	f.mu.Lock()
	f.seen = append(f.seen, "slow")
	f.outstanding++
	f.maxOutstanding = max(f.maxOutstanding, f.outstanding)
	f.mu.Unlock()
	go func() {
		<-f.release
		f.mu.Lock()
		f.outstanding--
		f.mu.Unlock()
		f.sendMu.Lock()
		defer f.sendMu.Unlock()
		_ = stream.Send(result(&pluginv1.Result{DeliveryId: d.GetDeliveryId(), Outcome: pluginv1.Outcome_OUTCOME_DONE}))
	}()
}

// answer is the result for d (nil: none, for "hang").
func (f *fakePlugin) answer(stream pluginv1.PluginService_HandleServer, d *pluginv1.Delivery) (*pluginv1.Result, error) {
	text := d.GetEvent().GetMessage().GetText()
	f.mu.Lock()
	f.seen = append(f.seen, text)
	f.events = append(f.events, d.GetEvent())
	if f.ids == nil {
		f.ids = map[string]string{}
	}
	f.ids[text] = d.GetDeliveryId()
	flood, failAll := f.unknownFlood, f.failAll
	f.mu.Unlock()
	if flood {
		for i := range 50 {
			_ = stream.Send(result(&pluginv1.Result{DeliveryId: fmt.Sprintf("bogus-%d", i), Outcome: pluginv1.Outcome_OUTCOME_DONE}))
		}
	}
	res := &pluginv1.Result{DeliveryId: d.GetDeliveryId(), Outcome: pluginv1.Outcome_OUTCOME_DONE}
	switch {
	case failAll || text == "retry":
		res.Outcome, res.Error = pluginv1.Outcome_OUTCOME_RETRY, "not now"
	case text == "slowdown":
		res.Outcome, res.Error, res.RetryAfter = pluginv1.Outcome_OUTCOME_RETRY, "rate limited", durationpb.New(retryAfter)
	case text == "fail":
		res.Outcome, res.Error = pluginv1.Outcome_OUTCOME_FAILED, "cannot handle"
	case text == "hang":
		return nil, nil
	case text == "end":
		return nil, errors.New("plugin crashed")
	case text == "forbidden":
		res.Actions = []*pluginv1.Action{{Kind: &pluginv1.Action_RawCall{RawCall: &pluginv1.RawCall{Method: "GET", Path: "/open-apis/x"}}}}
	default:
		res.Actions = []*pluginv1.Action{{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MsgType: "text", ContentJson: `{"text":"` + text + `"}`}}}}
	}
	return res, nil
}

func result(r *pluginv1.Result) *pluginv1.HandleResponse {
	return &pluginv1.HandleResponse{Kind: &pluginv1.HandleResponse_Result{Result: r}}
}

// recordingExec records what it was asked to do and refuses RAW_CALL as the
// real executor would when the manifest does not allow it.
type recordingExec struct {
	mu   sync.Mutex
	reqs []action.Request
}

func (r *recordingExec) Execute(_ context.Context, req action.Request) ([]*pluginv1.RefusedAction, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
	var refused []*pluginv1.RefusedAction
	for i, a := range req.Actions {
		if a.GetRawCall() != nil {
			refused = append(refused, &pluginv1.RefusedAction{Index: uint32(i), Reason: "not allowed"})
		}
	}
	return refused, nil
}

func (r *recordingExec) SendFallback(context.Context, string, *pluginv1.Event, string) error {
	return nil
}

func (r *recordingExec) texts(chat string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, q := range r.reqs {
		if chat == "" || q.Event.GetChatId() == chat {
			out = append(out, q.Event.GetMessage().GetText())
		}
	}
	return out
}

type harness struct {
	bus     *memory.Bus
	exec    *recordingExec
	disp    *Dispatcher
	plugin  *fakePlugin
	route   *Route
	session *Session
	topic   string
	index   *dlq.Memory
	spy     *nackSpy
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
}

func manifest() *pluginv1.Manifest {
	return &pluginv1.Manifest{Name: "fake", Version: "1", MaxInFlight: 8,
		Subscriptions:  []*pluginv1.Subscription{{EventTypes: []string{"im.message.receive_v1"}}},
		AllowedActions: []pluginv1.ActionKind{pluginv1.ActionKind_ACTION_KIND_REPLY}}
}

func start(t *testing.T, m *pluginv1.Manifest, deadline time.Duration) *harness {
	t.Helper()
	return startWith(t, m, deadline, nil)
}

// startWith is start with configure changing the dispatcher's Config.
func startWith(t *testing.T, m *pluginv1.Manifest, deadline time.Duration, configure func(*Config)) *harness {
	t.Helper()
	return startLogged(t, m, deadline, configure, slog.New(slog.DiscardHandler))
}

// startLogged is startWith with the dispatcher logging to logger.
func startLogged(t *testing.T, m *pluginv1.Manifest, deadline time.Duration, configure func(*Config), logger *slog.Logger) *harness {
	t.Helper()
	h := &harness{bus: memory.New(slog.New(slog.DiscardHandler)), exec: &recordingExec{}, topic: "events-test", index: dlq.NewMemory(),
		reg: prometheus.NewRegistry()}
	t.Cleanup(func() { _ = h.bus.Close(context.Background()) })
	h.spy = &nackSpy{Bus: h.bus}
	cfg := Config{Topics: []string{h.topic}, Deadline: deadline, MaxAttempts: 3, MaxInFlight: 4,
		Backoff: func(int) time.Duration { return 10 * time.Millisecond }, DeadLetters: h.index}
	if configure != nil {
		configure(&cfg)
	}
	h.disp = New(cfg, h.spy, h.exec, logger, h.reg)
	h.plugin = newFakePlugin(t, m)
	h.serve(t)
	return h
}

// nackSpy is the bus, counting the nacks of the deliveries it hands out.
type nackSpy struct {
	*memory.Bus
	nacks atomic.Int32
}

func (b *nackSpy) Subscribe(ctx context.Context, o bus.SubscribeOptions) (bus.Consumer, error) {
	c, err := b.Bus.Subscribe(ctx, o)
	if err != nil {
		return nil, err
	}
	return spyConsumer{Consumer: c, spy: b}, nil
}

type spyConsumer struct {
	bus.Consumer
	spy *nackSpy
}

func (c spyConsumer) Receive(ctx context.Context) (*bus.Delivery, error) {
	d, err := c.Consumer.Receive(ctx)
	if err != nil {
		return nil, err
	}
	return bus.NewDelivery(d.Message, d.ID, d.Topic, d.Attempt, d.PublishTime, d.Ack, func() error {
		c.spy.nacks.Add(1)
		return d.Nack()
	}), nil
}

func (h *harness) serve(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	h.route = h.disp.Route("fake")
	subscribed := make(chan struct{})
	go func() { h.done <- h.route.Run(ctx, func() { close(subscribed) }) }()
	select {
	case <-subscribed:
	case err := <-h.done:
		t.Fatalf("run: %v", err)
	}
	h.attach(t)
	t.Cleanup(func() { cancel() })
}

func (h *harness) attach(t *testing.T) {
	t.Helper()
	s, _, err := h.route.Attach(context.Background(), h.plugin)
	if err != nil {
		t.Fatal(err)
	}
	h.session = s
	t.Cleanup(s.Close)
}

func (h *harness) stop(t *testing.T) error {
	h.cancel()
	select {
	case err := <-h.done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

var evSeq sync.Mutex
var evN int

func (h *harness) publish(t *testing.T, chat, text string) {
	t.Helper()
	evSeq.Lock()
	evN++
	id := fmt.Sprintf("ev%d", evN)
	evSeq.Unlock()
	ev := &pluginv1.Event{EventId: id, EventType: "im.message.receive_v1", AppId: "cli_t", DedupKey: "om_" + id, ChatId: chat,
		Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: "om_" + id, ChatId: chat, Text: text}}}
	msg, err := envelope.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.bus.Publish(context.Background(), h.topic, msg); err != nil {
		t.Fatal(err)
	}
}

// publishRaw stores a Lark body as ingest does (envelope.EncodeRaw: the
// body alone, normalized again at dispatch).
func (h *harness) publishRaw(t *testing.T, chat, text string) *pluginv1.Event {
	t.Helper()
	evSeq.Lock()
	evN++
	id := fmt.Sprintf("ev%d", evN)
	evSeq.Unlock()
	content, _ := json.Marshal(map[string]string{"text": text})
	body, _ := json.Marshal(map[string]any{"schema": "2.0",
		"header": map[string]string{"event_id": id, "event_type": "im.message.receive_v1", "create_time": "1700000000123", "app_id": "cli_t"},
		"event": map[string]any{"sender": map[string]any{"sender_id": map[string]string{"open_id": "ou_1"}, "sender_type": "user"},
			"message": map[string]string{"message_id": "om_" + id, "chat_id": chat, "chat_type": "group", "message_type": "text", "content": string(content)}}})
	ev, err := envelope.Normalize("cli_t", body)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.bus.Publish(context.Background(), h.topic, envelope.EncodeRaw(nil, "cli_t", body, ev)); err != nil {
		t.Fatal(err)
	}
	return ev
}

func (h *harness) deadLetters(t *testing.T) bus.Consumer {
	t.Helper()
	c, err := h.bus.Subscribe(context.Background(), bus.SubscribeOptions{Topic: DeadLetterTopic(h.topic, "fake"), Subscription: "inspect"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func receive(t *testing.T, c bus.Consumer) *bus.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := c.Receive(ctx)
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	_ = d.Ack()
	return d
}

func TestDoneExecutesActions(t *testing.T) {
	h := start(t, manifest(), 5*time.Second)
	h.publish(t, "oc_1", "hello")
	testenv.Eventually(t, 5*time.Second, "action not executed", func() bool { return len(h.exec.texts("")) == 1 })
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	req := h.exec.reqs[0]
	if req.Plugin != "fake" || len(req.Actions) != 1 || req.Attempts != 1 {
		t.Fatalf("request %+v", req)
	}
	if req.EventID == "" || req.EventID != req.Event.GetEventId() {
		t.Fatalf("request's EventID %q, want the event's id %q", req.EventID, req.Event.GetEventId())
	}
}

// An event stored as its Lark body reaches the plugin normalized (the
// contract's Event, raw_json included), its actions run, and once
// dead-lettered it replays from the index through the same decode.
func TestRawStoredEventsAreDeliveredNormalized(t *testing.T) {
	h := start(t, manifest(), 5*time.Second)
	want := h.publishRaw(t, "oc_raw", "hello")
	testenv.Eventually(t, 5*time.Second, "action not executed", func() bool { return len(h.exec.texts("")) == 1 })
	h.plugin.mu.Lock()
	got := h.plugin.events[0]
	h.plugin.mu.Unlock()
	if !proto.Equal(got, want) {
		t.Fatalf("plugin got %v, want %v", got, want)
	}
	h.publishRaw(t, "oc_raw", "fail")
	ctx := context.Background()
	var entries []dlq.Entry
	testenv.Eventually(t, 5*time.Second, "dead letter not indexed", func() bool {
		entries, _ = h.index.List(ctx, "fake", 0)
		return len(entries) == 1
	})
	if e := entries[0]; e.EventType != "im.message.receive_v1" || e.EventID == "" {
		t.Fatalf("entry %+v", e)
	}
	if err := h.disp.Replay(ctx, entries[0]); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "replay not delivered", func() bool {
		h.plugin.mu.Lock()
		defer h.plugin.mu.Unlock()
		return len(h.plugin.seen) == 3 && h.plugin.seen[2] == "fail"
	})
}

func TestRetryThenDeadLetterWithReason(t *testing.T) {
	h := start(t, manifest(), 5*time.Second)
	dl := h.deadLetters(t)
	h.publish(t, "oc_1", "retry")
	d := receive(t, dl)
	if r := d.Properties[dlq.PropReason]; !strings.Contains(r, "after 3 attempts") || !strings.Contains(r, "not now") {
		t.Fatalf("reason %q", r)
	}
	h.plugin.mu.Lock()
	n := len(h.plugin.seen)
	h.plugin.mu.Unlock()
	if n != 3 {
		t.Fatalf("plugin saw %d deliveries, want 3", n)
	}
	if len(h.exec.texts("")) != 0 {
		t.Fatal("actions executed for a retry result")
	}
}

func TestFailedGoesStraightToDeadLetters(t *testing.T) {
	h := start(t, manifest(), 5*time.Second)
	dl := h.deadLetters(t)
	h.publish(t, "oc_1", "fail")
	d := receive(t, dl)
	if r := d.Properties[dlq.PropReason]; !strings.Contains(r, "cannot handle") {
		t.Fatalf("reason %q", r)
	}
	if ev, err := envelope.Decode(d.Payload); err != nil || ev.GetMessage().GetText() != "fail" {
		t.Fatalf("dead letter payload: %v %v", ev, err)
	}
}

func TestTimeoutIsRetried(t *testing.T) {
	h := start(t, manifest(), 100*time.Millisecond)
	dl := h.deadLetters(t)
	h.publish(t, "oc_1", "hang")
	d := receive(t, dl)
	if r := d.Properties[dlq.PropReason]; !strings.Contains(r, "deadline exceeded") {
		t.Fatalf("reason %q", r)
	}
}

// The manifest's max_in_flight bounds what one instance holds, below the
// dispatcher's own worker count.
func TestManifestMaxInFlight(t *testing.T) {
	m := manifest()
	m.MaxInFlight = 2 // the harness runs 4 workers
	h := start(t, m, 10*time.Second)
	h.plugin.release = make(chan struct{})
	const n = 12
	for i := range n {
		h.publish(t, fmt.Sprintf("oc_%d", i), "slow")
	}
	seen := func() int {
		h.plugin.mu.Lock()
		defer h.plugin.mu.Unlock()
		return len(h.plugin.seen)
	}
	for got := 0; got < n; got++ {
		testenv.Eventually(t, 10*time.Second, "no delivery reached the plugin", func() bool { return seen() > got })
		h.plugin.release <- struct{}{}
	}
	testenv.Eventually(t, 10*time.Second, "not every event handled", func() bool { return len(h.exec.texts("")) == n })
	h.plugin.mu.Lock()
	defer h.plugin.mu.Unlock()
	if h.plugin.maxOutstanding > 2 {
		t.Fatalf("%d deliveries in flight at once, the manifest allows 2", h.plugin.maxOutstanding)
	}
}

// Order per chat holds whether deliveries and results travel one per
// message or in batches; a plugin that did not ask for batches never gets one.
func TestOrderPerChat(t *testing.T) {
	for _, batches := range []bool{false, true} {
		t.Run(fmt.Sprintf("batches=%v", batches), func(t *testing.T) {
			m := manifest()
			m.AcceptsDeliveryBatches = batches
			h := start(t, m, 5*time.Second)
			chats := []string{"oc_a", "oc_b", "oc_c", "oc_d", "oc_e"}
			const per = 40
			for i := range per {
				for _, c := range chats {
					h.publish(t, c, fmt.Sprintf("%s-%03d", c, i))
				}
			}
			testenv.Eventually(t, 20*time.Second, "not every event handled", func() bool { return len(h.exec.texts("")) == per*len(chats) })
			for _, c := range chats {
				got := h.exec.texts(c)
				for i, s := range got {
					if want := fmt.Sprintf("%s-%03d", c, i); s != want {
						t.Fatalf("chat %s: position %d is %s, want %s", c, i, s, want)
					}
				}
			}
			h.plugin.mu.Lock()
			defer h.plugin.mu.Unlock()
			if h.plugin.unasked > 0 {
				t.Fatalf("%d batches sent to a plugin that does not accept them", h.plugin.unasked)
			}
		})
	}
}

func TestUnmatchedEventsAreNotDelivered(t *testing.T) {
	m := manifest()
	m.Subscriptions = []*pluginv1.Subscription{{EventTypes: []string{"im.message.receive_v1"}, Commands: []string{"/only"}}}
	h := start(t, m, 5*time.Second)
	h.publish(t, "oc_1", "not a command")
	h.publish(t, "oc_1", "/only this")
	testenv.Eventually(t, 5*time.Second, "command not handled", func() bool { return len(h.exec.texts("")) == 1 })
	h.plugin.mu.Lock()
	defer h.plugin.mu.Unlock()
	if len(h.plugin.seen) != 1 || h.plugin.seen[0] != "/only this" {
		t.Fatalf("plugin saw %v", h.plugin.seen)
	}
}

// A refused action is logged and reported to the plugin in a ResultAck;
// a result whose actions were all performed gets no ack.
func TestRefusedActionsAreReported(t *testing.T) {
	var logs testenv.LogBuffer
	h := startLogged(t, manifest(), 5*time.Second, nil, slog.New(slog.NewJSONHandler(&logs, nil)))
	// One chat: "allowed" is settled before "forbidden" is delivered, so an
	// ack for it would come first.
	h.publish(t, "oc_1", "allowed")
	h.publish(t, "oc_1", "forbidden")
	testenv.Eventually(t, 5*time.Second, "no ResultAck", func() bool {
		h.plugin.mu.Lock()
		defer h.plugin.mu.Unlock()
		return len(h.plugin.acks) >= 1
	})
	h.plugin.mu.Lock()
	acks, forbidden := h.plugin.acks, h.plugin.ids["forbidden"]
	h.plugin.mu.Unlock()
	if len(acks) != 1 || acks[0].GetDeliveryId() != forbidden {
		t.Fatalf("acks %v, want one for %s", acks, forbidden)
	}
	if r := acks[0].GetRefused(); len(r) != 1 || r[0].GetIndex() != 0 || r[0].GetReason() != "not allowed" {
		t.Fatalf("refused %v", r)
	}
	var refusals []map[string]any
	for line := range strings.Lines(logs.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if rec["msg"] == "action refused" {
			refusals = append(refusals, rec)
		}
	}
	if len(refusals) != 1 {
		t.Fatalf("%d refusals logged, want 1:\n%s", len(refusals), logs.String())
	}
	want := map[string]any{"level": "WARN", "plugin": "fake", "delivery_id": forbidden, "index": float64(0), "kind": "raw_call", "reason": "not allowed"}
	for k, v := range want {
		if refusals[0][k] != v {
			t.Errorf("%s = %v, want %v in %v", k, refusals[0][k], v, refusals[0])
		}
	}
}

// Refusal lines are bounded per plugin: a burst, then one per interval,
// each saying how many were left out before it.
func TestRefusalLogIsBounded(t *testing.T) {
	r := newRefusalLog()
	t0 := time.Unix(1_700_000_000, 0)
	for i := range refusalBurst {
		if ok, n := r.allow(t0); !ok || n != 0 {
			t.Fatalf("refusal %d of the burst: logged %v, suppressed %d", i, ok, n)
		}
	}
	for range 1000 {
		if ok, _ := r.allow(t0); ok {
			t.Fatal("logged beyond the burst")
		}
	}
	if ok, n := r.allow(t0.Add(refusalEvery / 2)); ok {
		t.Fatalf("logged before the interval passed (suppressed %d)", n)
	}
	if ok, n := r.allow(t0.Add(refusalEvery)); !ok || n != 1001 {
		t.Fatalf("after the interval: logged %v, suppressed %d, want true, 1001", ok, n)
	}
	if ok, _ := r.allow(t0.Add(refusalEvery)); ok {
		t.Fatal("two lines in one interval")
	}
}

func TestActionKind(t *testing.T) {
	tests := []struct {
		a    *pluginv1.Action
		want string
	}{
		{&pluginv1.Action{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{}}}, "reply"},
		{&pluginv1.Action{Kind: &pluginv1.Action_RawCall{RawCall: &pluginv1.RawCall{}}}, "raw_call"},
		{&pluginv1.Action{Kind: &pluginv1.Action_DelayedCardUpdate{DelayedCardUpdate: &pluginv1.DelayedCardUpdate{}}}, "delayed_card_update"},
		{&pluginv1.Action{}, "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := actionKind(tt.a); got != tt.want {
				t.Fatalf("actionKind = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestUnknownResultsAreIgnored(t *testing.T) {
	h := start(t, manifest(), 5*time.Second)
	h.plugin.mu.Lock()
	h.plugin.unknownFlood = true
	h.plugin.mu.Unlock()
	h.publish(t, "oc_1", "a")
	h.publish(t, "oc_1", "b")
	testenv.Eventually(t, 5*time.Second, "real results lost among the flood", func() bool { return len(h.exec.texts("")) == 2 })
}

// A plugin whose stream dies loses nothing: the session reports it, and
// the unfinished delivery reaches the next instance.
func TestBrokenStreamRedelivers(t *testing.T) {
	h := start(t, manifest(), 5*time.Second)
	h.publish(t, "oc_1", "end")
	select {
	case <-h.session.Broken():
	case <-time.After(10 * time.Second):
		t.Fatal("the broken stream was not noticed")
	}
	h.route.Detach(h.session)
	next := newFakePlugin(t, manifest())
	h.plugin = next
	h.attach(t)
	testenv.Eventually(t, 10*time.Second, "event not redelivered", func() bool {
		next.mu.Lock()
		defer next.mu.Unlock()
		return len(next.seen) >= 1
	})
}

// A hot swap moves new deliveries to the new instance while the old one
// finishes what it holds: every event is handled exactly once, in order per chat.
func TestSwapUnderLoad(t *testing.T) {
	h := start(t, manifest(), 5*time.Second)
	old := h.plugin
	chats := []string{"oc_a", "oc_b", "oc_c"}
	const per = 60
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			for _, c := range chats {
				h.publish(t, c, fmt.Sprintf("%s-%03d", c, i))
			}
		}
	}
	publish(0, per/2)
	testenv.Eventually(t, 10*time.Second, "no traffic before the swap", func() bool { return len(h.exec.texts("")) > 20 })
	// The second half is published while the swap happens.
	published := make(chan struct{})
	go func() { defer close(published); publish(per/2, per-1) }()
	next := newFakePlugin(t, manifest())
	s, prev, err := h.route.Attach(context.Background(), next)
	if err != nil || prev == nil {
		t.Fatalf("attach: %v (prev %v)", err, prev)
	}
	t.Cleanup(s.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := prev.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	<-published
	publish(per-1, per) // after the swap: certainly the new version's
	testenv.Eventually(t, 20*time.Second, "not every event handled", func() bool { return len(h.exec.texts("")) == per*len(chats) })
	for _, c := range chats {
		got := h.exec.texts(c)
		for i, s := range got {
			if want := fmt.Sprintf("%s-%03d", c, i); s != want {
				t.Fatalf("chat %s: position %d is %s, want %s", c, i, s, want)
			}
		}
	}
	old.mu.Lock()
	o := len(old.seen)
	old.mu.Unlock()
	next.mu.Lock()
	n := len(next.seen)
	next.mu.Unlock()
	if o == 0 || n == 0 || o+n != per*len(chats) {
		t.Fatalf("old saw %d, new saw %d, want both > 0 and %d in total", o, n, per*len(chats))
	}
}

// Redelivery of an event already handled produces no second result.
func TestDedupSkipsHandledEvents(t *testing.T) {
	h := start(t, manifest(), 5*time.Second)
	ev := &pluginv1.Event{EventId: "ev-dup", EventType: "im.message.receive_v1", AppId: "cli_t", DedupKey: "om_dup", ChatId: "oc_1",
		Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: "om_dup", ChatId: "oc_1", Text: "once"}}}
	msg, _ := envelope.Encode(ev)
	for range 3 { // Lark re-pushes
		if err := h.bus.Publish(context.Background(), h.topic, msg); err != nil {
			t.Fatal(err)
		}
	}
	h.publish(t, "oc_1", "after") // same chat: handled after the duplicates
	testenv.Eventually(t, 10*time.Second, "events not handled", func() bool { return len(h.exec.texts("oc_1")) >= 2 })
	if got := h.exec.texts("oc_1"); len(got) != 2 || got[0] != "once" || got[1] != "after" {
		t.Fatalf("handled %v", got)
	}
}

// Dead letters are indexed with their reason; a replay goes to this plugin
// alone and leaves the index.
func TestDeadLetterIndexAndReplay(t *testing.T) {
	h := start(t, manifest(), 5*time.Second)
	h.publish(t, "oc_1", "fail")
	ctx := context.Background()
	var entries []dlq.Entry
	testenv.Eventually(t, 5*time.Second, "dead letter not indexed", func() bool {
		entries, _ = h.index.List(ctx, "fake", 0)
		return len(entries) == 1
	})
	e := entries[0]
	if !strings.Contains(e.Reason, "cannot handle") || e.Topic != h.topic || e.EventType != "im.message.receive_v1" || e.EventID == "" {
		t.Fatalf("entry %+v", e)
	}
	if err := h.disp.Replay(ctx, e); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "replay not delivered", func() bool {
		h.plugin.mu.Lock()
		defer h.plugin.mu.Unlock()
		return len(h.plugin.seen) == 2
	})
	testenv.Eventually(t, 5*time.Second, "replayed failure not re-indexed", func() bool {
		l, _ := h.index.List(ctx, "fake", 0)
		return len(l) == 1 && l[0].ID != e.ID
	})
}

type fallbackExec struct {
	recordingExec
	mu    sync.Mutex
	texts []string
}

func (f *fallbackExec) SendFallback(_ context.Context, plugin string, ev *pluginv1.Event, text string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.texts = append(f.texts, plugin+":"+ev.GetEventId()+":"+text)
	return nil
}

// A dead-lettered event gets the manifest's fallback reply.
func TestFallbackReplyOnDeadLetter(t *testing.T) {
	b := memory.New(slog.New(slog.DiscardHandler))
	defer b.Close(context.Background())
	fe := &fallbackExec{}
	d := New(Config{Topics: []string{"t"}, Deadline: time.Second, MaxAttempts: 2, MaxInFlight: 2}, b, fe, slog.New(slog.DiscardHandler), nil)
	m := manifest()
	m.FallbackReplyText = "sorry, something went wrong"
	p := newFakePlugin(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := d.Route("fake")
	sub := make(chan struct{})
	go func() { _ = r.Run(ctx, func() { close(sub) }) }()
	<-sub
	s, _, err := r.Attach(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ev := &pluginv1.Event{EventId: "ev-fb", EventType: "im.message.receive_v1", DedupKey: "om_fb", ChatId: "oc",
		Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: "om_fb", Text: "fail"}}}
	msg, _ := envelope.Encode(ev)
	if err := b.Publish(ctx, "t", msg); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "no fallback reply", func() bool {
		fe.mu.Lock()
		defer fe.mu.Unlock()
		return len(fe.texts) == 1 && fe.texts[0] == "fake:ev-fb:sorry, something went wrong"
	})
}
