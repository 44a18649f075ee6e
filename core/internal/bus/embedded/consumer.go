package embedded

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/bus/internal/keyshared"
)

// The in-memory side is bus/memory's Key_Shared dispatch (bus/internal/
// keyshared: rendezvous hashing of keys over a subscription's consumers, a
// key pinned to the consumer holding its in-flight messages); every change of a message's state on a subscription
// is written to the store before it takes effect in memory.

// entry is a message's state within one subscription.
type entry = keyshared.Entry[*message]

// Key and Seq are what Key_Shared dispatch needs of a message.
func (m *message) Key() string { return m.key }
func (m *message) Seq() uint64 { return m.seq }

type subscription struct {
	topic string
	name  string
	t     *topic

	// Guarded by mu.
	mu  sync.Mutex
	ks  *keyshared.State[*consumer, *message]
	out map[*entry]struct{} // handed out, not yet settled
	// While spilling, the messages published for s from seq cursor on are
	// on disk only (spilled of them), not in ks; see spill.go.
	spilling  bool
	cursor    uint64
	spilled   int64
	refilling bool // a refill is under way
	rerun     bool // a refill was asked for while one ran
	// uncounted: after a crash, pending records below it may have been
	// handed out once without a count on disk (see recover).
	uncounted uint64
}

func newSubscription(t *topic, name string, seed maphash.Seed) *subscription {
	return &subscription{
		topic: t.name,
		name:  name,
		t:     t,
		ks:    keyshared.New[*consumer, *message](seed),
		out:   make(map[*entry]struct{}),
	}
}

// floor is the lowest seq s still holds, or 0 when it holds none. Callers
// hold s.mu.
func (s *subscription) floor() uint64 {
	var low uint64
	if p := s.ks.Pending(); len(p) > 0 {
		low = p[0].M.seq
	}
	if s.spilling && (low == 0 || s.cursor < low) {
		low = s.cursor
	}
	for e := range s.out {
		if low == 0 || e.M.seq < low {
			low = e.M.seq
		}
	}
	return low
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

// Receive hands out the next message for c.
func (c *consumer) Receive(ctx context.Context) (*bus.Delivery, error) {
	s := c.s
	for {
		tk, err := keyshared.Receive(ctx, &s.mu, s.ks, c, c.hand, c.b.now, (*consumer).take,
			func() { c.b.refillIfStarved(s) })
		if err != nil {
			return nil, err
		}
		d, err := c.deliver(tk)
		if err == nil || errors.Is(err, bus.ErrClosed) {
			return d, err
		}
		// The store could not give the message back: it stays pending,
		// redelivered after a backoff; the error names what failed
		// where. Other keys go on meanwhile.
		c.b.logger.Error("reading a stored message failed; will retry", "topic", s.topic,
			"subscription", s.name, "id", tk.E.M.id, "err", err)
	}
}

// take removes pending entry i and marks it handed to c. Callers hold s.mu.
func (c *consumer) take(i int) *token {
	s := c.s
	e := s.ks.Take(c, i)
	c.b.refillIfLow(s)
	s.out[e] = struct{}{}
	tk := &token{E: e, State: keyshared.Handing}
	c.hand.Add(tk)
	return tk
}

// deliver writes tk's delivery count if it is a redelivery (a first one is
// counted at recovery; see the package doc), reads its message and returns
// the delivery. On failure the entry goes back to the subscription.
func (c *consumer) deliver(tk *token) (*bus.Delivery, error) {
	s, e := c.s, tk.E
	var err error
	if e.Deliveries > 1 {
		err = c.writePending(e, pending{deliveries: e.Deliveries})
	}
	written := err == nil
	var msg bus.Message
	var published time.Time
	if err == nil {
		msg, published, err = c.b.message(s.topic, e.M)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || c.hand.Closing() {
		var readyAt time.Time
		if !written {
			e.Deliveries-- // not counted on disk either
		} else if err != nil && !errors.Is(err, bus.ErrClosed) {
			readyAt = c.b.now().Add(c.opts.BackoffFor(e.Deliveries))
		}
		c.finish(tk, false, readyAt)
		if err == nil {
			err = bus.ErrClosed
		}
		return nil, err
	}
	tk.State = keyshared.Outstanding
	return bus.NewDelivery(msg, e.M.id, s.topic, e.Deliveries, published,
		func() error { return c.ack(tk) },
		func() error { return c.nack(tk) }), nil
}

// writePending writes e's pending record on c's subscription as p, without
// an fsync of its own.
func (c *consumer) writePending(e *entry, p pending) error {
	batch := c.b.db.NewBatch()
	defer batch.Close()
	_ = batch.Set(pendingKey(c.s.topic, c.s.name, e.M.seq), encodePending(p), nil)
	return c.b.write(batch, false)
}

// claim marks tk being settled by its first Ack or Nack. It reports whether
// the caller must act; err is set when the consumer already gave tk back.
func (c *consumer) claim(tk *token) (act bool, err error) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return tk.Claim(keyshared.Settling)
}

// finish ends tk's hand-out: the entry is dropped (ack) or goes back to the
// subscription, ready at readyAt (nack). Callers hold s.mu.
func (c *consumer) finish(tk *token, ack bool, readyAt time.Time) {
	s := c.s
	c.hand.Settle(tk)
	delete(s.out, tk.E)
	s.ks.Release(tk.E)
	if ack {
		tk.E.M.drop(c.b)
	} else {
		tk.E.ReadyAt = readyAt
		s.ks.Insert(tk.E)
	}
	s.ks.Notify()
}

func (c *consumer) settle(tk *token, ack bool, readyAt time.Time) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	c.finish(tk, ack, readyAt)
}

