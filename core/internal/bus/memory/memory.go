// Package memory is the single-process, NON-DURABLE bus: messages live in
// RAM, and a crash loses every one not yet acknowledged. It is for tests and
// benchmarks; a single machine runs bus/embedded, which keeps them on disk.
// It passes the same conformance suite as bus/embedded and bus/pulsar
// (bus/bustest).
//
// Semantics, chosen to mirror a Pulsar Key_Shared subscription:
//
//   - A topic is an append-only log held in memory. It holds a message only for
//     the subscriptions that existed when it was published: a message published
//     to a topic with no subscription is dropped at once (Pulsar without
//     retention), and a message acknowledged by every subscription is released.
//   - A new subscription starts at the latest position: it sees only messages
//     published after it was created. A subscription outlives its consumers
//     (it is durable until Bus.Close): messages published while it has no
//     consumer wait for the next consumer of that name. A subscription nobody
//     consumes again therefore keeps its backlog, as in Pulsar without a
//     backlog quota.
//   - Consumers sharing a subscription split the keys (rendezvous hashing over
//     the open consumers). A key's messages are handed to one consumer in
//     publish order, and a key with a message handed out and not yet acked or
//     nacked stays with that consumer. When a consumer closes, its keys move to
//     the others.
//   - Nack schedules redelivery after SubscribeOptions.BackoffFor(attempt). As in
//     Pulsar, the key's later messages are not held back meanwhile, so a
//     redelivered message can arrive after messages published after it. A Nack
//     of a message already delivered MaxDeliveries times publishes it to the
//     dead-letter topic (key, payload and properties kept) and acknowledges it.
//   - There is no prefetch: ReceiverQueueSize is ignored.
//   - What the bus holds is bounded by the core's memory budget (WithBudget,
//     bus.memory.budget_mb): a publish past it fails with bus.ErrFull (a
//     bus.ErrUnavailable), so ingest answers 503 and Lark retries later,
//     instead of the process growing without limit while plugins fall behind.
//     The budget is the whole process's memory (the container's limit less
//     the plugins'): `larkway serve` makes it the Go memory limit, and
//     the bus refuses publishes while the process's estimated footprint after
//     a collection (runtime/metrics: live heap, the fragmentation of the spans
//     holding it, stacks and the runtime's own; sampled every few
//     milliseconds, not per publish) is past two thirds of that limit, the
//     rest being the collector's room for garbage. Counting what messages hold
//     was not enough: the process ran 1.4–1.7x over it, as their allocations
//     share spans with the requests' short-lived buffers and keep those spans
//     in use. The messages are also counted (MessageHeap: the heap a message
//     holds, rounded up to the allocator's size classes) and bounded by three
//     quarters of the budget, which alone bounds them when the process has no
//     memory limit. Room (bus.Admitter) tells ingest whether a publish would
//     be taken before it verifies and decrypts a request.
//
// The bus starts no goroutines; all calls are safe for concurrent use.
package memory

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/bus/internal/keyshared"
)

var _ bus.Bus = (*Bus)(nil)

// Bus is the in-memory bus. The zero value is not usable; call New.
type Bus struct {
	logger *slog.Logger
	seed   maphash.Seed

	// mu guards the fields below. Publish holds it for reading for its whole
	// duration so that no publish completes after Close returns.
	// Lock order: Bus.mu, then topic.mu, then subscription.mu.
	mu        sync.RWMutex
	closed    bool
	topics    map[string]*topic
	consumers map[*consumer]struct{}
	nextID    uint64

	maxRetained   int64        // bytes; 0: unbounded
	retainedBytes atomic.Int64 // bytes of messages some subscription still holds
	gate          *gate        // nil: no bound on the process's memory

	// room, when not nil, is closed once retainedBytes falls below
	// maxRetained, or, with a gate, at the next release (see Room).
	room atomic.Pointer[chan struct{}]
}

var _ bus.Admitter = (*Bus)(nil)

// DefaultBudget is the core's memory budget unless WithBudget says
// otherwise: a peak worth holding, not a few seconds of one. A typical
// 1.3 KB Lark event holds about 1.7 KB (MessageHeap) with one plugin
// subscribed, so the messages' three quarters of 256 MB are about 110 000
// events, 20 s of a 5 000 events/s peak beyond what the plugins handle
// (fewer when fragmentation brings the footprint to its share first).
const DefaultBudget = 256 << 20

// Option configures a Bus.
type Option func(*Bus)

// WithBudget makes n bytes the process's memory budget (see the package
// doc): publishes are refused while the process's footprint is past two
// thirds of its Go memory limit (which the caller sets to n:
// debug.SetMemoryLimit), or while the messages held count three quarters
// of n, whichever comes first. n <= 0 means unbounded.
func WithBudget(n int64) Option {
	return func(b *Bus) {
		if n <= 0 {
			b.maxRetained, b.gate = 0, nil
			return
		}
		b.maxRetained, b.gate = n-n/4, &gate{read: ReadUsage}
	}
}

