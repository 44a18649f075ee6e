package ingest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/larkway/larkway/core/internal/bus/embedded"
	"github.com/larkway/larkway/core/internal/testenv"
)

func openEmbedded(t *testing.T, dir string) *embedded.Bus {
	t.Helper()
	b, err := embedded.Open(embedded.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

func TestReplayCaches(t *testing.T) {
	caches := map[string]func(t *testing.T) ReplayCache{
		"memory": func(t *testing.T) ReplayCache { return NewMemoryReplayCache() },
		"redis": func(t *testing.T) ReplayCache {
			c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
			t.Cleanup(func() { _ = c.Close() })
			return NewRedisReplayCache(c, testenv.Name(t, "replay")+":")
		},
		"durable": func(t *testing.T) ReplayCache {
			return NewDurableReplayCache(openEmbedded(t, t.TempDir()).State("nonce"))
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

// A nonce recorded before a restart is still refused after it, until its
// window ends.
func TestDurableReplayCacheSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := embedded.Open(embedded.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := NewDurableReplayCache(b.State("nonce"))
	if seen, err := c.Seen(ctx, "app:n1", time.Hour); seen || err != nil {
		t.Fatalf("first Seen = %v %v", seen, err)
	}
	if seen, _ := c.Seen(ctx, "app:short", time.Millisecond); seen {
		t.Fatal("first Seen of a short-lived nonce reported seen")
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	c = NewDurableReplayCache(openEmbedded(t, dir).State("nonce"))
	if seen, err := c.Seen(ctx, "app:n1", time.Hour); !seen || err != nil {
		t.Fatalf("Seen after restart = %v %v, want seen", seen, err)
	}
	testenv.Eventually(t, 5*time.Second, "an expired nonce stayed seen", func() bool {
		seen, _ := c.Seen(ctx, "app:short", time.Millisecond)
		return !seen
	})
}

func TestMemoryReplayCacheExpires(t *testing.T) {
	c := NewMemoryReplayCache()
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	ctx := context.Background()
	seen := func(k string) bool {
		t.Helper()
		s, err := c.Seen(ctx, k, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	seen("k")
	now = now.Add(59 * time.Second)
	if !seen("k") {
		t.Fatal("nonce forgotten inside its TTL")
	}
	now = now.Add(30 * time.Second) // rotated: "k" sits in prev, expired at 60 s
	if seen("k") {
		t.Fatal("expired nonce still seen")
	}
	// "k" was re-recorded just now; it survives the next rotation inside its TTL.
	now = now.Add(40 * time.Second)
	if !seen("k") {
		t.Fatal("nonce recorded before a rotation forgotten inside its TTL")
	}
	// Idle for longer than two TTLs: everything is dropped.
	now = now.Add(3 * time.Minute)
	seen("other")
	if n := c.len(); n != 1 {
		t.Fatalf("after the TTL the cache holds %d entries, want 1", n)
	}
}

// countingKV is a map KV that counts reads.
type countingKV struct {
	mu    sync.Mutex
	m     map[string]time.Time
	reads int
}

func (k *countingKV) Get(key string) ([]byte, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.reads++
	_, ok := k.m[key]
	return nil, ok, nil
}

func (k *countingKV) Put(key string, _ []byte, expires time.Time, _ bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[key] = expires
	return nil
}

// The disk is read only while a previous process's nonces may be live
// (the first ttl after the start); after that, the nonces in memory are all
// there is, and every nonce is still written for the next process.
func TestDurableReplayCacheReadsDiskOnlyAfterStart(t *testing.T) {
	ctx := t.Context()
	kv := &countingKV{m: map[string]time.Time{"app:old": time.Now().Add(time.Hour)}}
	now := time.Unix(1_700_000_000, 0)
	c := NewDurableReplayCache(kv)
	c.now = func() time.Time { return now }
	c.start = now
	if seen, err := c.Seen(ctx, "app:old", time.Minute); !seen || err != nil {
		t.Fatalf("a nonce recorded by the previous process = %v %v, want seen", seen, err)
	}
	if seen, _ := c.Seen(ctx, "app:new", time.Minute); seen {
		t.Fatal("a fresh nonce reported seen")
	}
	if kv.reads != 2 {
		t.Fatalf("%d disk reads in the first ttl, want 2", kv.reads)
	}
	now = now.Add(2 * time.Minute)
	if seen, _ := c.Seen(ctx, "app:later", time.Minute); seen {
		t.Fatal("a fresh nonce reported seen")
	}
	if seen, _ := c.Seen(ctx, "app:later", time.Minute); !seen {
		t.Fatal("a replayed nonce passed")
	}
	if kv.reads != 2 {
		t.Fatalf("%d disk reads, want none after the first ttl", kv.reads-2)
	}
	if _, ok := kv.m["app:later"]; !ok {
		t.Fatal("the nonce was not written for the next process")
	}
}

// emptyKV is a countingKV that says whether it holds anything.
type emptyKV struct{ *countingKV }

func (k emptyKV) Empty() (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m) == 0, nil
}

// A store that held no nonce when the process started is never read: every
// nonce that could be found there was recorded by this process, and is in
// memory.
func TestDurableReplayCacheFreshStoreIsNotRead(t *testing.T) {
	ctx := t.Context()
	kv := emptyKV{&countingKV{m: map[string]time.Time{}}}
	c := NewDurableReplayCache(kv)
	for _, nonce := range []string{"app:a", "app:b"} {
		if seen, err := c.Seen(ctx, nonce, time.Minute); seen || err != nil {
			t.Fatalf("fresh nonce %s = %v %v", nonce, seen, err)
		}
	}
	if seen, _ := c.Seen(ctx, "app:a", time.Minute); !seen {
		t.Fatal("a replayed nonce passed")
	}
	if kv.reads != 0 {
		t.Fatalf("%d disk reads on a store that started empty, want 0", kv.reads)
	}
	if len(kv.m) != 2 {
		t.Fatalf("%d nonces written for the next process, want 2", len(kv.m))
	}
	// The next process finds them and reads the disk.
	next := NewDurableReplayCache(kv)
	if seen, _ := next.Seen(ctx, "app:b", time.Minute); !seen {
		t.Fatal("after a restart, a nonce of the previous process passed")
	}
}