func (c *consumer) ack(tk *token) error {
	act, err := c.claim(tk)
	if err != nil {
		return fmt.Errorf("acknowledging message %s: %w", tk.E.M.id, err)
	}
	if !act {
		return nil
	}
	key := pendingKey(c.s.topic, c.s.name, tk.E.M.seq)
	err = c.b.writeDeferred(func(batch *pebble.Batch) { _ = batch.Delete(key, nil) })
	if err != nil {
		// Still pending on disk: keep it pending here too.
		c.settle(tk, false, time.Time{})
		return fmt.Errorf("acknowledging message %s: %w", tk.E.M.id, err)
	}
	c.settle(tk, true, time.Time{})
	return nil
}

func (c *consumer) nack(tk *token) error {
	act, err := c.claim(tk)
	if err != nil {
		return fmt.Errorf("negatively acknowledging message %s: %w", tk.E.M.id, err)
	}
	if !act {
		return nil
	}
	e := tk.E
	retryAt := c.b.now().Add(c.opts.BackoffFor(e.Deliveries))
	if c.opts.MaxDeliveries <= 0 || e.Deliveries < c.opts.MaxDeliveries {
		err := c.writePending(e, pending{deliveries: e.Deliveries, readyAt: retryAt})
		// Redelivered either way: on failure the store still has it
		// pending, without the backoff.
		c.settle(tk, false, retryAt)
		if err != nil {
			return fmt.Errorf("negatively acknowledging message %s: %w", e.M.id, err)
		}
		return nil
	}

	// Dead-letter: the copy and the removal from this subscription are one
	// batch, so a crash leaves exactly one of the two. The dead-letter topic
	// may be this very topic: publish takes its locks, not s.mu.
	dlq := c.opts.DeadLetter()
	msg, _, err := c.b.message(c.s.topic, e.M)
	if err == nil {
		err = c.b.publish(context.Background(), dlq, msg, func(batch *pebble.Batch) {
			_ = batch.Delete(pendingKey(c.s.topic, c.s.name, e.M.seq), nil)
		})
	}
	if err != nil {
		c.settle(tk, false, retryAt)
		return fmt.Errorf("dead-lettering message %s to %s: %w", e.M.id, dlq, err)
	}
	c.b.logger.Debug("message dead-lettered", "topic", c.s.topic, "subscription", c.s.name,
		"id", e.M.id, "dead_letter_topic", dlq, "deliveries", e.Deliveries)
	c.settle(tk, true, time.Time{})
	return nil
}

// Close stops handing out messages, waits (bounded by ctx) for handed-out ones
// to be acked or nacked, then leaves the subscription. Messages still
// unsettled when ctx ends go back to the subscription for another consumer,
// and ctx's error is returned. Close is idempotent.
func (c *consumer) Close(ctx context.Context) error {
	s := c.s
	returned, err := keyshared.CloseConsumer(ctx, &s.mu, s.ks, c, c.hand, func(tk *token) { delete(s.out, tk.E) })
	c.b.tmu.Lock()
	delete(c.b.consumers, c)
	c.b.tmu.Unlock()
	if err != nil {
		c.b.logger.Warn("consumer closed with unsettled messages; returned them to the subscription",
			"topic", s.topic, "subscription", s.name, "messages", returned)
		return fmt.Errorf("closing consumer of %s/%s: %w", s.topic, s.name, err)
	}
	return nil
}
