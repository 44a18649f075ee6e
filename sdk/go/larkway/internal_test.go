package larkway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/timestamppb"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Workers, result senders and lazy deadline contexts must all end with
// their stream.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestManifestFromHandlers(t *testing.T) {
	p := New("deployer", "2.0.0", WithActions(ActionReply, ActionSend), WithMaxInFlight(8), WithChats("oc_1"),
		WithFallbackReply("sorry"), WithLogger(slog.New(slog.DiscardHandler)))
	p.OnCommand("/deploy", func(context.Context, *Event, Command) ([]Action, error) { return nil, nil })
	p.OnCommand("/rollback", func(context.Context, *Event, Command) ([]Action, error) { return nil, nil })
	p.OnEvent("im.chat.disbanded_v1", func(context.Context, *Event) ([]Action, error) { return nil, nil })
	m := p.manifest()
	if m.GetName() != "deployer" || m.GetMaxInFlight() != 8 || m.GetFallbackReplyText() != "sorry" {
		t.Fatalf("manifest %v", m)
	}
	if !slices.Equal(m.GetAllowedActions(), []pluginv1.ActionKind{pluginv1.ActionKind_ACTION_KIND_REPLY, pluginv1.ActionKind_ACTION_KIND_SEND}) {
		t.Fatalf("actions %v", m.GetAllowedActions())
	}
	subs := m.GetSubscriptions()
	if len(subs) != 2 || !slices.Equal(subs[0].GetCommands(), []string{"/deploy", "/rollback"}) || !slices.Equal(subs[0].GetChatIds(), []string{"oc_1"}) ||
		!slices.Equal(subs[1].GetEventTypes(), []string{"im.chat.disbanded_v1"}) {
		t.Fatalf("subscriptions %v", subs)
	}
}

// fakeStream feeds requests and collects responses like a gRPC stream.
type fakeStream struct {
	in  chan *pluginv1.HandleRequest
	mu  sync.Mutex
	out []*pluginv1.HandleResponse
}

func (f *fakeStream) Recv() (*pluginv1.HandleRequest, error) {
	r, ok := <-f.in
	if !ok {
		return nil, io.EOF
	}
	return r, nil
}

func (f *fakeStream) Send(r *pluginv1.HandleResponse) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.out = append(f.out, r)
	return nil
}

func TestHandleStreamMalformedAndConcurrent(t *testing.T) {
	p := New("t", "1", WithLogger(slog.New(slog.DiscardHandler)), WithMaxInFlight(4), WithActions(ActionReply))
	p.OnMessage(func(_ context.Context, ev *Event) ([]Action, error) { return []Action{ReplyText(ev.Message.Text)}, nil })
	s := &fakeStream{in: make(chan *pluginv1.HandleRequest, 100)}
	msg := func(id, text string) *pluginv1.HandleRequest {
		return &pluginv1.HandleRequest{Kind: &pluginv1.HandleRequest_Delivery{Delivery: &pluginv1.Delivery{
			DeliveryId: id, Attempt: 1, Deadline: timestamppb.New(time.Now().Add(time.Minute)),
			Event: &pluginv1.Event{EventType: EventMessageReceive, Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: "om", Text: text}}},
		}}}
	}
	for i := range 20 {
		s.in <- msg(string(rune('a'+i)), "x")
	}
	s.in <- &pluginv1.HandleRequest{Kind: &pluginv1.HandleRequest_Delivery{Delivery: &pluginv1.Delivery{DeliveryId: "no-event"}}}
	s.in <- &pluginv1.HandleRequest{Kind: &pluginv1.HandleRequest_Delivery{Delivery: &pluginv1.Delivery{}}}
	s.in <- &pluginv1.HandleRequest{} // empty oneof: ignored
	s.in <- &pluginv1.HandleRequest{Kind: &pluginv1.HandleRequest_ResultAck{ResultAck: &pluginv1.ResultAck{DeliveryId: "a",
		Refused: []*pluginv1.RefusedAction{{Index: 0, Reason: "nope"}}}}}
	close(s.in)
	if err := p.handleStream(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if len(s.out) != 22 {
		t.Fatalf("%d results, want 22", len(s.out))
	}
	failed := 0
	for _, r := range s.out {
		if r.GetResult().GetOutcome() == pluginv1.Outcome_OUTCOME_FAILED {
			failed++
		}
	}
	if failed != 2 {
		t.Fatalf("%d failed results, want 2 (the malformed deliveries)", failed)
	}
}

