package embedded

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/larkway/larkway/core/internal/bus"
)

// The in-memory side mirrors bus/memory (rendezvous hashing of keys over a
// subscription's consumers, a key pinned to the consumer holding its
// in-flight messages); every change of a message's state on a subscription
// is written to the store before it takes effect in memory.

// entry is a message's state within one subscription.
type entry struct {
	m          *message
	deliveries int
	readyAt    time.Time // redelivery not before; zero when ready
}

type subscription struct {
	topic string
	name  string
	seed  maphash.Seed

	mu      sync.Mutex
	pending []*entry             // not handed out, ordered by seq
	out     map[*entry]struct{}  // handed out, not yet settled
	owners  map[string]*keyOwner // keys with messages handed out
	active  []*consumer          // open consumers, not closing
	changed chan struct{}        // closed and replaced on a change while watched
	watched bool                 // a Receive waits on changed
}

func newSubscription(topic, name string, seed maphash.Seed) *subscription {
	return &subscription{
		topic:   topic,
		name:    name,
		seed:    seed,
		out:     make(map[*entry]struct{}),
		owners:  make(map[string]*keyOwner),
		changed: make(chan struct{}),
	}
}

// keyOwner pins a key to the consumer holding its in-flight messages.
type keyOwner struct {
	c        *consumer
	inflight int
}

// notify wakes every Receive waiting on s. Callers hold s.mu.
func (s *subscription) notify() {
	if !s.watched {
		return
	}
	s.watched = false
	close(s.changed)
	s.changed = make(chan struct{})
}

// floor is the lowest seq s still holds, or 0 when it holds none. Callers
// hold s.mu.
func (s *subscription) floor() uint64 {
	var low uint64
	if len(s.pending) > 0 {
		low = s.pending[0].m.seq
	}
	for e := range s.out {
		if low == 0 || e.m.seq < low {
			low = e.m.seq
		}
	}
	return low
}

// pick returns the open consumer that key hashes to (rendezvous hashing), or
// nil when there is none. Callers hold s.mu.
func (s *subscription) pick(key string) *consumer {
	h := maphash.String(s.seed, key)
	var best *consumer
	var bestScore uint64
	for _, c := range s.active {
		if score := mix(h ^ c.salt); best == nil || score > bestScore {
			best, bestScore = c, score
		}
	}
	return best
}

// mix is the splitmix64 finalizer.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// next finds the first pending entry c may take now. When there is none it
// returns the earliest time a delayed entry becomes ready (zero if none).
// Callers hold s.mu.
func (s *subscription) next(c *consumer, now time.Time) (int, time.Time) {
	var wake time.Time
	var picked map[string]bool // keys already hashed during this scan
	for i, e := range s.pending {
		if e.readyAt.After(now) {
			if wake.IsZero() || e.readyAt.Before(wake) {
				wake = e.readyAt
			}
			continue
		}
		key := e.m.key
		if o := s.owners[key]; o != nil {
			if o.c == c {
				return i, time.Time{}
			}
			continue
		}
		if len(s.active) == 1 {
			if s.active[0] == c {
				return i, time.Time{}
			}
			continue
		}
		mine, ok := picked[key]
		if !ok {
			mine = s.pick(key) == c
			if picked == nil {
				picked = make(map[string]bool)
			}
			picked[key] = mine
		}
		if mine {
			return i, time.Time{}
		}
	}
	return -1, wake
}

// insert puts e among the pending entries in seq order: publishes that
// commit out of seq order, and redeliveries, land in place. Callers hold
// s.mu.
func (s *subscription) insert(e *entry) {
	if n := len(s.pending); n == 0 || s.pending[n-1].m.seq < e.m.seq {
		s.pending = append(s.pending, e)
		return
	}
	i, _ := slices.BinarySearchFunc(s.pending, e.m.seq, func(p *entry, seq uint64) int {
		switch {
		case p.m.seq < seq:
			return -1
		case p.m.seq > seq:
			return 1
		}
		return 0
	})
	s.pending = slices.Insert(s.pending, i, e)
}

// release unpins e's key from its consumer once nothing of it is in flight.
// Callers hold s.mu.
func (s *subscription) release(e *entry) {
	key := e.m.key
	if o := s.owners[key]; o != nil {
		if o.inflight--; o.inflight <= 0 {
			delete(s.owners, key)
		}
	}
}

type tokenState int

const (
	handing     tokenState = iota // its hand-out is being written
	outstanding                   // with the caller
	settling                      // its ack or nack is being written
	settled
	revoked // the consumer closed first; the entry went back to the subscription
)