// WithMaxRetainedBytes bounds only the heap held by the messages retained
// for subscriptions (see MessageHeap), not the process's memory; n <= 0
// means unbounded.
func WithMaxRetainedBytes(n int64) Option {
	return func(b *Bus) { b.maxRetained, b.gate = max(n, 0), nil }
}

// New returns an empty bus. It does no I/O and starts no goroutines.
func New(logger *slog.Logger, opts ...Option) *Bus {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	b := &Bus{
		logger:    logger.With("component", "bus.memory"),
		seed:      maphash.MakeSeed(),
		topics:    make(map[string]*topic),
		consumers: make(map[*consumer]struct{}),
	}
	WithBudget(DefaultBudget)(b)
	for _, o := range opts {
		o(b)
	}
	return b
}

type topic struct {
	name string

	mu   sync.Mutex
	seq  uint64
	subs map[string]*subscription
}

// message is one published message; immutable once stored, but for refs.
type message struct {
	seq       uint64
	id        string
	msg       bus.Message
	published time.Time
	size      int64
	refs      atomic.Int32 // subscriptions still holding it
}

// MessageHeap is the heap a message published to a topic with subs
// subscriptions holds while queued, what counts toward the bound: the
// stored copy (payload, properties, the message record and its id) and,
// per subscription, its entry and its slot in the pending list, each
// rounded up to the allocator's size class. The key is the publisher's
// string, kept rather than copied, so it counts too. GC headroom is not in
// it: that is the process's memory limit's business (see docs/operations.md).
func MessageHeap(m bus.Message, subs int) int64 {
	n := allocSize(len(m.Payload)) + allocSize(len(m.Key)) + allocSize(int(unsafe.Sizeof(message{}))) +
		allocSize(20) // the id: a decimal uint64
	if len(m.Properties) > 0 {
		// A small map: its header and one group of 8 slots per 8 entries.
		n += allocSize(48) + allocSize((len(m.Properties)+7)/8*(8+8*32))
		for k, v := range m.Properties {
			n += allocSize(len(k)) + allocSize(len(v))
		}
	}
	// An entry, and its pointer in the pending slice, which append grows by
	// doubling: up to two slots per entry.
	perSub := allocSize(int(unsafe.Sizeof(entry{}))) + 2*8
	return int64(n + subs*perSub)
}

// sizeClasses are the Go allocator's small-object size classes
// (runtime/sizeclasses.go); larger objects take whole 8 KiB pages.
var sizeClasses = [...]int{8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256,
	288, 320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536, 1792, 2048,
	2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528, 6784, 6912, 8192, 9472, 9728, 10240, 10880,
	12288, 13568, 14336, 16384, 18432, 19072, 20480, 21760, 24576, 27264, 28672, 32768}

// allocSize is what an allocation of n bytes takes from the heap.
func allocSize(n int) int {
	if n == 0 {
		return 0
	}
	if n > sizeClasses[len(sizeClasses)-1] {
		return (n + 8191) &^ 8191
	}
	i, _ := slices.BinarySearch(sizeClasses[:], n)
	return sizeClasses[i]
}

// drop releases one subscription's hold on m.
func (b *Bus) drop(m *message) {
	if m.refs.Add(-1) == 0 {
		if b.retainedBytes.Add(-m.size) < b.maxRetained || b.gate != nil {
			b.openRoom() // with a gate, waiters sample the process's memory again
		}
	}
}

// openRoom wakes whoever waits on Room.
func (b *Bus) openRoom() {
	if p := b.room.Load(); p != nil && b.room.CompareAndSwap(p, nil) {
		close(*p)
	}
}

// full reports whether a publish would be refused: the messages held are at
// their bound, or the process at its share of the memory limit.
func (b *Bus) full() bool {
	retained := b.retainedBytes.Load()
	if b.maxRetained > 0 && retained >= b.maxRetained {
		return true
	}
	return b.gate != nil && b.gate.over(time.Now(), retained)
}

// Room implements bus.Admitter: nil while a publish would be taken, else a
// channel closed at the next acknowledgement that releases a message (the
// caller then asks again: the process's memory is sampled anew).
func (b *Bus) Room() <-chan struct{} {
	if !b.full() {
		return nil
	}
	p := b.room.Load()
	if p == nil {
		ch := make(chan struct{})
		if b.room.CompareAndSwap(nil, &ch) {
			p = &ch
		} else if p = b.room.Load(); p == nil {
			return nil // opened meanwhile
		}
	}
	// A drop between the first check and the channel's publication saw no
	// channel to close: check again now that it is published.
	if !b.full() {
		b.openRoom()
		return nil
	}
	return *p
}