// The core sends a ResultAck only when it refused some of a result's
// actions, and a plugin never waits for one: results go out whether acks
// come or not, and only an ack with refusals is logged.
func TestResultAcksAreNeverAwaited(t *testing.T) {
	var logs strings.Builder
	p := New("t", "1", WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))), WithActions(ActionReply))
	p.OnMessage(func(_ context.Context, ev *Event) ([]Action, error) { return []Action{ReplyText(ev.Message.Text)}, nil })
	s := &fakeStream{in: make(chan *pluginv1.HandleRequest, 10)}
	msg := func(id string) *pluginv1.HandleRequest {
		return &pluginv1.HandleRequest{Kind: &pluginv1.HandleRequest_Delivery{Delivery: &pluginv1.Delivery{DeliveryId: id, Attempt: 1,
			Event: &pluginv1.Event{EventType: EventMessageReceive, Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: "om", Text: id}}}}}}
	}
	ack := func(id string, refused ...*pluginv1.RefusedAction) *pluginv1.HandleRequest {
		return &pluginv1.HandleRequest{Kind: &pluginv1.HandleRequest_ResultAck{ResultAck: &pluginv1.ResultAck{DeliveryId: id, Refused: refused}}}
	}
	s.in <- msg("a")
	s.in <- msg("b") // no ack for a came first
	s.in <- ack("a", &pluginv1.RefusedAction{Index: 0, Reason: "not allowed"})
	s.in <- ack("b")               // an empty ack (the core sends none) is ignored
	s.in <- ack("never-delivered") // so is one for an unknown delivery
	s.in <- msg("c")
	close(s.in)
	if err := p.handleStream(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if len(s.out) != 3 {
		t.Fatalf("%d results, want 3", len(s.out))
	}
	if n := strings.Count(logs.String(), "core refused actions"); n != 1 {
		t.Fatalf("%d refusal warnings, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `"delivery_id":"a"`) || !strings.Contains(logs.String(), `"first_reason":"not allowed"`) {
		t.Fatalf("warning does not name the delivery and reason:\n%s", logs.String())
	}
}

// Batched deliveries are handled like single ones; results come back one
// per message unless the core accepted result batches in Describe.
func TestHandleStreamBatches(t *testing.T) {
	for _, coreBatches := range []bool{false, true} {
		t.Run(fmt.Sprintf("core accepts result batches=%v", coreBatches), func(t *testing.T) {
			p := New("t", "1", WithLogger(slog.New(slog.DiscardHandler)), WithActions(ActionReply))
			if !p.manifest().GetAcceptsDeliveryBatches() {
				t.Fatal("the manifest does not accept delivery batches")
			}
			p.OnMessage(func(_ context.Context, ev *Event) ([]Action, error) { return []Action{ReplyText(ev.Message.Text)}, nil })
			if _, err := (&server{p: p}).Describe(context.Background(), &pluginv1.DescribeRequest{AcceptsResultBatches: coreBatches}); err != nil {
				t.Fatal(err)
			}
			s := &fakeStream{in: make(chan *pluginv1.HandleRequest, 10)}
			batch := &pluginv1.DeliveryBatch{}
			for i := range 30 {
				batch.Deliveries = append(batch.Deliveries, &pluginv1.Delivery{DeliveryId: fmt.Sprint("d", i), Attempt: 1,
					Event: &pluginv1.Event{EventType: EventMessageReceive, Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: "om", Text: "x"}}}})
			}
			s.in <- &pluginv1.HandleRequest{Kind: &pluginv1.HandleRequest_Deliveries{Deliveries: batch}}
			s.in <- &pluginv1.HandleRequest{Kind: &pluginv1.HandleRequest_Delivery{Delivery: &pluginv1.Delivery{DeliveryId: "single", Attempt: 1,
				Event: &pluginv1.Event{EventType: EventMessageReceive, Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: "om", Text: "y"}}}}}}
			close(s.in)
			if err := p.handleStream(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, r := range s.out {
				rs := r.GetResults().GetResults()
				if r.GetResults() != nil && !coreBatches {
					t.Fatal("a result batch for a core that did not accept them")
				}
				if res := r.GetResult(); res != nil {
					rs = append(rs, res)
				}
				for _, res := range rs {
					if got[res.GetDeliveryId()] || res.GetOutcome() != pluginv1.Outcome_OUTCOME_DONE {
						t.Fatalf("result %v (seen before: %v)", res, got[res.GetDeliveryId()])
					}
					got[res.GetDeliveryId()] = true
				}
			}
			if len(got) != 31 {
				t.Fatalf("%d results, want 31", len(got))
			}
		})
	}
}

