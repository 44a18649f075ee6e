package breaker

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/larkway/larkway/core/internal/testenv"
)

// breakerStores builds each kind of breaker store twice over the same
// state (for Redis, two replicas; in memory, the same store).
func breakerStores(t *testing.T, s Settings) map[string][2]Store {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	prefix := testenv.Name(t, "lw") + ":"
	mem := NewMemory(s, nil)
	return map[string][2]Store{
		"memory (gobreaker)": {mem, mem},
		"redis":              {NewRedis(rdb, prefix, s, nil), NewRedis(rdb, prefix, s, nil)},
	}
}

// TestBreakers drives both breaker stores through the same script: they
// behave the same.
func TestBreakers(t *testing.T) {
	settings := Settings{FailureThreshold: 3, OpenFor: 200 * time.Millisecond, HalfOpenProbes: 1}
	for name, stores := range breakerStores(t, settings) {
		t.Run(name, func(t *testing.T) {
			a, b := stores[0], stores[1]
			ctx := t.Context()
			call := func(s Store, o Outcome) State {
				t.Helper()
				done, _, _, err := s.Allow(ctx, "cli_a|reply")
				if err != nil {
					t.Fatalf("allow: %v", err)
				}
				return done(ctx, o)
			}
			refused := func(s Store) time.Duration {
				t.Helper()
				_, _, retry, err := s.Allow(ctx, "cli_a|reply")
				if !errors.Is(err, ErrOpen) {
					t.Fatalf("allow = %v, want ErrOpen", err)
				}
				return retry
			}
			// Failures below the threshold, a success resets them; ignored
			// outcomes (rate limits) count for nothing.
			call(a, OutcomeFailure)
			call(b, OutcomeFailure)
			call(a, OutcomeSuccess)
			call(b, OutcomeFailure)
			call(a, OutcomeIgnored)
			if st := call(b, OutcomeFailure); st != StateClosed {
				t.Fatalf("state %d after 2 consecutive failures, want closed", st)
			}
			if st := call(a, OutcomeFailure); st != StateOpen {
				t.Fatalf("state %d after 3 consecutive failures, want open", st)
			}
			// Open for every replica; it says how long.
			if r := refused(b); r <= 0 || r > settings.OpenFor {
				t.Fatalf("retry after %s, want (0, %s]", r, settings.OpenFor)
			}
			// After OpenFor, one probe goes; the next waits for its result.
			var probe func(context.Context, Outcome) State
			testenv.Eventually(t, 5*time.Second, "the breaker did not half-open", func() bool {
				done, _, _, err := b.Allow(ctx, "cli_a|reply")
				probe = done
				return err == nil
			})
			refused(a)
			if st := probe(ctx, OutcomeFailure); st != StateOpen {
				t.Fatalf("state %d after a failed probe, want open", st)
			}
			refused(a)
			testenv.Eventually(t, 5*time.Second, "the breaker did not half-open again", func() bool {
				done, _, _, err := a.Allow(ctx, "cli_a|reply")
				probe = done
				return err == nil
			})
			if st := probe(ctx, OutcomeSuccess); st != StateClosed {
				t.Fatalf("state %d after a good probe, want closed", st)
			}
			call(b, OutcomeSuccess)
			// Breakers are per key.
			for range 3 {
				call(a, OutcomeFailure)
			}
			if done, _, _, err := b.Allow(ctx, "cli_a|send"); err != nil {
				t.Fatalf("another endpoint's breaker: %v", err)
			} else {
				done(ctx, OutcomeSuccess)
			}
		})
	}
}

// TestRedisBreakerConcurrentRecords: concurrent failures from several
// replicas are all counted (the state is updated atomically).
func TestRedisBreakerConcurrentRecords(t *testing.T) {
	s := Settings{FailureThreshold: 40, OpenFor: time.Hour, HalfOpenProbes: 1}
	stores := breakerStores(t, s)["redis"]
	var wg sync.WaitGroup
	for i := range 39 {
		wg.Go(func() {
			done, _, _, err := stores[i%2].Allow(t.Context(), "k")
			if err != nil {
				t.Error(err)
				return
			}
			done(t.Context(), OutcomeFailure)
		})
	}
	wg.Wait()
	done, _, _, err := stores[0].Allow(t.Context(), "k")
	if err != nil {
		t.Fatalf("open after 39 of 40 failures: %v", err)
	}
	if st := done(t.Context(), OutcomeFailure); st != StateOpen {
		t.Fatalf("state %d after the 40th failure, want open", st)
	}
}

// TestOnState: both stores tell each state they see, the same way.
func TestOnState(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	settings := Settings{FailureThreshold: 1, OpenFor: time.Hour}
	for name, newStore := range map[string]func(OnState) Store{
		"memory": func(f OnState) Store { return NewMemory(settings, f) },
		"redis":  func(f OnState) Store { return NewRedis(rdb, testenv.Name(t, "lw")+":", settings, f) },
	} {
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			var seen []State
			s := newStore(func(key string, st State) {
				if key != "cli_a|reply" {
					t.Errorf("told about key %q", key)
				}
				mu.Lock()
				seen = append(seen, st)
				mu.Unlock()
			})
			done, _, _, err := s.Allow(t.Context(), "cli_a|reply")
			if err != nil {
				t.Fatal(err)
			}
			done(t.Context(), OutcomeFailure)
			if _, _, _, err := s.Allow(t.Context(), "cli_a|reply"); !errors.Is(err, ErrOpen) {
				t.Fatalf("allow = %v, want ErrOpen", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if want := []State{StateClosed, StateOpen, StateOpen}; !slices.Equal(seen, want) {
				t.Fatalf("told %v, want %v", seen, want)
			}
		})
	}
}

// TestRedisLayout pins the hash a Redis breaker keeps: replicas of two
// versions share it during a rolling deploy.
func TestRedisLayout(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	prefix := testenv.Name(t, "lw") + ":"
	s := NewRedis(rdb, prefix, Settings{FailureThreshold: 2, OpenFor: time.Hour}, nil)
	ctx := t.Context()
	fail := func() {
		t.Helper()
		done, _, _, err := s.Allow(ctx, "cli_a|im.message.reply")
		if err != nil {
			t.Fatal(err)
		}
		done(ctx, OutcomeFailure)
	}
	key := prefix + "cb:cli_a|im.message.reply"
	fail()
	if h := rdb.HGetAll(ctx, key).Val(); h["fails"] != "1" {
		t.Fatalf("%s = %v after a failure, want fails 1", key, h)
	}
	fail()
	h := rdb.HGetAll(ctx, key).Val()
	until, _ := strconv.ParseInt(h["until"], 10, 64)
	if h["st"] != "2" || h["gen"] != "1" || h["fails"] != "0" ||
		time.UnixMilli(until).Before(time.Now().Add(59*time.Minute)) || time.UnixMilli(until).After(time.Now().Add(61*time.Minute)) {
		t.Fatalf("%s = %v when open, want st 2, gen 1, fails 0, until in an hour (Unix ms)", key, h)
	}
	if keys := rdb.Keys(ctx, prefix+"*").Val(); len(keys) != 1 || keys[0] != key {
		t.Fatalf("keys %q, want only %q", keys, key)
	}
}
