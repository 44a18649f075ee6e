package ingest

import (
	"context"
	"fmt"
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

// MemoryReplayCache is the single-replica ReplayCache.
type MemoryReplayCache struct {
	mu      sync.Mutex
	entries map[string]time.Time
	now     func() time.Time
	sweep   time.Time
}

// NewMemoryReplayCache returns an empty cache.
func NewMemoryReplayCache() *MemoryReplayCache {
	return &MemoryReplayCache{entries: map[string]time.Time{}, now: time.Now}
}

// Seen implements ReplayCache.
func (c *MemoryReplayCache) Seen(_ context.Context, key string, ttl time.Duration) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if now.After(c.sweep) {
		// Amortized expiry: at most one full pass per minute keeps memory
		// bounded by the request rate times the window.
		for k, exp := range c.entries {
			if now.After(exp) {
				delete(c.entries, k)
			}
		}
		c.sweep = now.Add(time.Minute)
	}
	if exp, ok := c.entries[key]; ok && now.Before(exp) {
		return true, nil
	}
	c.entries[key] = now.Add(ttl)
	return false, nil
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
