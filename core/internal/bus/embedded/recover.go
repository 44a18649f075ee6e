package embedded

import (
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// cleanKey marks a store closed cleanly: Close wrote the counts of the
// first deliveries it had handed out, which are otherwise not written.
var cleanKey = []byte{kindClean}

// takeCleanMarker reports whether the store was closed cleanly, and deletes
// the marker (the caller makes that durable before handing anything out).
func takeCleanMarker(db *pebble.DB) (bool, error) {
	_, closer, err := db.Get(cleanKey)
	if err == pebble.ErrNotFound {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading the clean-close marker: %w", err)
	}
	_ = closer.Close()
	if err := db.Delete(cleanKey, pebble.NoSync); err != nil {
		return false, fmt.Errorf("deleting the clean-close marker: %w", err)
	}
	return true, nil
}

// writeCleanClose writes, with the deferred acks, the delivery count of
// every pending message handed out (those handed out once and not settled
// have none on disk yet), and the
// clean-close marker, and fsyncs them. Consumers are closed: nothing is
// handed out meanwhile.
func (b *Bus) writeCleanClose() error {
	batch := b.db.NewBatch()
	defer batch.Close()
	b.tmu.Lock()
	for _, t := range b.topics {
		t.mu.Lock()
		for _, s := range t.subs {
			s.mu.Lock()
			for _, e := range s.ks.Pending() {
				if e.Deliveries > 0 { // rewriting a count already written is harmless
					_ = batch.Set(pendingKey(t.name, s.name, e.M.seq), encodePending(pending{deliveries: e.Deliveries, readyAt: e.ReadyAt}), nil)
				}
			}
			s.mu.Unlock()
		}
		t.mu.Unlock()
	}
	b.tmu.Unlock()
	_ = batch.Set(cleanKey, nil, nil)
	if err := b.write(batch, true); err != nil {
		return fmt.Errorf("recording a clean close: %w", err)
	}
	return nil
}

// recover rebuilds the in-memory state from the store: topics and their
// last seqs, subscriptions, and each subscription's pending messages with
// their delivery counts and redelivery times. It reads every record, so a
// checksum failure anywhere in the live data stops Open with Pebble's
// report of the file and offset instead of surfacing later, or never.
// After a crash (not clean), a pending message with no delivery counted
// may have been handed out once (first deliveries are not written): it is
// counted as delivered once.
func (b *Bus) recover(clean bool) error {
	// Pass one: the small records ('p', 's', 't', in key order).
	type ref struct {
		s *subscription
		e *entry
	}
	refs := make(map[*topic]map[uint64][]ref)
	err := b.scan([]byte{kindPending}, []byte{kindTopic + 1}, func(k, v []byte) error {
		kind, topicName, subName, seq, err := parseKey(k)
		if err != nil {
			return err
		}
		t := b.topicFor(topicName)
		switch kind {
		case kindPending:
			p, err := decodePending(v)
			if err != nil {
				return err
			}
			s := t.subs[subName]
			if s == nil {
				s = newSubscription(t, subName, b.seed)
				t.subs[subName] = s
			}
			if !clean {
				s.uncounted = seq + 1 // pending records are read in seq order
			}
			if s.spilling || len(s.ks.Pending()) >= b.cfg.MemoryWindow {
				// Past the window: left on disk for a refill (spill.go).
				if !s.spilling {
					s.spilling, s.cursor = true, seq
				}
				s.spilled++
				return nil
			}
			e := &entry{Deliveries: p.deliveries, ReadyAt: p.readyAt}
			if !clean && e.Deliveries == 0 {
				e.Deliveries = 1
			}
			s.ks.Append(e) // key order is seq order; e.M comes in pass two
			if refs[t] == nil {
				refs[t] = make(map[uint64][]ref)
			}
			refs[t][seq] = append(refs[t][seq], ref{s, e})
		case kindSubscription:
			start, err := decodeSeq(v)
			if err != nil {
				return err
			}
			if t.subs[subName] == nil {
				t.subs[subName] = newSubscription(t, subName, b.seed)
			}
			t.seq = max(t.seq, start)
		case kindTopic:
			low, err := decodeSeq(v)
			if err != nil {
				return err
			}
			t.low = low
			t.seq = max(t.seq, low)
		default:
			return fmt.Errorf("%w: unknown record kind %q", errCorrupt, kind)
		}
		return nil
	})
	if err != nil {
		return err
	}

	// Pass two: the messages. Each is decoded (which checks it whole); the
	// ones some subscription holds get their in-memory entry.
	err = b.scan([]byte{kindMessage}, []byte{kindMessage + 1}, func(k, v []byte) error {
		_, topicName, _, seq, err := parseKey(k)
		if err != nil {
			return err
		}
		msg, _, err := decodeMessage(v)
		if err != nil {
			return err
		}
		t := b.topicFor(topicName)
		t.seq = max(t.seq, seq)
		m := newMessage(t, seq, msg.Key, int64(len(v)))
		rs := refs[t][seq]
		if len(rs) == 0 {
			t.histBytes.Add(m.size)
			return nil
		}
		delete(refs[t], seq)
		m.refs.Store(int32(len(rs)))
		b.holdRecord(m, v, false) // the first hand-outs need not read it again
		for _, r := range rs {
			r.e.M = m
		}
		return nil
	})
	if err != nil {
		return err
	}
	for t, seqs := range refs {
		for seq, rs := range seqs {
			return fmt.Errorf("%w: subscription %s of %s holds message %d, which is not stored", errCorrupt, rs[0].s.name, t.name, seq)
		}
	}
	n, spilled := 0, int64(0)
	for _, t := range b.topics {
		t.done = t.seq // nothing is in flight
		for _, s := range t.subs {
			n += len(s.ks.Pending())
			spilled += s.spilled
		}
	}
	b.logger.Info("embedded bus recovered", "dir", b.cfg.Dir, "topics", len(b.topics), "pending", n,
		"pending_on_disk_only", spilled)
	return nil
}

// scan calls fn for every record in [lower, upper), in key order.
func (b *Bus) scan(lower, upper []byte, fn func(k, v []byte) error) error {
	it, err := b.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err == nil {
			err = fn(it.Key(), v)
		}
		if err != nil {
			err = fmt.Errorf("reading record %q: %w", it.Key(), withDetails(err))
			_ = it.Close() // after the key is formatted: Close recycles it
			return err
		}
	}
	if err := it.Error(); err != nil {
		_ = it.Close()
		return withDetails(err)
	}
	return it.Close()
}

