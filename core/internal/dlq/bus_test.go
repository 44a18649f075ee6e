package dlq

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/bus/memory"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/testenv"
)

// flakyStore fails its first fails Adds.
type flakyStore struct {
	*Memory
	fails atomic.Int32
}

func (f *flakyStore) Add(ctx context.Context, e Entry) error {
	if f.fails.Add(-1) >= 0 {
		return errors.New("store down")
	}
	return f.Memory.Add(ctx, e)
}

// failingPublisher refuses every publish.
type failingPublisher struct{}

func (failingPublisher) Publish(context.Context, string, bus.Message) error {
	return bus.ErrUnavailable
}

func subscribe(t *testing.T, b bus.Subscriber, topic, sub string) bus.Consumer {
	t.Helper()
	c, err := b.Subscribe(context.Background(), bus.SubscribeOptions{Topic: topic, Subscription: sub})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// A dead letter is indexed with its reason, event and original topic; one
// the store refused is offered again, not lost.
func TestIndex(t *testing.T) {
	b := memory.New(slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	const dlt = "events-plugin-p-DLQ"
	c := subscribe(t, b, dlt, IndexSubscription)
	store := &flakyStore{Memory: NewMemory()}
	store.fails.Store(1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); Index(ctx, c, store, "p", "events", slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() { cancel(); <-done })

	msg := bus.Message{Key: "oc_1", Payload: []byte{1, 2, 3}, Properties: map[string]string{
		PropReason: "plugin failed: boom", envelope.PropEventID: "ev1", envelope.PropEventType: "im.message.receive_v1"}}
	if err := b.Publish(context.Background(), dlt, msg); err != nil {
		t.Fatal(err)
	}
	var list []Entry
	testenv.Eventually(t, 10*time.Second, "dead letter not indexed after the store recovered", func() bool {
		list, _ = store.List(context.Background(), "p", 0)
		return len(list) == 1
	})
	e := list[0]
	if e.Plugin != "p" || e.Topic != "events" || e.Key != "oc_1" || e.Reason != "plugin failed: boom" || e.EventID != "ev1" ||
		e.EventType != "im.message.receive_v1" || string(e.Payload) != "\x01\x02\x03" || e.DeadAt.IsZero() {
		t.Fatalf("entry %+v", e)
	}
	if store.fails.Load() >= 0 {
		t.Fatal("the store's failure was not exercised")
	}
}

// A replay goes to the original topic for its plugin alone, without the
// dead-letter reason, and leaves the index; one that could not be published
// stays in it.
func TestReplay(t *testing.T) {
	b := memory.New(slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	ctx := context.Background()
	c := subscribe(t, b, "events", "inspect")
	store := NewMemory()
	e := Entry{ID: "m1", Plugin: "p", Topic: "events", Key: "oc_1", Payload: []byte("ev"),
		Properties: map[string]string{PropReason: "r", envelope.PropEventID: "ev1"}}
	if err := store.Add(ctx, e); err != nil {
		t.Fatal(err)
	}

	if err := Replay(ctx, failingPublisher{}, store, e); !errors.Is(err, bus.ErrUnavailable) {
		t.Fatalf("replay through a failing bus: %v", err)
	}
	if n, _ := store.Count(ctx, "p"); n != 1 {
		t.Fatal("an entry that was not replayed left the index")
	}

	if err := Replay(ctx, b, store, e); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	del, err := c.Receive(rctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = del.Ack()
	if p := del.Properties; p[PropOnlyPlugin] != "p" || p[envelope.PropEventID] != "ev1" || p[PropReason] != "" || del.Key != "oc_1" || string(del.Payload) != "ev" {
		t.Fatalf("replayed %+v", del.Message)
	}
	if n, _ := store.Count(ctx, "p"); n != 0 {
		t.Fatal("replayed entry still indexed")
	}
	// Replaying again (two admins at once) is not an error; nor is having no index.
	if err := Replay(ctx, b, store, e); err != nil {
		t.Fatal(err)
	}
	if err := Replay(ctx, b, nil, e); err != nil {
		t.Fatal(err)
	}
}
