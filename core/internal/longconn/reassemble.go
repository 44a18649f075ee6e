package longconn

import (
	"errors"
	"fmt"
	"time"
)

// Reassembly errors.
var (
	errNoMessageID   = errors.New("fragment without message_id")
	errBadSeq        = errors.New("fragment seq outside 0..sum-1")
	errSumMismatch   = errors.New("fragment sum differs from the message's earlier fragments")
	errTooManyParts  = errors.New("too many fragments")
	errTooLarge      = errors.New("reassembled message too large")
	errDuplicatePart = errors.New("duplicate fragment")
)

// maxFragments bounds sum: Lark splits at tens of KB, so a thousand parts
// is far beyond any real event.
const maxFragments = 1024

// reassembler joins fragmented payloads by message_id. It belongs to one
// connection's read loop and is not safe for concurrent use — by design: a
// single goroutine owns it, so no lock is needed and none can be forgotten.
// It is bounded in size (maxBytes per message, maxPending messages) and in
// time (a message's fragments are dropped ttl after its first one arrived).
type reassembler struct {
	maxBytes   int
	maxPending int
	ttl        time.Duration
	pending    map[string]*partial
	// dropped is told about messages given up on (expired or evicted).
	dropped func(msgID string, got, sum int, reason string)
}

type partial struct {
	parts [][]byte
	got   int
	size  int
	first time.Time
}

func newReassembler(maxBytes, maxPending int, ttl time.Duration, dropped func(msgID string, got, sum int, reason string)) *reassembler {
	if dropped == nil {
		dropped = func(string, int, int, string) {}
	}
	return &reassembler{maxBytes: maxBytes, maxPending: maxPending, ttl: ttl, pending: make(map[string]*partial), dropped: dropped}
}

// add stores fragment seq of sum. It returns the whole payload when this
// fragment completes the message, nil when more are due, or an error for a
// fragment that cannot be used (the message's other fragments are dropped
// when the message itself is broken).
func (r *reassembler) add(msgID string, sum, seq int, p []byte, now time.Time) ([]byte, error) {
	r.expire(now)
	switch {
	case msgID == "":
		return nil, errNoMessageID
	case sum > maxFragments:
		return nil, fmt.Errorf("%w: sum %d > %d", errTooManyParts, sum, maxFragments)
	case seq < 0 || seq >= sum:
		return nil, fmt.Errorf("%w: seq %d, sum %d", errBadSeq, seq, sum)
	}
	m := r.pending[msgID]
	if m == nil {
		if len(r.pending) >= r.maxPending {
			r.evictOldest()
		}
		m = &partial{parts: make([][]byte, sum), first: now}
		r.pending[msgID] = m
	}
	if len(m.parts) != sum {
		delete(r.pending, msgID)
		return nil, fmt.Errorf("%w: %d, earlier %d", errSumMismatch, sum, len(m.parts))
	}
	if m.parts[seq] != nil {
		return nil, fmt.Errorf("%w: seq %d", errDuplicatePart, seq)
	}
	if m.size+len(p) > r.maxBytes {
		delete(r.pending, msgID)
		return nil, fmt.Errorf("%w: more than %d bytes", errTooLarge, r.maxBytes)
	}
	if p == nil {
		p = []byte{}
	}
	m.parts[seq] = p
	m.got++
	m.size += len(p)
	if m.got < sum {
		return nil, nil
	}
	delete(r.pending, msgID)
	out := make([]byte, 0, m.size)
	for _, part := range m.parts {
		out = append(out, part...)
	}
	return out, nil
}

// expire drops messages whose first fragment is older than ttl.
func (r *reassembler) expire(now time.Time) {
	for id, m := range r.pending {
		if now.Sub(m.first) > r.ttl {
			delete(r.pending, id)
			r.dropped(id, m.got, len(m.parts), "fragments expired")
		}
	}
}

func (r *reassembler) evictOldest() {
	var oldest string
	var at time.Time
	for id, m := range r.pending {
		if oldest == "" || m.first.Before(at) {
			oldest, at = id, m.first
		}
	}
	m := r.pending[oldest]
	delete(r.pending, oldest)
	r.dropped(oldest, m.got, len(m.parts), "too many messages being reassembled")
}

// pendingCount is for tests.
func (r *reassembler) pendingCount() int { return len(r.pending) }
