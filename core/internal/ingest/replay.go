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

// DeferredKV is a KV that can add a write to its next commit instead of
// making one (the embedded bus's State).
type DeferredKV interface {
	KV
	PutDeferred(key string, value []byte, expires time.Time) error
}

// DurableReplayCache keeps nonces in a KV on local disk, for a core
// without Redis on the embedded bus: a request replayed after a restart
// stays refused. A nonce is written without an fsync of its own: the KV
// shares the bus's write-ahead log, so the publish that follows (and is
// fsynced before the webhook is answered 200) makes it durable too. On a
// DeferredKV it is not even a commit of its own: it rides on that publish
// (or an earlier write).
//
// The nonces this process has seen are also held in memory (a
// MemoryReplayCache), which answers the check: the disk is read only for
// nonces a previous process may have recorded, during the first ttl after
// the start, and not at all if the store held none when this process
// started (a KV that can tell, EmptyKV). Nonces are fresh on nearly every
// request, and a look-up of a key that does not exist read blocks of
// several sstables: it was a tenth of the embedded core's CPU under load.
type DurableReplayCache struct {
	kv    KV
	now   func() time.Time
	mem   *MemoryReplayCache
	start time.Time
	// fresh: the store held no nonce at the start, so no earlier
	// process's nonce can be found there.
	fresh bool
	// deferred is kv when it is a DeferredKV, nil otherwise.
	deferred DeferredKV
}

// EmptyKV is a KV that can tell whether it holds any key.
type EmptyKV interface {
	KV
	Empty() (bool, error)
}

// NewDurableReplayCache returns a cache on kv. It reads kv once, to learn
// whether an earlier process left nonces in it.
func NewDurableReplayCache(kv KV) *DurableReplayCache {
	c := &DurableReplayCache{kv: kv, now: time.Now, mem: NewMemoryReplayCache()}
	c.start = c.now()
	c.deferred, _ = kv.(DeferredKV)
	if e, ok := kv.(EmptyKV); ok {
		// On an error, read the disk as if it held some.
		c.fresh, _ = e.Empty()
	}
	return c
}

// Seen implements ReplayCache.
func (c *DurableReplayCache) Seen(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	// The memory check records the nonce too, atomically: of concurrent
	// requests with one nonce, one gets past it.
	if seen, _ := c.mem.Seen(ctx, key, ttl); seen {
		return true, nil
	}
	now := c.now()
	if !c.fresh && now.Before(c.start.Add(ttl)) {
		_, ok, err := c.kv.Get(key)
		if err != nil {
			return false, fmt.Errorf("checking nonce: %w", err)
		}
		if ok {
			return true, nil
		}
	}
	var err error
	if c.deferred != nil {
		err = c.deferred.PutDeferred(key, nil, now.Add(ttl))
	} else {
		err = c.kv.Put(key, nil, now.Add(ttl), false)
	}
	if err != nil {
		// The nonce stays in memory: a resend of this very request is
		// refused as a replay until ttl, as Redis's SET NX would have it
		// had the write landed. Lark signs its retries anew.
		return false, fmt.Errorf("recording nonce: %w", err)
	}
	return false, nil
}
