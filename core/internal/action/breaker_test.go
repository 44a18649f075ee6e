package action

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/larkway/larkway/core/internal/testenv"
)

// breakerStores builds each kind of breaker store twice over the same
// state (for Redis, two replicas; in memory, the same store).
func breakerStores(t *testing.T, s BreakerSettings) map[string][2]breakerStore {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	prefix := testenv.Name(t, "lw") + ":"
	noop := func(string, int) {}
	mem := newMemoryBreakers(s, noop)
	return map[string][2]breakerStore{
		"memory (gobreaker)": {mem, mem},
		"redis": {&redisBreakers{client: rdb, prefix: prefix, settings: s, onState: noop},
			&redisBreakers{client: rdb, prefix: prefix, settings: s, onState: noop}},
	}
}

// TestBreakers drives both breaker stores through the same script: they
// behave the same.
func TestBreakers(t *testing.T) {
	settings := BreakerSettings{FailureThreshold: 3, OpenFor: 200 * time.Millisecond, HalfOpenProbes: 1}
	for name, stores := range breakerStores(t, settings) {
		t.Run(name, func(t *testing.T) {
			a, b := stores[0], stores[1]
			ctx := t.Context()
			call := func(s breakerStore, o callOutcome) int {
				t.Helper()
				done, _, _, err := s.allow(ctx, "cli_a|reply")
				if err != nil {
					t.Fatalf("allow: %v", err)
				}
				return done(ctx, o)
			}
			refused := func(s breakerStore) time.Duration {
				t.Helper()
				_, _, retry, err := s.allow(ctx, "cli_a|reply")
				if !errors.Is(err, ErrBreakerOpen) {
					t.Fatalf("allow = %v, want ErrBreakerOpen", err)
				}
				return retry
			}
			// Failures below the threshold, a success resets them; ignored
			// outcomes (rate limits) count for nothing.
			call(a, outcomeFailure)
			call(b, outcomeFailure)
			call(a, outcomeSuccess)
			call(b, outcomeFailure)
			call(a, outcomeIgnored)
			if st := call(b, outcomeFailure); st != stateClosed {
				t.Fatalf("state %d after 2 consecutive failures, want closed", st)
			}
			if st := call(a, outcomeFailure); st != stateOpen {
				t.Fatalf("state %d after 3 consecutive failures, want open", st)
			}
			// Open for every replica; it says how long.
			if r := refused(b); r <= 0 || r > settings.OpenFor {
				t.Fatalf("retry after %s, want (0, %s]", r, settings.OpenFor)
			}
			// After OpenFor, one probe goes; the next waits for its result.
			var probe func(context.Context, callOutcome) int
			testenv.Eventually(t, 5*time.Second, "the breaker did not half-open", func() bool {
				done, _, _, err := b.allow(ctx, "cli_a|reply")
				probe = done
				return err == nil
			})
			refused(a)
			if st := probe(ctx, outcomeFailure); st != stateOpen {
				t.Fatalf("state %d after a failed probe, want open", st)
			}
			refused(a)
			testenv.Eventually(t, 5*time.Second, "the breaker did not half-open again", func() bool {
				done, _, _, err := a.allow(ctx, "cli_a|reply")
				probe = done
				return err == nil
			})
			if st := probe(ctx, outcomeSuccess); st != stateClosed {
				t.Fatalf("state %d after a good probe, want closed", st)
			}
			call(b, outcomeSuccess)
			// Breakers are per key.
			for range 3 {
				call(a, outcomeFailure)
			}
			if done, _, _, err := b.allow(ctx, "cli_a|send"); err != nil {
				t.Fatalf("another endpoint's breaker: %v", err)
			} else {
				done(ctx, outcomeSuccess)
			}
		})
	}
}

// TestRedisBreakerConcurrentRecords: concurrent failures from several
// replicas are all counted (the state is updated atomically).
func TestRedisBreakerConcurrentRecords(t *testing.T) {
	s := BreakerSettings{FailureThreshold: 40, OpenFor: time.Hour, HalfOpenProbes: 1}
	stores := breakerStores(t, s)["redis"]
	var wg sync.WaitGroup
	for i := range 39 {
		wg.Go(func() {
			done, _, _, err := stores[i%2].allow(t.Context(), "k")
			if err != nil {
				t.Error(err)
				return
			}
			done(t.Context(), outcomeFailure)
		})
	}
	wg.Wait()
	done, _, _, err := stores[0].allow(t.Context(), "k")
	if err != nil {
		t.Fatalf("open after 39 of 40 failures: %v", err)
	}
	if st := done(t.Context(), outcomeFailure); st != stateOpen {
		t.Fatalf("state %d after the 40th failure, want open", st)
	}
}