// errStopScan ends a scan early without error.
var errStopScan = errors.New("stop scanning")

func isStopScan(err error) bool { return errors.Is(err, errStopScan) }

// retentionLoop deletes expired history and state every RetentionInterval
// until Close.
func (b *Bus) retentionLoop() {
	defer b.bg.Done()
	tick := time.NewTicker(b.cfg.RetentionInterval)
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
			if err := b.enforceRetention(); err != nil {
				b.logger.Warn("enforcing retention failed; will retry", "err", err)
			}
			if err := b.sweepState(b.now()); err != nil {
				b.logger.Warn("deleting expired state failed; will retry", "err", err)
			}
		}
	}
}

// enforceRetention deletes, per topic, the history (messages below the
// lowest seq any subscription holds) that is older than RetentionAge or
// beyond RetentionBytes, oldest first.
func (b *Bus) enforceRetention() error {
	floors := b.floors()
	for t, floor := range floors {
		if err := b.trim(t, floor); err != nil {
			return fmt.Errorf("trimming %s: %w", t.name, err)
		}
	}
	return nil
}

// floors returns each topic's floor: the lowest seq some subscription still
// holds, or one past the last seq when none holds any. It holds mu for
// writing, so no publish is between its seq and its hand-over.
func (b *Bus) floors() map[*topic]uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.tmu.Lock()
	defer b.tmu.Unlock()
	floors := make(map[*topic]uint64, len(b.topics))
	for _, t := range b.topics {
		t.mu.Lock()
		floor := t.seq + 1
		for _, s := range t.subs {
			s.mu.Lock()
			if f := s.floor(); f != 0 && f < floor {
				floor = f
			}
			s.mu.Unlock()
		}
		t.mu.Unlock()
		floors[t] = floor
	}
	return floors
}

// trim deletes t's expired history below floor. Only the retention
// goroutine (or a test, alone) calls it, so t.low needs no lock.
func (b *Bus) trim(t *topic, floor uint64) error {
	if floor <= t.low+1 {
		return nil
	}
	cutoff := b.now().Add(-b.cfg.RetentionAge)
	remaining := t.histBytes.Load()
	var cut uint64
	var freed int64
	err := b.scan(messageKey(t.name, t.low+1), messageKey(t.name, floor), func(k, v []byte) error {
		published, err := publishedAt(v)
		if err != nil {
			return err
		}
		if !published.Before(cutoff) && remaining <= b.cfg.RetentionBytes {
			return errStopScan
		}
		_, _, _, seq, err := parseKey(k)
		if err != nil {
			return err
		}
		cut = seq
		remaining -= int64(len(v))
		freed += int64(len(v))
		return nil
	})
	if err != nil && !isStopScan(err) {
		return err
	}
	if cut == 0 {
		return nil
	}
	batch := b.db.NewBatch()
	defer batch.Close()
	_ = batch.DeleteRange(messageKey(t.name, t.low+1), messageKey(t.name, cut+1), nil)
	_ = batch.Set(topicKey(t.name), encodeSeq(cut), nil)
	if err := b.write(batch, false); err != nil {
		return err
	}
	b.logger.Debug("history deleted", "topic", t.name, "through", cut, "bytes", freed)
	t.low = cut
	t.histBytes.Add(-freed)
	return nil
}
