package ingest

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/larkway/larkway/core/internal/testenv"
)

func TestReplayCaches(t *testing.T) {
	caches := map[string]func(t *testing.T) ReplayCache{
		"memory": func(t *testing.T) ReplayCache { return NewMemoryReplayCache() },
		"redis": func(t *testing.T) ReplayCache {
			c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
			t.Cleanup(func() { _ = c.Close() })
			return NewRedisReplayCache(c, testenv.Name(t, "replay")+":")
		},
	}
	for name, mk := range caches {
		t.Run(name, func(t *testing.T) {
			c := mk(t)
			ctx := context.Background()
			for i, want := range []bool{false, true, true} {
				seen, err := c.Seen(ctx, "app:n1", time.Minute)
				if err != nil || seen != want {
					t.Fatalf("call %d: seen=%v err=%v, want %v", i, seen, err, want)
				}
			}
			if seen, _ := c.Seen(ctx, "app:n2", time.Minute); seen {
				t.Fatal("distinct nonce reported seen")
			}
		})
	}
}

func TestMemoryReplayCacheExpires(t *testing.T) {
	c := NewMemoryReplayCache()
	now := time.Unix(0, 0)
	c.now = func() time.Time { return now }
	ctx := context.Background()
	_, _ = c.Seen(ctx, "k", time.Minute)
	now = now.Add(2 * time.Minute)
	if seen, _ := c.Seen(ctx, "k", time.Minute); seen {
		t.Fatal("expired nonce still seen")
	}
	now = now.Add(2 * time.Minute)
	_, _ = c.Seen(ctx, "other", time.Minute)
	if len(c.entries) != 1 {
		t.Fatalf("sweep kept %d entries", len(c.entries))
	}
}
