package ingest

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ReplayCache remembers nonces of authenticated requests for the clock-skew
// window, so a captured request cannot be replayed inside it. Seen records
// key and reports whether it was already there, atomically.
type ReplayCache interface {
	Seen(ctx context.Context, key string, ttl time.Duration) (bool, error)
}

// MemoryReplayCache is the single-replica ReplayCache. At webhook rates it
// holds rate x window entries (6 M at 10 k/s over 10 min), so entries are
// 64-bit hashes of the keys (seeded per process, so collisions cannot be
// aimed; by chance, about one in 10^6 over 6 M entries) with Unix-nanosecond
// expiries: no pointers for the GC to scan, no key copies. Expiry is by
// generation: entries go into the current map, and once per TTL the
// previous map is dropped whole, so no request pays for a sweep.
type MemoryReplayCache struct {
	mu        sync.Mutex
	seed      maphash.Seed
	cur, prev map[uint64]int64
	rotateAt  int64 // Unix ns; 0 before the first call
	now       func() time.Time
}

// NewMemoryReplayCache returns an empty cache.
func NewMemoryReplayCache() *MemoryReplayCache {
	return &MemoryReplayCache{seed: maphash.MakeSeed(), cur: map[uint64]int64{}, prev: map[uint64]int64{}, now: time.Now}
}

// Seen implements ReplayCache.
func (c *MemoryReplayCache) Seen(_ context.Context, key string, ttl time.Duration) (bool, error) {
	h := maphash.String(c.seed, key)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now().UnixNano()
	if c.rotateAt == 0 {
		c.rotateAt = now + int64(ttl)
	}
	if now >= c.rotateAt {
		// Everything in prev was added over a TTL ago: expired.
		c.prev, c.cur = c.cur, make(map[uint64]int64, len(c.cur))
		if now >= c.rotateAt+int64(ttl) {
			c.prev = map[uint64]int64{} // idle for a whole TTL: cur expired too
		}
		c.rotateAt = now + int64(ttl)
	}
	if exp, ok := c.cur[h]; ok && now < exp {
		return true, nil
	}
	if exp, ok := c.prev[h]; ok && now < exp {
		return true, nil
	}
	c.cur[h] = now + int64(ttl)
	return false, nil
}

// len is the number of entries held (for tests).
func (c *MemoryReplayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.prev)
}

// RedisReplayCache shares nonces across replicas with SET NX EX.
type RedisReplayCache struct {
	client redis.UniversalClient
	prefix string
}

// NewRedisReplayCache uses client with keys under prefix.
func NewRedisReplayCache(client redis.UniversalClient, prefix string) *RedisReplayCache {
	return &RedisReplayCache{client: client, prefix: prefix}
}

// Seen implements ReplayCache.
func (c *RedisReplayCache) Seen(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	ok, err := c.client.SetNX(ctx, c.prefix+key, 1, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("checking nonce: %w", err)
	}
	return !ok, nil
}

// KV is a durable key space with expiring keys, such as the embedded bus's
// State (bus/embedded).
type KV interface {
	Get(key string) (value []byte, ok bool, err error)
	Put(key string, value []byte, expires time.Time, sync bool) error
}

// DurableReplayCache keeps nonces in a KV on local disk, for a core
// without Redis on the embedded bus: a request replayed after a restart
// stays refused. A nonce is written without an fsync of its own: the KV
// shares the bus's write-ahead log, so the publish that follows (and is
// fsynced before the webhook is answered 200) makes it durable too.
type DurableReplayCache struct {
	kv   KV
	now  func() time.Time
	seed maphash.Seed
	// locks make Seen's check-then-write atomic per key; striped, so that
	// look-ups of different keys (which may read the disk) run at once.
	locks [64]sync.Mutex
}

// NewDurableReplayCache returns a cache on kv.
func NewDurableReplayCache(kv KV) *DurableReplayCache {
	return &DurableReplayCache{kv: kv, now: time.Now, seed: maphash.MakeSeed()}
}

// Seen implements ReplayCache.
func (c *DurableReplayCache) Seen(_ context.Context, key string, ttl time.Duration) (bool, error) {
	mu := &c.locks[maphash.String(c.seed, key)%uint64(len(c.locks))]
	mu.Lock()
	defer mu.Unlock()
	_, ok, err := c.kv.Get(key)
	if err != nil {
		return false, fmt.Errorf("checking nonce: %w", err)
	}
	if ok {
		return true, nil
	}
	if err := c.kv.Put(key, nil, c.now().Add(ttl), false); err != nil {
		return false, fmt.Errorf("recording nonce: %w", err)
	}
	return false, nil
}
