package ratelimit

import (
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/larkway/larkway/core/internal/testenv"
)

// rateStores builds a fresh store of each kind; the Redis one twice, to
// show that two replicas share state.
func rateStores(t *testing.T) map[string][2]rateStore {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	mem := newMemoryRateStore()
	prefix := testenv.Name(t, "lw") + ":"
	return map[string][2]rateStore{
		"memory": {mem, mem},
		"redis":  {newRedisRateStore(rdb, prefix), newRedisRateStore(rdb, prefix)},
	}
}

func sc(key string, l gcraLimit) scope { return newScope(key, key, l) }

func TestRateStores(t *testing.T) {
	for name, stores := range rateStores(t) {
		t.Run(name, func(t *testing.T) {
			a, b := stores[0], stores[1]
			ctx := t.Context()
			slow := gcraLimit{Rate: 1, Period: time.Hour, Burst: 1}
			two := gcraLimit{Rate: 1, Period: time.Hour, Burst: 2}

			ok, _, _, err := a.acquire(ctx, []scope{sc("x", slow)})
			if !ok || err != nil {
				t.Fatalf("first acquire: %v %v", ok, err)
			}
			// The other replica sees the slot taken, and when the next frees.
			ok, refused, retry, err := b.acquire(ctx, []scope{sc("y", slow), sc("x", slow)})
			if ok || err != nil || refused != 1 || retry < 59*time.Minute || retry > time.Hour {
				t.Fatalf("second acquire: ok %v refused %d retry %s err %v", ok, refused, retry, err)
			}
			// All or nothing: y was not charged by the refused call.
			if ok, _, _, _ := a.acquire(ctx, []scope{sc("y", slow)}); !ok {
				t.Fatal("a refused multi-scope acquire charged its other scope")
			}

			// Nor is a saturated scope when a later scope refuses.
			if ok, _, _, _ := a.acquire(ctx, []scope{sc("z", two)}); !ok {
				t.Fatal("z first")
			}
			if ok, refused, _, _ := b.acquire(ctx, []scope{sc("z", two), sc("x", slow)}); ok || refused != 1 {
				t.Fatal("x should refuse")
			}
			if ok, _, _, _ := a.acquire(ctx, []scope{sc("z", two)}); !ok {
				t.Fatal("z's second slot was taken by a refused call")
			}

			// Blocks hold a scope for every replica, and only extend.
			if err := a.block(ctx, "w", time.Now().Add(300*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			_ = b.block(ctx, "w", time.Now().Add(100*time.Millisecond))
			ok, refused, retry, _ = b.acquire(ctx, []scope{sc("v", slow), sc("w", slow)})
			if ok || refused != 1 || retry < 200*time.Millisecond || retry > 300*time.Millisecond {
				t.Fatalf("blocked scope: ok %v refused %d retry %s", ok, refused, retry)
			}
			testenv.Eventually(t, 5*time.Second, "the block did not lift", func() bool {
				ok, _, _, _ := a.acquire(ctx, []scope{sc("w", slow)})
				return ok
			})
		})
	}
}

// TestRedisRateStoreDown: a store failure is an error, not a grant.
func TestRedisRateStoreDown(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 50 * time.Millisecond})
	defer rdb.Close()
	s := newRedisRateStore(rdb, "x:")
	if ok, _, _, err := s.acquire(t.Context(), []scope{sc("a", gcraLimit{Rate: 1, Period: time.Second, Burst: 1})}); ok || err == nil {
		t.Fatalf("acquire with Redis down = %v, %v", ok, err)
	}
}

// TestRedisKeyLayout pins the Redis keys and values a Scheduler uses:
// replicas of two versions share them during a rolling deploy.
func TestRedisKeyLayout(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	prefix := testenv.Name(t, "lw") + ":"
	s := New(Limits{}, Deps{Redis: rdb, KeyPrefix: prefix})
	t.Cleanup(s.Close)
	ctx := t.Context()
	for _, target := range []string{ChatScope("oc_1"), UserScope("open_id", "ou_1"), CardScope("om_1")} {
		if err := s.Wait(ctx, Ticket{App: "cli_a", API: "im.message.reply", Target: target, Priority: PriorityHigh}); err != nil {
			t.Fatal(err)
		}
	}
	s.Block(ctx, APIScope("cli_a", "im.message.send"), time.Now().Add(time.Minute))
	s.Block(ctx, ChatScope("oc_2"), time.Now().Add(time.Minute))

	keys, err := rdb.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	want := []string{
		"{rl}:app:cli_a:im.message.reply:m", "{rl}:app:cli_a:im.message.reply:s",
		"{rl}:block:app:cli_a:im.message.send", "{rl}:block:chat:oc_2",
		"{rl}:chat:oc_1", "{rl}:message:om_1", "{rl}:user:open_id:ou_1",
	}
	for i := range want {
		want[i] = prefix + want[i]
	}
	if !slices.Equal(keys, want) {
		t.Fatalf("keys\n%q\nwant\n%q", keys, want)
	}
	// A GCRA key holds its theoretical arrival time: seconds since
	// 2017-01-01 UTC, six decimals, a little after now.
	v, err := rdb.Get(ctx, prefix+"{rl}:chat:oc_1").Result()
	if err != nil {
		t.Fatal(err)
	}
	tat, err := strconv.ParseFloat(v, 64)
	since2017 := time.Since(time.Date(2017, 1, 1, 0, 0, 0, 0, time.UTC)).Seconds()
	if err != nil || !regexp.MustCompile(`^\d+\.\d{6}$`).MatchString(v) || tat < since2017-60 || tat > since2017+60 {
		t.Fatalf("GCRA value %q, want seconds since 2017 (about %.0f)", v, since2017)
	}
}
