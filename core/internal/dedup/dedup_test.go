package dedup

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/larkway/larkway/core/internal/bus/embedded"
	"github.com/larkway/larkway/core/internal/testenv"
)

func stores(t *testing.T) map[string]Store {
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = c.Close() })
	return map[string]Store{"memory": NewMemory(), "redis": NewRedis(c, testenv.Name(t, "dedup")+":"),
		"durable": NewDurable(openEmbedded(t, t.TempDir()).State("dedup"))}
}

// openEmbedded opens an embedded bus on dir, closed when the test ends.
func openEmbedded(t *testing.T, dir string) *embedded.Bus {
	t.Helper()
	b, err := embedded.Open(embedded.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

// A done marker on disk outlives the process: after a restart the event is
// acknowledged without running its handler again, and an event the dead
// process held a lease on is claimable at once (its holder is gone).
func TestDurableSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := embedded.Open(embedded.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := NewDurable(b.State("dedup"))
	_, l, _ := s.Claim(ctx, "p", "done-before", time.Minute)
	if err := s.Done(ctx, l, time.Hour); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := s.Claim(ctx, "p", "leased-before", 50*time.Millisecond); st != Claimed {
		t.Fatalf("claim: %v", st)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}

	s = NewDurable(openEmbedded(t, dir).State("dedup"))
	if st, _, err := s.Claim(ctx, "p", "done-before", time.Minute); st != AlreadyDone || err != nil {
		t.Fatalf("claim after restart of a done event: %v %v, want done", st, err)
	}
	if st, _, err := s.Claim(ctx, "p", "leased-before", time.Minute); st != Claimed || err != nil {
		t.Fatalf("claim after restart of a leased event: %v %v, want claimed", st, err)
	}
}

func TestSemantics(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st, l, err := s.Claim(ctx, "p", "om_1", time.Minute)
			if err != nil || st != Claimed {
				t.Fatalf("first claim: %v %v", st, err)
			}
			if st, _, _ := s.Claim(ctx, "p", "om_1", time.Minute); st != Busy {
				t.Fatalf("second claim while leased: %v", st)
			}
			if st, _, _ := s.Claim(ctx, "other-plugin", "om_1", time.Minute); st != Claimed {
				t.Fatalf("another plugin's claim: %v", st)
			}
			if err := s.Release(ctx, l); err != nil {
				t.Fatal(err)
			}
			st, l, _ = s.Claim(ctx, "p", "om_1", time.Minute)
			if st != Claimed {
				t.Fatalf("claim after release: %v", st)
			}
			if err := s.Done(ctx, l, time.Hour); err != nil {
				t.Fatal(err)
			}
			if st, _, _ := s.Claim(ctx, "p", "om_1", time.Minute); st != AlreadyDone {
				t.Fatalf("claim after done: %v", st)
			}
			// Releasing a stale lease must not undo "done".
			_ = s.Release(ctx, l)
			if st, _, _ := s.Claim(ctx, "p", "om_1", time.Minute); st != AlreadyDone {
				t.Fatalf("stale release undid done: %v", st)
			}
		})
	}
}

// A holder that dies does not block the event forever.
func TestLeaseExpires(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			if m, ok := s.(*Memory); ok {
				now := time.Now()
				m.now = func() time.Time { return now }
				_, _, _ = s.Claim(ctx, "p", "k", time.Second)
				now = now.Add(2 * time.Second)
			} else {
				_, _, _ = s.Claim(ctx, "p", "k", 50*time.Millisecond)
				testenv.Eventually(t, 5*time.Second, "lease never expired", func() bool {
					st, l, _ := s.Claim(ctx, "p", "k", time.Minute)
					if st == Claimed {
						_ = s.Release(ctx, l)
					}
					return st == Claimed
				})
				return
			}
			if st, _, _ := s.Claim(ctx, "p", "k", time.Minute); st != Claimed {
				t.Fatalf("expired lease still held: %v", st)
			}
		})
	}
}

func TestConcurrentClaimsOneWinner(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			var wg sync.WaitGroup
			var mu sync.Mutex
			won := 0
			for range 32 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if st, _, err := s.Claim(ctx, "p", "race", time.Minute); err == nil && st == Claimed {
						mu.Lock()
						won++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if won != 1 {
				t.Fatalf("%d winners", won)
			}
		})
	}
}

