package keyshared

import (
	"context"
	"fmt"
	"sync"

	"github.com/larkway/larkway/core/internal/bus"
)

// CheckSubscribe rejects a Subscribe call that cannot succeed.
func CheckSubscribe(ctx context.Context, opts bus.SubscribeOptions) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("subscribing to %s: %w", opts.Topic, err)
	}
	if opts.Topic == "" || opts.Subscription == "" {
		return fmt.Errorf("subscribing to %q as %q: topic and subscription are required", opts.Topic, opts.Subscription)
	}
	if opts.MaxDeliveries < 0 {
		return fmt.Errorf("subscribing to %s: negative MaxDeliveries %d", opts.Topic, opts.MaxDeliveries)
	}
	return nil
}

// TokenState is where one hand-out stands.
type TokenState int

const (
	Handing     TokenState = iota // its hand-out is being stored (a bus that stores hand-outs)
	Outstanding                   // with the caller
	Settling                      // its ack or nack is under way
	Settled
	Revoked // the consumer closed first; the entry went back to the subscription
)

// Token is one hand-out of an entry to a consumer; guarded by the
// subscription's mutex.
type Token[M Message] struct {
	E     *Entry[M]
	State TokenState
}

// Claim lets the first Ack or Nack of t through, moving t to next: act
// reports whether the caller must settle t; err is set when the consumer
// already gave t back.
func (t *Token[M]) Claim(next TokenState) (act bool, err error) {
	switch t.State {
	case Outstanding:
		t.State = next
		return true, nil
	case Revoked:
		t.State = Settled
		return false, bus.ErrClosed
	}
	return false, nil
}

// Handouts tracks one consumer's hand-outs through its close: Close stops
// new hand-outs at once, waits for the outstanding ones to be settled, then
// gives back what is left. Callers guard it with their subscription's mutex,
// but for WaitDrained, which they must call without it.
type Handouts[M Message] struct {
	inflight map[*Token[M]]struct{}
	closing  bool
	revoked  bool
	done     chan struct{} // closed when the close begins
	drained  chan struct{} // closed when closing and nothing is in flight
}

// NewHandouts returns the state of an open consumer.
func NewHandouts[M Message]() *Handouts[M] {
	return &Handouts[M]{
		inflight: make(map[*Token[M]]struct{}),
		done:     make(chan struct{}),
		drained:  make(chan struct{}),
	}
}

// Add records hand-out t.
func (h *Handouts[M]) Add(t *Token[M]) { h.inflight[t] = struct{}{} }

// Settle marks hand-out t settled and forgets it.
func (h *Handouts[M]) Settle(t *Token[M]) {
	t.State = Settled
	delete(h.inflight, t)
	h.checkDrained()
}

func (h *Handouts[M]) checkDrained() {
	if h.closing && len(h.inflight) == 0 {
		closeOnce(h.drained)
	}
}

// Closing reports whether the close has begun.
func (h *Handouts[M]) Closing() bool { return h.closing }

// Done is closed when the close begins.
func (h *Handouts[M]) Done() <-chan struct{} { return h.done }

// BeginClose starts the close; it reports whether this call did.
func (h *Handouts[M]) BeginClose() bool {
	if h.closing {
		return false
	}
	h.closing = true
	close(h.done)
	h.checkDrained()
	return true
}

// WaitDrained waits, bounded by ctx, for every hand-out to be settled; it
// returns ctx's error when ctx ends first.
func (h *Handouts[M]) WaitDrained(ctx context.Context) error {
	select {
	case <-h.drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Revoke, the first time it is called, revokes every outstanding hand-out
// and calls giveBack, which returns its entry to the subscription; it counts
// them, and first reports whether this call did so. A hand-out whose store
// or settling is under way is left to the call carrying it out.
func (h *Handouts[M]) Revoke(giveBack func(*Token[M])) (n int, first bool) {
	if h.revoked {
		return 0, false
	}
	h.revoked = true
	for t := range h.inflight {
		if t.State != Outstanding {
			continue
		}
		t.State = Revoked
		delete(h.inflight, t)
		giveBack(t)
		n++
	}
	h.checkDrained()
	return n, true
}

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// Len counts the hand-outs not yet settled.
func (h *Handouts[M]) Len() int { return len(h.inflight) }

// CloseConsumer is the body of a consumer's Close. It stops handing out to c
// at once (keys hashed to c move to the other consumers), waits, bounded by
// ctx, for c's hand-outs to be settled, then returns the entries still
// outstanding to the subscription, calling giveBack (when not nil) on each
// for the bus's own bookkeeping. err, set when any were returned, wraps
// ctx's error. mu guards s and h; CloseConsumer is idempotent.
func CloseConsumer[C comparable, M Message](ctx context.Context, mu sync.Locker, s *State[C, M], c C, h *Handouts[M], giveBack func(*Token[M])) (returned int, err error) {
	mu.Lock()
	if h.BeginClose() {
		s.Leave(c)
	}
	mu.Unlock()

	waitErr := h.WaitDrained(ctx)

	mu.Lock()
	returned, first := h.Revoke(func(t *Token[M]) {
		if giveBack != nil {
			giveBack(t)
		}
		s.Release(t.E)
		s.Insert(t.E)
	})
	if first {
		s.Notify()
	}
	mu.Unlock()
	if returned > 0 {
		return returned, fmt.Errorf("%d messages unsettled: %w", returned, waitErr)
	}
	return 0, nil
}
