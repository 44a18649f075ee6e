package memory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/bus/bustest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newTestBus(t *testing.T) *Bus {
	return New(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})))
}

func TestConformance(t *testing.T) {
	bustest.Run(t, func(t *testing.T) bus.Bus { return newTestBus(t) })
}

func TestNewWithNilLogger(t *testing.T) {
	b := New(nil)
	if err := b.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := b.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestSubscribeValidates(t *testing.T) {
	b := newTestBus(t)
	defer b.Close(context.Background())
	for name, opts := range map[string]bus.SubscribeOptions{
		"no topic":         {Subscription: "s"},
		"no subscription":  {Topic: "t"},
		"negative retries": {Topic: "t", Subscription: "s", MaxDeliveries: -1},
	} {
		if _, err := b.Subscribe(t.Context(), opts); err == nil {
			t.Errorf("%s: Subscribe succeeded", name)
		}
	}
}

// Messages are released once every subscription acked them, and a topic with
// no subscription keeps nothing.
func TestRetention(t *testing.T) {
	ctx := t.Context()
	b := newTestBus(t)
	defer b.Close(context.Background())

	for i := range 10 {
		if err := b.Publish(ctx, "nobody", bus.Message{Key: "k", Payload: []byte{byte(i)}}); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	if n := b.retained(); n != 0 {
		t.Fatalf("retained %d messages of a topic without subscriptions", n)
	}

	c1, _ := b.Subscribe(ctx, bus.SubscribeOptions{Topic: "t", Subscription: "one"})
	c2, _ := b.Subscribe(ctx, bus.SubscribeOptions{Topic: "t", Subscription: "two"})
	for i := range 10 {
		if err := b.Publish(ctx, "t", bus.Message{Key: strconv.Itoa(i % 3), Payload: []byte{byte(i)}}); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	if n := b.retained(); n != 20 {
		t.Fatalf("retained %d entries, want 20 (10 messages × 2 subscriptions)", n)
	}
	for _, c := range []bus.Consumer{c1, c2} {
		for range 10 {
			d, err := c.Receive(ctx)
			if err != nil {
				t.Fatalf("Receive: %v", err)
			}
			if err := d.Ack(); err != nil {
				t.Fatalf("Ack: %v", err)
			}
		}
	}
	if n := b.retained(); n != 0 {
		t.Fatalf("retained %d entries after every subscription acked everything", n)
	}
}

// A late Ack of a delivery that Close gave back reports ErrClosed; the message
// is delivered again.
func TestAckAfterCloseTimeout(t *testing.T) {
	ctx := t.Context()
	b := newTestBus(t)
	defer b.Close(context.Background())
	opts := bus.SubscribeOptions{Topic: "t", Subscription: "s"}
	c, _ := b.Subscribe(ctx, opts)
	if err := b.Publish(ctx, "t", bus.Message{Key: "k"}); err != nil {
		t.Fatal(err)
	}
	d, err := c.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	expired, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Close(expired); err == nil {
		t.Fatal("Close with an expired ctx and an outstanding delivery succeeded")
	}
	if err := d.Ack(); err == nil {
		t.Error("Ack after the delivery was given back succeeded")
	}
	c2, _ := b.Subscribe(ctx, opts)
	again, err := c2.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != d.ID || again.Attempt != 2 {
		t.Errorf("redelivered %s attempt %d, want %s attempt 2", again.ID, again.Attempt, d.ID)
	}
	again.Ack()
}

// TestStress hammers one Key_Shared subscription with concurrent publishers,
// consumers that nack, dead-letter, and leave and rejoin, and checks that no
// key is ever in flight at two consumers, that acked messages never come back,
// that every message is accounted for, and that nothing stays retained.
func TestStress(t *testing.T) {
	const (
		publishers   = 4
		perPublisher = 250
		keys         = 20
		consumers    = 4
		total        = publishers * perPublisher
	)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b := newTestBus(t)
	defer b.Close(context.Background())

	opts := bus.SubscribeOptions{
		Topic: "stress", Subscription: "s", MaxDeliveries: 3,
		Backoff: func(int) time.Duration { return time.Millisecond },
	}
	dlq, err := b.Subscribe(ctx, bus.SubscribeOptions{Topic: opts.DeadLetter(), Subscription: "dlq"})
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu       sync.Mutex
		holder   = make(map[string]int) // key → consumer with it in flight
		acked    = make(map[string]bool)
		done     atomic.Int64
		finished = make(chan struct{})
	)
	account := func() {
		if done.Add(1) == total {
			close(finished)
		}
	}
	work, stop := context.WithCancel(ctx)
	defer stop()

	// Subscribe before publishing: a topic without subscriptions keeps nothing.
	initial := make([]bus.Consumer, consumers)
	for w := range initial {
		if initial[w], err = b.Subscribe(ctx, opts); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for w := range consumers {
		wg.Go(func() {
			c := initial[w]
			for n := 0; ; n++ {
				// Every consumer leaves and rejoins now and then.
				if n > 0 && n%(60+w*7) == 0 {
					if err := c.Close(work); err != nil && work.Err() == nil {
						t.Errorf("consumer %d: Close: %v", w, err)
					}
					var err error
					if c, err = b.Subscribe(work, opts); err != nil {
						if work.Err() == nil {
							t.Errorf("consumer %d: Subscribe: %v", w, err)
						}
						return
					}
				}
				d, err := c.Receive(work)
				if err != nil {
					if work.Err() == nil {
						t.Errorf("consumer %d: Receive: %v", w, err)
					}
					c.Close(context.Background())
					return
				}
				mu.Lock()
				if h, ok := holder[d.Key]; ok {
					t.Errorf("key %s handed to consumer %d while in flight at consumer %d", d.Key, w, h)
				}
				if acked[d.ID] {
					t.Errorf("message %s delivered again after its ack", d.ID)
				}
				holder[d.Key] = w
				mu.Unlock()

				seq, _ := strconv.Atoi(d.Properties["seq"])
				nack := (seq+d.Attempt)%4 == 0 || seq%97 == 0 // seq%97: always nacked, dead-lettered

				mu.Lock()
				delete(holder, d.Key)
				if !nack {
					acked[d.ID] = true
				}
				mu.Unlock()
				if nack {
					if err := d.Nack(); err != nil {
						t.Errorf("Nack: %v", err)
					}
					continue
				}
				if err := d.Ack(); err != nil {
					t.Errorf("Ack: %v", err)
				}
				account()
			}
		})
	}
	wg.Go(func() {
		for {
			d, err := dlq.Receive(work)
			if err != nil {
				return
			}
			d.Ack()
			account()
		}
	})
	for p := range publishers {
		wg.Go(func() {
			for i := range perPublisher {
				seq := p*perPublisher + i
				m := bus.Message{Key: "k" + strconv.Itoa(seq%keys), Payload: fmt.Appendf(nil, "%d", seq), Properties: map[string]string{"seq": strconv.Itoa(seq)}}
				if err := b.Publish(work, opts.Topic, m); err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
			}
		})
	}

	select {
	case <-finished:
	case <-ctx.Done():
		t.Errorf("accounted for %d of %d messages before the deadline\n%s", done.Load(), total, b.dump())
	}
	stop()
	wg.Wait()
	if n := b.retained(); n != 0 && !t.Failed() {
		t.Errorf("retained %d entries after everything was acked", n)
	}
}

func BenchmarkPublishReceive(b *testing.B) {
	ctx := context.Background()
	mb := New(nil)
	defer mb.Close(ctx)
	c, _ := mb.Subscribe(ctx, bus.SubscribeOptions{Topic: "t", Subscription: "s"})
	m := bus.Message{Key: "k", Payload: make([]byte, 256)}
	b.ReportAllocs()
	for b.Loop() {
		if err := mb.Publish(ctx, "t", m); err != nil {
			b.Fatal(err)
		}
		d, err := c.Receive(ctx)
		if err != nil {
			b.Fatal(err)
		}
		d.Ack()
	}
}

// dump describes every subscription's state, for failure messages.
func (b *Bus) dump() string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := ""
	for _, t := range b.topics {
		t.mu.Lock()
		for _, s := range t.subs {
			s.mu.Lock()
			pending := s.ks.Pending()
			out += fmt.Sprintf("%s/%s pending=%d active=%d\n", t.name, s.name, len(pending), s.ks.Consumers())
			for k, o := range s.ks.Owners() {
				out += fmt.Sprintf("  owner %s -> %p closing=%v inflight=%d cinflight=%d\n", k, o.C, o.C.hand.Closing(), o.Inflight, o.C.hand.Len())
			}
			for i, e := range pending {
				if i > 5 {
					break
				}
				out += fmt.Sprintf("  pending %s key=%s del=%d ready=%v\n", e.M.id, e.M.msg.Key, e.Deliveries, e.ReadyAt)
			}
			s.mu.Unlock()
		}
		t.mu.Unlock()
	}
	return out
}

// Retained bytes are bounded: a publish past the bound fails as unavailable
// (ingest answers 503, Lark retries), and acking makes room again. Messages
// nobody subscribes to are never retained, so they never count.
func TestRetentionBound(t *testing.T) {
	ctx := t.Context()
	msg := bus.Message{Key: "k", Payload: make([]byte, 100)}
	size := MessageHeap(msg, 2)
	b := New(nil, WithMaxRetainedBytes(3*size))
	defer b.Close(context.Background())
	if err := b.Publish(ctx, "unsubscribed", msg); err != nil {
		t.Fatalf("publish without subscribers: %v", err)
	}
	// Two subscriptions hold each message; it counts once.
	c1, err := b.Subscribe(ctx, bus.SubscribeOptions{Topic: "t", Subscription: "a"})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := b.Subscribe(ctx, bus.SubscribeOptions{Topic: "t", Subscription: "b", Backoff: func(int) time.Duration { return 0 }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := b.Publish(ctx, "t", msg); err != nil {
			t.Fatalf("publish %d within the bound: %v", i, err)
		}
	}
	if err := b.Publish(ctx, "t", msg); !errors.Is(err, bus.ErrFull) || !errors.Is(err, bus.ErrUnavailable) {
		t.Fatalf("publish past the bound = %v, want ErrFull, an ErrUnavailable", err)
	}
	d1, err := c1.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d1.Ack()
	if err := b.Publish(ctx, "t", msg); !errors.Is(err, bus.ErrUnavailable) {
		t.Fatalf("publish while subscription b still holds the message = %v, want ErrUnavailable", err)
	}
	d2, err := c2.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d2.Nack() // redelivered later: still held
	if err := b.Publish(ctx, "t", msg); !errors.Is(err, bus.ErrUnavailable) {
		t.Fatalf("publish after a nack = %v, want ErrUnavailable", err)
	}
	d2, err = c2.Receive(ctx) // the nacked first message again, ready at once
	if err != nil {
		t.Fatal(err)
	}
	if d2.ID != d1.ID {
		t.Fatalf("redelivered %s, want %s", d2.ID, d1.ID)
	}
	d2.Ack()
	if err := b.Publish(ctx, "t", msg); err != nil {
		t.Fatalf("publish after both subscriptions acked: %v", err)
	}
}

// Room says whether a publish would be taken, and its channel closes when an
// acknowledgement makes room: ingest's admission waits on it instead of
// verifying requests it would then refuse.
func TestRoom(t *testing.T) {
	ctx := t.Context()
	msg := bus.Message{Key: "k", Payload: make([]byte, 100)}
	b := New(nil, WithMaxRetainedBytes(2*MessageHeap(msg, 1)))
	defer b.Close(context.Background())
	c, err := b.Subscribe(ctx, bus.SubscribeOptions{Topic: "t", Subscription: "a"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if ch := b.Room(); ch != nil {
			t.Fatalf("Room before publish %d = a channel, want nil (under the bound)", i)
		}
		if err := b.Publish(ctx, "t", msg); err != nil {
			t.Fatal(err)
		}
	}
	room := b.Room()
	if room == nil {
		t.Fatal("Room at the bound = nil, want a channel")
	}
	if again := b.Room(); again != room {
		t.Fatal("a second Room at the bound returned another channel: waiters would not share one wake-up")
	}
	select {
	case <-room:
		t.Fatal("Room's channel closed before anything was acknowledged")
	default:
	}
	d, err := c.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-room:
	default:
		t.Fatal("Room's channel still open after an ack made room")
	}
	if ch := b.Room(); ch != nil {
		t.Fatal("Room after the ack = a channel, want nil")
	}
	if err := b.Publish(ctx, "t", msg); err != nil {
		t.Fatalf("publish after Room opened: %v", err)
	}
	// Close wakes waiters too: they find the bus closed.
	room = b.Room()
	if room == nil {
		t.Fatal("Room at the bound again = nil")
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-room:
	default:
		t.Fatal("Room's channel still open after Close")
	}
}

// The bound counts what a queued message really holds: the heap measured
// after queueing many messages is within 15 % of MessageHeap's sum. (It
// counted the payload alone once, and the heap ran to twice the bound.)
func TestMessageHeapIsTheRealHeap(t *testing.T) {
	ctx := t.Context()
	const n = 20000
	payload := make([]byte, 1300)
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = fmt.Sprintf("oc_%032d", i)
	}
	b := New(nil, WithMaxRetainedBytes(0))
	defer b.Close(context.Background())
	for _, sub := range []string{"a", "b"} {
		if _, err := b.Subscribe(ctx, bus.SubscribeOptions{Topic: "t", Subscription: sub}); err != nil {
			t.Fatal(err)
		}
	}
	var want int64
	msgs := make([]bus.Message, n)
	for i := range msgs {
		// The key is the publisher's own string, as ingest's is.
		msgs[i] = bus.Message{Key: strings.Clone(keys[i%len(keys)]), Payload: payload}
	}
	heapBefore := liveHeap()
	for i := range msgs {
		if err := b.Publish(ctx, "t", msgs[i]); err != nil {
			t.Fatal(err)
		}
		want += MessageHeap(msgs[i], 2)
	}
	// The keys were allocated before the measurement: count them out.
	for i := range msgs {
		want -= int64(allocSize(len(msgs[i].Key)))
	}
	got := int64(liveHeap() - heapBefore)
	runtime.KeepAlive(msgs)
	t.Logf("%d messages: heap %d bytes, MessageHeap %d (%.3fx)", n, got, want, float64(got)/float64(want))
	if got > want*115/100 || got < want*85/100 {
		t.Fatalf("%d messages took %d bytes of heap, MessageHeap counted %d (%.2fx)", n, got, want, float64(got)/float64(want))
	}
	if r := b.retainedBytes.Load(); r != want+int64(n*allocSize(len(keys[0]))) {
		t.Fatalf("retainedBytes = %d, want the sum of MessageHeap", r)
	}
}

func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
