package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/dispatch/cardtag"
	"github.com/larkway/larkway/core/internal/envelope"
)

// ErrNoShadow is returned when replaying into a plugin that runs no shadow.
var ErrNoShadow = errors.New("no shadow running: start one with plugin shadow first")

// ReplayStats count a replay into a shadow.
type ReplayStats struct {
	// Events read from the history in the time range; Replayed of them were
	// for the selected chats and handed to both versions.
	Events   int64 `json:"events"`
	Replayed int64 `json:"replayed"`
	// Differ are the replayed events whose candidate actions differ from
	// the baseline's.
	Differ int64 `json:"differ"`
}

// replayWorkers handle replayed events in parallel, a chat's in order.
const replayWorkers = 8

// ReplayToShadow feeds stored events (history calls its argument for each,
// in publish order) to the route's shadow candidate and to baseline, an
// instance of the stable version that no route delivers to (its state in a
// namespace of its own), for the chats split selects. Neither version's
// actions are performed, and no delivery is settled: each event's pair is
// recorded, with source "replay", like a live shadow's.
func (r *Route) ReplayToShadow(ctx context.Context, baseline Plugin, split Split,
	history func(ctx context.Context, fn func(bus.Message) error) error) (ReplayStats, error) {
	var st ReplayStats
	cand, mode, _ := r.Candidate()
	if cand == nil || mode != ModeShadow {
		return st, ErrNoShadow
	}
	base, err := r.openAs(ctx, baseline, RoleBaseline)
	if err != nil {
		return st, fmt.Errorf("opening the baseline for a replay: %w", err)
	}
	defer base.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var mu sync.Mutex
	queues := make([]chan *bus.Delivery, replayWorkers)
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan *bus.Delivery, 64)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for del := range queues[i] {
				if ctx.Err() != nil {
					continue
				}
				if !cand.st.Acquire() {
					cancel(ErrNoShadow) // the shadow stopped
					continue
				}
				differs := cand.shadow(ctx, del, base.dryRun(ctx, del))
				cand.st.Release()
				mu.Lock()
				st.Replayed++
				if differs {
					st.Differ++
				}
				mu.Unlock()
			}
		}()
	}
	n := 0
	err = history(ctx, func(m bus.Message) error {
		mu.Lock()
		st.Events++
		mu.Unlock()
		if !split.Has(m.Key) {
			return nil
		}
		props := make(map[string]string, len(m.Properties)+1)
		for k, v := range m.Properties {
			props[k] = v
		}
		props[PropShadowSource] = "replay"
		n++
		del := bus.NewDelivery(bus.Message{Key: m.Key, Payload: m.Payload, Properties: props}, fmt.Sprint(n), "", 1, time.Time{},
			func() error { return nil }, func() error { return nil })
		select {
		case queues[ChatBucket(m.Key)%replayWorkers] <- del:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	if err == nil {
		err = context.Cause(ctx) // the shadow stopped, or the caller gave up
	}
	return st, err
}

// dryRun delivers an event to the session and returns what it answered,
// without claiming, settling or performing anything: the baseline of a
// replay.
func (s *Session) dryRun(ctx context.Context, del *bus.Delivery) processed {
	res := processed{delivered: true, version: s.Version()}
	head, err := envelope.DecodeHead(del.Payload)
	if err != nil || !s.matcher.Match(&head) {
		res.out = OutcomeDone
		return res
	}
	start := time.Now()
	result, _, out := s.deliver(ctx, del)
	s.observe(out, time.Since(start))
	res.out = out
	if out == OutcomeDone {
		res.actions = cardtag.Actions(result.GetActions(), s.name)
	}
	return res
}