// token is one hand-out of an entry to a consumer; guarded by the
// subscription's mu.
type token struct {
	e     *entry
	state tokenState
}

type consumer struct {
	b    *Bus
	t    *topic
	s    *subscription
	opts bus.SubscribeOptions
	salt uint64

	// Guarded by s.mu.
	inflight map[*token]struct{}
	closing  bool
	removed  bool
	done     chan struct{} // closed when Close begins
	drained  chan struct{} // closed when closing and nothing is in flight
}

var _ bus.Consumer = (*consumer)(nil)

// Receive hands out the next message for c.
func (c *consumer) Receive(ctx context.Context) (*bus.Delivery, error) {
	s := c.s
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s.mu.Lock()
		if c.closing {
			s.mu.Unlock()
			return nil, bus.ErrClosed
		}
		i, wake := s.next(c, c.b.now())
		if i >= 0 {
			tk := c.take(i)
			s.mu.Unlock()
			d, err := c.deliver(tk)
			if err == nil || errors.Is(err, bus.ErrClosed) {
				return d, err
			}
			// The store could not give the message back: it stays pending,
			// redelivered after a backoff; the error names what failed
			// where. Other keys go on meanwhile.
			c.b.logger.Error("reading a stored message failed; will retry", "topic", s.topic,
				"subscription", s.name, "id", tk.e.m.id, "err", err)
			continue
		}
		changed := s.changed
		s.watched = true
		s.mu.Unlock()

		var timer *time.Timer
		var fire <-chan time.Time
		if !wake.IsZero() {
			timer = time.NewTimer(time.Until(wake))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
		case <-c.done:
		case <-changed:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// take removes pending entry i and marks it handed to c. Callers hold s.mu.
func (c *consumer) take(i int) *token {
	s := c.s
	e := s.pending[i]
	// Entries are taken from near the front: shift the i before it one
	// place right and drop the first slot, O(i) rather than O(len).
	copy(s.pending[1:i+1], s.pending[:i])
	s.pending[0] = nil
	s.pending = s.pending[1:]
	e.deliveries++
	e.readyAt = time.Time{}
	o := s.owners[e.m.key]
	if o == nil {
		o = &keyOwner{c: c}
		s.owners[e.m.key] = o
	}
	o.inflight++
	s.out[e] = struct{}{}
	tk := &token{e: e, state: handing}
	c.inflight[tk] = struct{}{}
	return tk
}

// deliver writes tk's delivery count, reads its message and returns the
// delivery. On failure the entry goes back to the subscription.
func (c *consumer) deliver(tk *token) (*bus.Delivery, error) {
	s, e := c.s, tk.e
	batch := c.b.db.NewBatch()
	_ = batch.Set(pendingKey(s.topic, s.name, e.m.seq), encodePending(pending{deliveries: e.deliveries}), nil)
	err := c.b.write(batch, false)
	_ = batch.Close()
	written := err == nil
	var msg bus.Message
	var published time.Time
	if err == nil {
		msg, published, err = c.b.load(s.topic, e.m.seq)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || c.closing {
		var readyAt time.Time
		if !written {
			e.deliveries-- // not counted on disk either
		} else if err != nil && !errors.Is(err, bus.ErrClosed) {
			readyAt = c.b.now().Add(c.opts.BackoffFor(e.deliveries))
		}
		c.finish(tk, false, readyAt)
		if err == nil {
			err = bus.ErrClosed
		}
		return nil, err
	}
	tk.state = outstanding
	return bus.NewDelivery(msg, e.m.id, s.topic, e.deliveries, published,
		func() error { return c.ack(tk) },
		func() error { return c.nack(tk) }), nil
}

// claim marks tk being settled by its first Ack or Nack. It reports whether
// the caller must act; err is set when the consumer already gave tk back.
func (c *consumer) claim(tk *token) (act bool, err error) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	switch tk.state {
	case outstanding:
		tk.state = settling
		return true, nil
	case revoked:
		tk.state = settled
		return false, bus.ErrClosed
	}
	return false, nil
}

// finish ends tk's hand-out: the entry is dropped (ack) or goes back to the
// subscription, ready at readyAt (nack). Callers hold s.mu.
func (c *consumer) finish(tk *token, ack bool, readyAt time.Time) {
	s := c.s
	tk.state = settled
	delete(c.inflight, tk)
	delete(s.out, tk.e)
	s.release(tk.e)
	if ack {
		tk.e.m.drop()
	} else {
		tk.e.readyAt = readyAt
		s.insert(tk.e)
	}
	if c.closing && len(c.inflight) == 0 {
		closeOnce(c.drained)
	}
	s.notify()
}

func (c *consumer) settle(tk *token, ack bool, readyAt time.Time) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	c.finish(tk, ack, readyAt)
}

func (c *consumer) ack(tk *token) error {
	act, err := c.claim(tk)
	if err != nil {
		return fmt.Errorf("acknowledging message %s: %w", tk.e.m.id, err)
	}
	if !act {
		return nil
	}
	batch := c.b.db.NewBatch()
	_ = batch.Delete(pendingKey(c.s.topic, c.s.name, tk.e.m.seq), nil)
	err = c.b.write(batch, false)
	_ = batch.Close()
	if err != nil {
		// Still pending on disk: keep it pending here too.
		c.settle(tk, false, time.Time{})
		return fmt.Errorf("acknowledging message %s: %w", tk.e.m.id, err)
	}
	c.settle(tk, true, time.Time{})
	return nil
}

func (c *consumer) nack(tk *token) error {
	act, err := c.claim(tk)
	if err != nil {
		return fmt.Errorf("negatively acknowledging message %s: %w", tk.e.m.id, err)
	}
	if !act {
		return nil
	}
	e := tk.e
	retryAt := c.b.now().Add(c.opts.BackoffFor(e.deliveries))
	if c.opts.MaxDeliveries <= 0 || e.deliveries < c.opts.MaxDeliveries {
		batch := c.b.db.NewBatch()
		_ = batch.Set(pendingKey(c.s.topic, c.s.name, e.m.seq), encodePending(pending{deliveries: e.deliveries, readyAt: retryAt}), nil)
		err := c.b.write(batch, false)
		_ = batch.Close()
		// Redelivered either way: on failure the store still has it
		// pending, without the backoff.
		c.settle(tk, false, retryAt)
		if err != nil {
			return fmt.Errorf("negatively acknowledging message %s: %w", e.m.id, err)
		}
		return nil
	}

	// Dead-letter: the copy and the removal from this subscription are one
	// batch, so a crash leaves exactly one of the two. The dead-letter topic
	// may be this very topic: publish takes its locks, not s.mu.
	dlq := c.opts.DeadLetter()
	msg, _, err := c.b.load(c.s.topic, e.m.seq)
	if err == nil {
		err = c.b.publish(context.Background(), dlq, msg, func(batch *pebble.Batch) {
			_ = batch.Delete(pendingKey(c.s.topic, c.s.name, e.m.seq), nil)
		})
	}
	if err != nil {
		c.settle(tk, false, retryAt)
		return fmt.Errorf("dead-lettering message %s to %s: %w", e.m.id, dlq, err)
	}
	c.b.logger.Debug("message dead-lettered", "topic", c.s.topic, "subscription", c.s.name,
		"id", e.m.id, "dead_letter_topic", dlq, "deliveries", e.deliveries)
	c.settle(tk, true, time.Time{})
	return nil
}

// Close stops handing out messages, waits (bounded by ctx) for handed-out ones
// to be acked or nacked, then leaves the subscription. Messages still
// unsettled when ctx ends go back to the subscription for another consumer,
// and ctx's error is returned. Close is idempotent.
func (c *consumer) Close(ctx context.Context) error {
	s := c.s
	s.mu.Lock()
	if !c.closing {
		c.closing = true
		close(c.done)
		s.active = slices.DeleteFunc(s.active, func(o *consumer) bool { return o == c })
		if len(c.inflight) == 0 {
			closeOnce(c.drained)
		}
		s.notify() // keys hashed to c move to the other consumers
	}
	s.mu.Unlock()

	var waitErr error
	select {
	case <-c.drained:
	case <-ctx.Done():
		waitErr = ctx.Err()
	}

	s.mu.Lock()
	returned := 0
	if !c.removed {
		c.removed = true
		for tk := range c.inflight {
			if tk.state != outstanding {
				continue // a write for it is under way; its writer finishes it
			}
			tk.state = revoked
			delete(c.inflight, tk)
			delete(s.out, tk.e)
			s.release(tk.e)
			s.insert(tk.e)
			returned++
		}
		if len(c.inflight) == 0 {
			closeOnce(c.drained)
		}
		s.notify()
	}
	s.mu.Unlock()

	c.b.tmu.Lock()
	delete(c.b.consumers, c)
	c.b.tmu.Unlock()

	if returned > 0 {
		c.b.logger.Warn("consumer closed with unsettled messages; returned them to the subscription",
			"topic", s.topic, "subscription", s.name, "messages", returned)
		return fmt.Errorf("closing consumer of %s/%s: %d messages unsettled: %w", s.topic, s.name, returned, waitErr)
	}
	return nil
}

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}
