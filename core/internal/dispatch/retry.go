package dispatch

import (
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/larkway/larkway/core/internal/bus"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// retryDelay is the redelivery delay after a RETRY result: the plugin's
// retry_after when it asks for longer than the backoff, at most limit;
// otherwise the backoff. A missing, negative or invalid retry_after asks
// for nothing. The result is never shorter than the backoff: the plugin
// may only slow its retries down.
func retryDelay(retryAfter *durationpb.Duration, backoff, limit time.Duration) time.Duration {
	if retryAfter == nil || retryAfter.CheckValid() != nil {
		return backoff
	}
	// AsDuration saturates what time.Duration cannot hold.
	return max(backoff, min(retryAfter.AsDuration(), limit))
}

// retryWait is how long a retry is held back before its nack: the part of
// retryDelay the bus's own backoff, which follows the nack, does not cover.
// Only a RETRY result's retry_after asks for any.
func (s *Session) retryWait(out Outcome, res *pluginv1.Result, attempt int) time.Duration {
	ra := res.GetRetryAfter()
	if out != OutcomeRetry || ra == nil {
		return 0
	}
	backoff := s.d.backoff(attempt)
	return retryDelay(ra, backoff, s.d.cfg.MaxRetryAfter) - backoff
}

// holds are a route's retries waiting out a plugin's retry_after. The bus
// cannot delay one message's redelivery beyond its backoff (Pulsar's nack
// delay is per consumer), so the delivery is held, unacknowledged, and
// nacked when the wait is over; the worker and the chat's next events do not
// wait for it. A held delivery counts toward the bus's unacknowledged
// messages, which Config.MaxRetryAfter bounds in time.
type holds struct {
	after func(time.Duration, func()) func() bool

	mu   sync.Mutex
	held map[*bus.Delivery]func() bool // stops the delivery's timer
}

func newHolds(after func(time.Duration, func()) func() bool) *holds {
	return &holds{after: after, held: map[*bus.Delivery]func() bool{}}
}

// nackAfter nacks del once wait has passed (at once if wait ≤ 0).
func (h *holds) nackAfter(del *bus.Delivery, wait time.Duration) {
	if wait <= 0 {
		_ = del.Nack()
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held[del] = h.after(wait, func() {
		if h.release(del) {
			_ = del.Nack()
		}
	})
}

// release reports whether del was still held, and holds it no longer.
func (h *holds) release(del *bus.Delivery) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.held[del]
	delete(h.held, del)
	return ok
}

// flush nacks every held delivery now: the route is stopping, and its
// consumers wait for what they handed out. The redelivery then waits only
// for the bus's backoff.
func (h *holds) flush() {
	h.mu.Lock()
	held := h.held
	h.held = map[*bus.Delivery]func() bool{}
	h.mu.Unlock()
	for del, stop := range held {
		stop()
		_ = del.Nack()
	}
}

// count is the number of deliveries held.
func (h *holds) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.held)
}