// entry is a message's state within one subscription.
type entry = keyshared.Entry[*message]

// Key and Seq are what Key_Shared dispatch needs of a message.
func (m *message) Key() string { return m.msg.Key }
func (m *message) Seq() uint64 { return m.seq }

type subscription struct {
	topic string
	name  string

	mu sync.Mutex
	ks *keyshared.State[*consumer, *message] // guarded by mu
}

// token is one hand-out of an entry to a consumer.
type token = keyshared.Token[*message]

type consumer struct {
	b    *Bus
	s    *subscription
	opts bus.SubscribeOptions

	hand *keyshared.Handouts[*message] // guarded by s.mu
}

var _ bus.Consumer = (*consumer)(nil)

// Publish stores msg in every subscription of topic. It returns once stored.
func (b *Bus) Publish(ctx context.Context, topicName string, msg bus.Message) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("publishing to %s: %w", topicName, err)
	}
	if topicName == "" {
		return errors.New("publishing: empty topic")
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return fmt.Errorf("publishing to %s: %w", topicName, bus.ErrClosed)
	}
	t := b.topics[topicName]
	if t == nil {
		return nil // no subscription: nothing retains it
	}
	size := MessageHeap(msg, len(t.subs)) // len under b.mu: Subscribe takes it exclusively
	// At the bound, not past it: the check Room makes, so a publish Room
	// admitted is not refused (the bound is overshot by at most one message
	// per concurrent publisher), unless the gate sampled the process's
	// memory in between and found it past its share.
	if retained := b.retainedBytes.Load(); b.maxRetained > 0 && retained >= b.maxRetained {
		return fmt.Errorf("publishing to %s: %d bytes retained for subscribers, the bound is %d: %w",
			topicName, retained, b.maxRetained, bus.ErrFull)
	} else if b.gate != nil && b.gate.over(time.Now(), retained) {
		foot, limit := b.gate.state()
		return fmt.Errorf("publishing to %s: the process's footprint is about %d MB, past %d%% of its %d MB memory limit: %w",
			topicName, foot>>20, 100-100/gcHeadroomDiv, limit>>20, bus.ErrFull)
	}
	m := &message{
		msg: bus.Message{
			Key:        msg.Key,
			Payload:    slices.Clone(msg.Payload),
			Properties: maps.Clone(msg.Properties),
		},
		published: time.Now(),
		size:      size,
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seq++
	m.seq = t.seq
	m.id = strconv.FormatUint(m.seq, 10)
	if len(t.subs) > 0 {
		m.refs.Store(int32(len(t.subs)))
		b.retainedBytes.Add(size)
	}
	for _, s := range t.subs {
		s.mu.Lock()
		s.ks.Offer(&entry{M: m})
		s.mu.Unlock()
	}
	return nil
}

// Subscribe opens a consumer on opts.Subscription, creating the subscription at
// the topic's latest position if it does not exist.
func (b *Bus) Subscribe(ctx context.Context, opts bus.SubscribeOptions) (bus.Consumer, error) {
	if err := keyshared.CheckSubscribe(ctx, opts); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("subscribing to %s: %w", opts.Topic, bus.ErrClosed)
	}
	t := b.topics[opts.Topic]
	if t == nil {
		t = &topic{name: opts.Topic, subs: make(map[string]*subscription)}
		b.topics[opts.Topic] = t
	}
	t.mu.Lock()
	s := t.subs[opts.Subscription]
	if s == nil {
		s = &subscription{
			topic: opts.Topic,
			name:  opts.Subscription,
			ks:    keyshared.New[*consumer, *message](b.seed),
		}
		t.subs[opts.Subscription] = s
	}
	t.mu.Unlock()

	b.nextID++
	c := &consumer{
		b:    b,
		s:    s,
		opts: opts,
		hand: keyshared.NewHandouts[*message](),
	}
	s.mu.Lock()
	s.ks.Join(c, keyshared.Salt(b.nextID))
	s.mu.Unlock()
	b.consumers[c] = struct{}{}
	return c, nil
}

// Ping reports whether the bus takes writes.
func (b *Bus) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return bus.ErrClosed
	}
	return nil
}

// Close refuses further calls, closes every open consumer (waiting, bounded by
// ctx, for their handed-out messages to be settled) and drops all messages.
// It is idempotent.
func (b *Bus) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	consumers := slices.Collect(maps.Keys(b.consumers))
	b.mu.Unlock()

	var errs []error
	for _, c := range consumers {
		if err := c.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	b.mu.Lock()
	b.topics = make(map[string]*topic)
	b.retainedBytes.Store(0)
	b.mu.Unlock()
	b.openRoom() // waiters find the bus closed
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing memory bus: %w", err)
	}
	return nil
}