func TestExpiredDeadlineReachesHandler(t *testing.T) {
	p := New("t", "1", WithLogger(slog.New(slog.DiscardHandler)))
	p.OnMessage(func(ctx context.Context, _ *Event) ([]Action, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	res := p.deliver(context.Background(), &pluginv1.Delivery{DeliveryId: "d", Deadline: timestamppb.New(time.Now().Add(-time.Second)),
		Event: &pluginv1.Event{Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{}}}})
	if res.GetOutcome() != pluginv1.Outcome_OUTCOME_RETRY || res.GetDeliveryId() != "d" {
		t.Fatalf("result %v", res)
	}
}

// Handlers run at most WithMaxInFlight at once, on workers that all end with
// the stream; a nil entry in a batch is answered as malformed and does not
// stop the worker that takes it.
func TestHandleStreamBoundedPool(t *testing.T) {
	const limit = 3
	p := New("t", "1", WithLogger(slog.New(slog.DiscardHandler)), WithMaxInFlight(limit))
	var mu sync.Mutex
	running, most := 0, 0
	started, gate := make(chan struct{}, 100), make(chan struct{})
	p.OnMessage(func(context.Context, *Event) ([]Action, error) {
		mu.Lock()
		running++
		most = max(most, running)
		mu.Unlock()
		started <- struct{}{}
		<-gate
		mu.Lock()
		running--
		mu.Unlock()
		return nil, nil
	})
	batch := &pluginv1.DeliveryBatch{Deliveries: []*pluginv1.Delivery{nil}}
	for i := range 12 {
		batch.Deliveries = append(batch.Deliveries, &pluginv1.Delivery{DeliveryId: fmt.Sprint("d", i), Attempt: 1,
			Event: &pluginv1.Event{EventType: EventMessageReceive, Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: "om"}}}})
	}
	s := &fakeStream{in: make(chan *pluginv1.HandleRequest, 1)}
	s.in <- &pluginv1.HandleRequest{Kind: &pluginv1.HandleRequest_Deliveries{Deliveries: batch}}
	close(s.in)
	errc := make(chan error, 1)
	go func() { errc <- p.handleStream(context.Background(), s) }()
	for range limit {
		<-started
	}
	close(gate)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if most != limit {
		t.Fatalf("%d handlers ran at once, want %d", most, limit)
	}
	outcomes := map[pluginv1.Outcome]int{}
	for _, r := range s.out {
		for _, res := range append(r.GetResults().GetResults(), r.GetResult()) {
			if res != nil {
				outcomes[res.GetOutcome()]++
			}
		}
	}
	if outcomes[pluginv1.Outcome_OUTCOME_DONE] != 12 || outcomes[pluginv1.Outcome_OUTCOME_FAILED] != 1 {
		t.Fatalf("outcomes %v, want 12 done and 1 failed", outcomes)
	}
}
