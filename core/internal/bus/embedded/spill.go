package embedded

import (
	"errors"
	"fmt"

	"github.com/larkway/larkway/core/internal/bus"
)

// A subscription holds at most about Config.MemoryWindow pending messages
// in memory. Past it, it spills: a message published for it from then on
// stays on disk only (its pending record is written by the publish in any
// case) and is counted in spilled, and a refill reads the next ones back,
// in seq order, whenever the window is half empty. Memory then stays flat
// however deep the backlog, and a restart reads back only a window.
//
// The rules, all under topic.mu then subscription.mu:
//
//   - A publish decides where its message goes when it completes (keep):
//     in memory unless the subscription spills and the seq is at or past
//     its cursor. A spill starts with the cursor past every seq completed
//     so far (topic.done): publishes complete out of seq order, and every
//     pending message has a record on disk, so at and past the cursor the
//     records are exactly the spilled messages (and publishes in flight);
//     one completing below the cursor goes to memory.
//   - A refill reads the pending records from the cursor up to the lowest
//     seq still in flight (topic.inflight): a publish in flight may have
//     written its record and not yet decided, so the refill leaves it. It
//     moves the cursor past what it read, and ends the spill once no
//     spilled message is left: what is in flight then completes into
//     memory.
//
// Key order holds: what is loaded comes after what memory holds of the
// same subscription but redeliveries, as in bus/memory. A consumer that
// finds nothing it may take in memory (the window holds redeliveries
// waiting out their backoff, or keys other consumers hold) starts a refill
// too, up to twice the window; past that, messages on disk wait for the
// window to drain.

// keep decides whether the message seq, just stored for s, is held in
// memory (true) or left on disk for a refill. Callers hold t.mu and s.mu.
func (b *Bus) keep(s *subscription, seq uint64) bool {
	if !s.spilling && len(s.ks.Pending())+len(s.out) < b.cfg.MemoryWindow {
		return true
	}
	if !s.spilling {
		s.spilling, s.cursor = true, s.t.done+1
		b.logger.Debug("subscription spills to disk: its backlog passed the memory window",
			"topic", s.topic, "subscription", s.name, "window", b.cfg.MemoryWindow)
	}
	// A refill may have waited for this publish (it reads no further than
	// the lowest in flight).
	defer b.refillIfLow(s)
	if seq < s.cursor {
		return true
	}
	s.spilled++
	return false
}

// refillIfLow starts a refill of s when it spills and its window is half
// empty. Callers hold s.mu.
func (b *Bus) refillIfLow(s *subscription) {
	if len(s.ks.Pending()) < b.cfg.MemoryWindow/2 {
		b.startRefill(s)
	}
}

// refillIfStarved starts a refill of s when it spills and a consumer found
// nothing to take in memory, unless memory holds twice the window already.
// Callers hold s.mu.
func (b *Bus) refillIfStarved(s *subscription) {
	if len(s.ks.Pending()) < 2*b.cfg.MemoryWindow {
		b.startRefill(s)
	}
}

// startRefill starts a refill of s unless one is under way or s does not
// spill. Callers hold s.mu.
func (b *Bus) startRefill(s *subscription) {
	if !s.spilling {
		return
	}
	if s.refilling {
		s.rerun = true // the refill under way may have read too early
		return
	}
	b.refillMu.Lock()
	defer b.refillMu.Unlock()
	if b.noRefills {
		return
	}
	s.refilling = true
	b.bg.Add(1)
	go b.refill(s)
}

// refill reads up to half a window of s's spilled messages back into
// memory.
func (b *Bus) refill(s *subscription) {
	defer b.bg.Done()
	t := s.t
	t.mu.Lock()
	bound := t.seq + 1
	for seq := range t.inflight {
		bound = min(bound, seq)
	}
	t.mu.Unlock()
	s.mu.Lock()
	from, uncounted := s.cursor, s.uncounted
	s.mu.Unlock()

	n := max(b.cfg.MemoryWindow/2, 1)
	var entries []*entry
	next := from // a publish below the cursor is in flight: nothing to read yet
	var err error
	if bound > from {
		entries, next, err = b.readPending(s, from, bound, n, uncounted)
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refilling = false
	if err != nil {
		if !errors.Is(err, bus.ErrClosed) {
			// Left on disk: the next hand-out or publish tries again.
			b.logger.Error("reading spilled messages back failed", "topic", s.topic,
				"subscription", s.name, "from", from, "err", err)
		}
		return
	}
	for _, e := range entries {
		s.ks.Insert(e)
	}
	s.spilled -= int64(len(entries))
	s.cursor = next
	if s.spilled <= 0 && next >= bound {
		// (bound ≤ from too: nothing spilled, only publishes below the
		// cursor in flight, which complete into memory.)
		// Nothing left on disk only; what is in flight completes into
		// memory.
		s.spilling = false
		if s.spilled < 0 {
			b.logger.Error("spill accounting is off; backlog gauge corrected", "topic", s.topic,
				"subscription", s.name, "spilled", s.spilled)
			s.spilled = 0
		}
		b.logger.Debug("subscription back in memory", "topic", s.topic, "subscription", s.name)
	}
	if len(entries) > 0 {
		s.ks.Notify()
		// Still short (a long gap, or the bound moved): go on. A refill
		// that read nothing waits for a publish to complete (keep) or a
		// consumer to find nothing (refillIfStarved) instead of spinning.
		b.refillIfLow(s)
	}
	if s.rerun && !s.refilling {
		// Asked for while this one ran: run again for that asker.
		s.rerun = false
		b.startRefill(s)
	}
}

// readPending reads at most n of s's pending records with seq in
// [from, bound) and their messages' keys and sizes, and returns them and
// the seq to read from next (bound once the range is exhausted). Those
// below uncounted get a first delivery counted, as recover does.
func (b *Bus) readPending(s *subscription, from, bound uint64, n int, uncounted uint64) ([]*entry, uint64, error) {
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.dbClosed {
		return nil, 0, bus.ErrClosed
	}
	var entries []*entry
	next := bound
	err := b.scan(pendingKey(s.topic, s.name, from), pendingKey(s.topic, s.name, bound), func(k, v []byte) error {
		_, _, _, seq, err := parseKey(k)
		if err != nil {
			return err
		}
		if len(entries) == n {
			next = seq
			return errStopScan
		}
		p, err := decodePending(v)
		if err != nil {
			return err
		}
		rec, closer, err := b.db.Get(messageKey(s.topic, seq))
		if err != nil {
			return fmt.Errorf("subscription %s holds message %d of %s: %w", s.name, seq, s.topic, withDetails(err))
		}
		defer closer.Close()
		msg, _, err := decodeMessage(rec)
		if err != nil {
			return fmt.Errorf("decoding message %d of %s: %w", seq, s.topic, err)
		}
		m := newMessage(s.t, seq, msg.Key, int64(len(rec)))
		m.refs.Store(1)
		b.holdRecord(m, rec, false) // the hand-out need not read it again
		e := &entry{M: m, Deliveries: p.deliveries, ReadyAt: p.readyAt}
		if seq < uncounted && e.Deliveries == 0 {
			e.Deliveries = 1 // as recover counts those it loads
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil && !isStopScan(err) {
		for _, e := range entries {
			b.releaseRecord(e.M)
		}
		return nil, 0, err
	}
	return entries, next, nil
}