// retained counts the entries held by all subscriptions (for tests).
func (b *Bus) retained() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	n := 0
	for _, t := range b.topics {
		t.mu.Lock()
		for _, s := range t.subs {
			s.mu.Lock()
			n += s.ks.Backlog()
			s.mu.Unlock()
		}
		t.mu.Unlock()
	}
	return n
}

// Receive hands out the next message for c.
func (c *consumer) Receive(ctx context.Context) (*bus.Delivery, error) {
	return keyshared.Receive(ctx, &c.s.mu, c.s.ks, c, c.hand, time.Now, (*consumer).handOut, nil)
}

// handOut removes pending entry i and delivers it to c. Callers hold s.mu.
func (c *consumer) handOut(i int) *bus.Delivery {
	s := c.s
	e := s.ks.Take(c, i)
	tk := &token{E: e, State: keyshared.Outstanding}
	c.hand.Add(tk)

	// The stored message is immutable and shared by every hand-out and
	// subscription (bus.Delivery's fields are read-only): copying it per
	// hand-out was a tenth of the dispatcher's cost.
	return bus.NewDelivery(e.M.msg, e.M.id, s.topic, e.Deliveries, e.M.published,
		func() error { return c.ack(tk) },
		func() error { return c.nack(tk) })
}

// finish ends tk's hand-out: the entry is dropped (ack) or scheduled for
// redelivery after delay (nack). Callers hold s.mu.
func (c *consumer) finish(tk *token, ack bool, delay time.Duration) {
	s := c.s
	c.hand.Settle(tk)
	s.ks.Release(tk.E)
	if ack {
		c.b.drop(tk.E.M)
	} else {
		tk.E.ReadyAt = time.Now().Add(delay)
		s.ks.Insert(tk.E)
	}
	s.ks.Notify()
}

func (c *consumer) ack(tk *token) error {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	act, err := tk.Claim(keyshared.Settled)
	if err != nil {
		return fmt.Errorf("acknowledging message %s: %w", tk.E.M.id, err)
	}
	if act {
		c.finish(tk, true, 0)
	}
	return nil
}

func (c *consumer) nack(tk *token) error {
	s := c.s
	s.mu.Lock()
	act, err := tk.Claim(keyshared.Settling)
	if err != nil || !act {
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("negatively acknowledging message %s: %w", tk.E.M.id, err)
		}
		return nil
	}
	e := tk.E
	if c.opts.MaxDeliveries <= 0 || e.Deliveries < c.opts.MaxDeliveries {
		c.finish(tk, false, c.opts.BackoffFor(e.Deliveries))
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()

	// Dead-letter outside s.mu: the dead-letter topic may be this very topic.
	dlq := c.opts.DeadLetter()
	err = c.b.Publish(context.Background(), dlq, e.M.msg)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		c.finish(tk, false, c.opts.BackoffFor(e.Deliveries))
		return fmt.Errorf("dead-lettering message %s to %s: %w", e.M.id, dlq, err)
	}
	c.b.logger.Debug("message dead-lettered", "topic", s.topic, "subscription", s.name,
		"id", e.M.id, "dead_letter_topic", dlq, "deliveries", e.Deliveries)
	c.finish(tk, true, 0)
	return nil
}

// Close stops handing out messages, waits (bounded by ctx) for handed-out ones
// to be acked or nacked, then leaves the subscription. Messages still
// unsettled when ctx ends go back to the subscription for another consumer,
// and ctx's error is returned. Close is idempotent.
func (c *consumer) Close(ctx context.Context) error {
	s := c.s
	returned, err := keyshared.CloseConsumer(ctx, &s.mu, s.ks, c, c.hand, nil)
	c.b.mu.Lock()
	delete(c.b.consumers, c)
	c.b.mu.Unlock()
	if err != nil {
		c.b.logger.Warn("consumer closed with unsettled messages; returned them to the subscription",
			"topic", s.topic, "subscription", s.name, "messages", returned)
		return fmt.Errorf("closing consumer of %s/%s: %w", s.topic, s.name, err)
	}
	return nil
}

// Backlog counts a subscription's messages not yet acknowledged (waiting or
// handed out); zero for an unknown topic or subscription.
func (b *Bus) Backlog(_ context.Context, topicName, subscription string) (int64, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return 0, bus.ErrClosed
	}
	t := b.topics[topicName]
	if t == nil {
		return 0, nil
	}
	t.mu.Lock()
	s := t.subs[subscription]
	t.mu.Unlock()
	if s == nil {
		return 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(s.ks.Backlog()), nil
}