func TestRedisDownIsClassed(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 100 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	if _, _, err := NewRedis(c, "x:").Claim(context.Background(), "p", "k", time.Second); err == nil {
		t.Fatal("no error")
	}
}

// The embedded store keeps at most its bound, dropping the oldest
// insertions first; a key written again is young again.
func TestMemoryBound(t *testing.T) {
	ctx := context.Background()
	m := NewMemoryBounded(3)
	done := func(key string) {
		t.Helper()
		st, l, err := m.Claim(ctx, "p", key, time.Minute)
		if err != nil || st != Claimed {
			t.Fatalf("claim %s: %v %v", key, st, err)
		}
		if err := m.Done(ctx, l, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	_, la, err := m.Claim(ctx, "p", "a", time.Minute) // leased first: the oldest write
	if err != nil {
		t.Fatal(err)
	}
	done("b")
	done("c")
	if err := m.Done(ctx, la, time.Hour); err != nil { // done in place: a keeps its claim's place
		t.Fatal(err)
	}
	done("d") // evicts a, the oldest write
	// a last: claiming it writes again, which evicts in turn.
	for _, c := range []struct {
		k    string
		want State
	}{{"b", AlreadyDone}, {"c", AlreadyDone}, {"d", AlreadyDone}, {"a", Claimed}} {
		k, want := c.k, c.want
		st, l, err := m.Claim(ctx, "p", k, time.Minute)
		if err != nil || st != want {
			t.Errorf("%s: %v %v, want %v", k, st, err, want)
		}
		if st == Claimed {
			_ = m.Release(ctx, l)
		}
	}
	if n := len(m.entries); n > 3 {
		t.Fatalf("%d entries kept, bound 3", n)
	}
}

// Expired keys leave in insertion order without a sweep of the map.
func TestMemoryExpiresInOrder(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	now := time.Unix(1000, 0)
	m.now = func() time.Time { return now }
	for i := range 100 {
		_, l, _ := m.Claim(ctx, "p", fmt.Sprint(i), time.Minute)
		_ = m.Done(ctx, l, time.Hour)
	}
	now = now.Add(2 * time.Hour)
	if st, l, _ := m.Claim(ctx, "p", "new", time.Minute); st != Claimed {
		t.Fatalf("claim after expiry: %v", st)
	} else {
		_ = m.Release(ctx, l)
	}
	if n := len(m.entries); n != 0 {
		t.Fatalf("%d entries left after every done marker expired", n)
	}
}

// Pairs that concatenate to the same bytes are different keys, and a lease
// from one pair cannot release or finish another's.
func TestPairsAreDistinct(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			prefix := testenv.Name(t, "p")
			_, lab, err := s.Claim(ctx, prefix+"ab", "c", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Done(ctx, lab, time.Hour); err != nil {
				t.Fatal(err)
			}
			for _, p := range [][2]string{{prefix + "a", "bc"}, {prefix + "abc", ""}, {prefix + "ab", "c "}} {
				if st, l, err := s.Claim(ctx, p[0], p[1], time.Minute); err != nil || st != Claimed {
					t.Fatalf("%q/%q: %v %v, want claimed", p[0], p[1], st, err)
				} else if err := s.Release(ctx, l); err != nil {
					t.Fatal(err)
				}
			}
			if st, _, _ := s.Claim(ctx, prefix+"ab", "c", time.Minute); st != AlreadyDone {
				t.Fatalf("the done pair: %v", st)
			}
		})
	}
}

// A TTL too large to add to the clock means never expiring, as with
// time.Time.Add, not a marker that wrapped around to expired.
func TestMemoryHugeTTL(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	_, l, err := m.Claim(ctx, "p", "k", time.Duration(math.MaxInt64))
	if err != nil {
		t.Fatal(err)
	}
	if st, _, _ := m.Claim(ctx, "p", "k", time.Minute); st != Busy {
		t.Fatalf("leased for ever: %v, want busy", st)
	}
	if err := m.Done(ctx, l, time.Duration(math.MaxInt64)); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := m.Claim(ctx, "p", "k", time.Minute); st != AlreadyDone {
		t.Fatalf("done for ever: %v, want done", st)
	}
}
