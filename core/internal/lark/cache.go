package lark

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrLocked is returned by TokenCache.TryLock while another holder has the
// lock.
var ErrLocked = errors.New("token cache lock is held")

// TokenCache is where tenant tokens are shared: Redis across replicas
// (RedisTokenCache) or the process (MemoryTokenCache).
//
// Get and Set are larkcore.Cache's two methods (Get answers "" on a miss);
// DeleteIf and TryLock are what a refresh done once for all replicas needs.
// Implementations are safe for concurrent use, honour ctx and own no
// goroutines.
type TokenCache interface {
	// Get returns the value at key, or "" when there is none.
	Get(ctx context.Context, key string) (string, error)
	// Set stores value at key for ttl.
	Set(ctx context.Context, key, value string, ttl time.Duration) error
	// DeleteIf deletes key if it still holds value (compare-and-delete).
	DeleteIf(ctx context.Context, key, value string) error
	// TryLock takes the lock named key for at most ttl, or returns ErrLocked
	// at once. release frees it unless it expired and another holder took it.
	TryLock(ctx context.Context, key string, ttl time.Duration) (release func(context.Context) error, err error)
}

var (
	_ TokenCache = (*RedisTokenCache)(nil)
	_ TokenCache = (*MemoryTokenCache)(nil)
)

// RedisTokenCache keeps tokens in Redis under a key prefix, so every replica
// of every app shares one token per app.
type RedisTokenCache struct {
	client redis.UniversalClient
	prefix string
}

// NewRedisTokenCache uses client with keys under prefix (e.g.
// "larkway:lark:"). It does no I/O.
func NewRedisTokenCache(client redis.UniversalClient, prefix string) *RedisTokenCache {
	return &RedisTokenCache{client: client, prefix: prefix}
}

// Get implements TokenCache.
func (c *RedisTokenCache) Get(ctx context.Context, key string) (string, error) {
	v, err := c.client.Get(ctx, c.prefix+key).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading %s from redis: %w", key, err)
	}
	return v, nil
}

// Set implements TokenCache.
func (c *RedisTokenCache) Set(ctx context.Context, key, value string, ttl time.Duration) error {
	if err := c.client.Set(ctx, c.prefix+key, value, ttl).Err(); err != nil {
		return fmt.Errorf("writing %s to redis: %w", key, err)
	}
	return nil
}

// deleteIfScript deletes KEYS[1] if it holds ARGV[1]: the compare and the
// delete must be one step, or a replica could delete a token another just
// stored. The same script releases locks.
var deleteIfScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// DeleteIf implements TokenCache.
func (c *RedisTokenCache) DeleteIf(ctx context.Context, key, value string) error {
	if err := deleteIfScript.Run(ctx, c.client, []string{c.prefix + key}, value).Err(); err != nil {
		return fmt.Errorf("deleting %s from redis: %w", key, err)
	}
	return nil
}

// TryLock implements TokenCache with SET NX PX and a random holder value.
// A lock library (redsync, redislock) would add a dependency for these two
// commands; the lock only has to stop a stampede, so expiry is its safety net.
func (c *RedisTokenCache) TryLock(ctx context.Context, key string, ttl time.Duration) (func(context.Context) error, error) {
	holder := randomToken()
	ok, err := c.client.SetNX(ctx, c.prefix+key, holder, ttl).Result()
	if err != nil {
		return nil, fmt.Errorf("locking %s in redis: %w", key, err)
	}
	if !ok {
		return nil, ErrLocked
	}
	return func(ctx context.Context) error { return c.DeleteIf(ctx, key, holder) }, nil
}

// MemoryTokenCache is a TokenCache for one process (no Redis).
type MemoryTokenCache struct {
	now func() time.Time

	mu      sync.Mutex
	entries map[string]memoryEntry
}

type memoryEntry struct {
	value     string
	expiresAt time.Time
}

// NewMemoryTokenCache returns an empty in-process cache.
func NewMemoryTokenCache() *MemoryTokenCache {
	return &MemoryTokenCache{now: time.Now, entries: make(map[string]memoryEntry)}
}

func (c *MemoryTokenCache) getLocked(key string) (string, bool) {
	e, ok := c.entries[key]
	if !ok {
		return "", false
	}
	if !c.now().Before(e.expiresAt) {
		delete(c.entries, key)
		return "", false
	}
	return e.value, true
}

// Get implements TokenCache.
func (c *MemoryTokenCache) Get(_ context.Context, key string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, _ := c.getLocked(key)
	return v, nil
}

// Set implements TokenCache.
func (c *MemoryTokenCache) Set(_ context.Context, key, value string, ttl time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries[key] = memoryEntry{value: value, expiresAt: c.now().Add(ttl)}
	return nil
}

// DeleteIf implements TokenCache.
func (c *MemoryTokenCache) DeleteIf(_ context.Context, key, value string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.getLocked(key); ok && v == value {
		delete(c.entries, key)
	}
	return nil
}

// TryLock implements TokenCache.
func (c *MemoryTokenCache) TryLock(_ context.Context, key string, ttl time.Duration) (func(context.Context) error, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, held := c.getLocked(key); held {
		return nil, ErrLocked
	}
	holder := randomToken()
	c.entries[key] = memoryEntry{value: holder, expiresAt: c.now().Add(ttl)}
	return func(ctx context.Context) error { return c.DeleteIf(ctx, key, holder) }, nil
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}
