package action

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// scope is one rate limit a call must fit: an app's API (per second, per
// minute), a chat, a user or a card.
type scope struct {
	// key identifies the GCRA state, e.g. "app:cli_a:im.message.reply:s".
	key string
	// block is the key a "blocked until" is kept under (shared by an API's
	// two windows).
	block string
	limit redis_rate.Limit
	// nb names what a refusal says about the scope for this caller: when
	// callers pass different bursts for one key, each learns its own wait.
	nb string
}

// interval is the GCRA's emission interval: the time between two calls at
// the sustained rate.
func (s scope) interval() time.Duration {
	return time.Duration(float64(s.limit.Period) / float64(s.limit.Rate))
}

func newScope(key, block string, limit redis_rate.Limit) scope {
	return scope{key: key, block: block, limit: limit, nb: key + "#" + strconv.Itoa(limit.Burst)}
}

// rateStore keeps the limiters' state: Redis for every replica
// (redisRateStore) or the process (memoryRateStore). Both are safe for
// concurrent use and own no goroutines.
type rateStore interface {
	// acquire takes one slot in every scope, or none. When refused, it says
	// which scope refused and how long until it may admit the call.
	acquire(ctx context.Context, scopes []scope) (ok bool, refused int, retryAfter time.Duration, err error)
	// block refuses every call to the block key until until (unless already
	// blocked for longer), for every replica.
	block(ctx context.Context, key string, until time.Time) error
}

// memoryRateStore is the in-process store. Its GCRA is redis_rate's
// formula (which only runs inside Redis), evaluated for all scopes before
// any is charged, so it is exactly all-or-nothing.
type memoryRateStore struct {
	now func() time.Time

	mu     sync.Mutex
	tat    map[string]time.Time // theoretical arrival time per scope
	blocks map[string]time.Time
}

var _ rateStore = (*memoryRateStore)(nil)

func newMemoryRateStore() *memoryRateStore {
	return &memoryRateStore{now: time.Now, tat: make(map[string]time.Time), blocks: make(map[string]time.Time)}
}

func (m *memoryRateStore) acquire(_ context.Context, scopes []scope) (bool, int, time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for i, s := range scopes {
		if until, ok := m.blocks[s.block]; ok {
			if now.Before(until) {
				return false, i, until.Sub(now), nil
			}
			delete(m.blocks, s.block)
		}
	}
	next := make([]time.Time, len(scopes))
	for i, s := range scopes {
		interval := s.interval()
		tat := m.tat[s.key]
		if tat.Before(now) {
			tat = now
		}
		next[i] = tat.Add(interval)
		if allowAt := next[i].Add(-time.Duration(s.limit.Burst) * interval); allowAt.After(now) {
			return false, i, allowAt.Sub(now), nil
		}
	}
	for i, s := range scopes {
		m.tat[s.key] = next[i]
	}
	if len(m.tat) > 1<<14 { // forget idle scopes
		for k, t := range m.tat {
			if t.Before(now) {
				delete(m.tat, k)
			}
		}
	}
	return true, 0, 0, nil
}

func (m *memoryRateStore) block(_ context.Context, key string, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if until.After(m.blocks[key]) {
		m.blocks[key] = until
	}
	return nil
}

// redisRateStore shares limits across replicas: each scope is a redis_rate
// GCRA key, and a block is a key whose TTL is what remains of it.
//
// redis_rate evaluates one key per call, so acquire charges the scopes in
// turn and, when one refuses, gives back the slots already taken by
// charging them -1 (the GCRA formula run backwards). The give-back is exact
// whenever a scope is saturated, the case where a slot matters; on an idle
// scope it may leave one slot charged, which only delays that scope's next
// call by one interval. App scopes go first: they are the contended ones.
type redisRateStore struct {
	client  redis.UniversalClient
	limiter *redis_rate.Limiter
	prefix  string
}

var _ rateStore = (*redisRateStore)(nil)

func newRedisRateStore(client redis.UniversalClient, prefix string) *redisRateStore {
	return &redisRateStore{client: client, limiter: redis_rate.NewLimiter(client), prefix: prefix + "rl:"}
}

func (r *redisRateStore) acquire(ctx context.Context, scopes []scope) (bool, int, time.Duration, error) {
	pipe := r.client.Pipeline()
	ttls := make([]*redis.DurationCmd, len(scopes))
	for i, s := range scopes {
		ttls[i] = pipe.PTTL(ctx, r.prefix+"block:"+s.block)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return false, 0, 0, fmt.Errorf("reading rate-limit blocks: %w", err)
	}
	for i, c := range ttls {
		if d := c.Val(); d > 0 {
			return false, i, d, nil
		}
	}
	for i, s := range scopes {
		res, err := r.limiter.Allow(ctx, r.prefix+s.key, s.limit)
		if err != nil {
			r.giveBack(ctx, scopes[:i])
			return false, 0, 0, fmt.Errorf("charging rate limit %s: %w", s.key, err)
		}
		if res.Allowed == 0 {
			r.giveBack(ctx, scopes[:i])
			return false, i, max(res.RetryAfter, 0), nil
		}
	}
	return true, 0, 0, nil
}

func (r *redisRateStore) giveBack(ctx context.Context, scopes []scope) {
	for _, s := range scopes {
		_, _ = r.limiter.AllowN(ctx, r.prefix+s.key, s.limit, -1) // best effort
	}
}

// extendBlockScript sets KEYS[1] to expire in ARGV[1] ms unless it already
// outlives that.
var extendBlockScript = redis.NewScript(`
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0`)

func (r *redisRateStore) block(ctx context.Context, key string, until time.Time) error {
	ms := time.Until(until).Milliseconds()
	if ms <= 0 {
		return nil
	}
	if err := extendBlockScript.Run(ctx, r.client, []string{r.prefix + "block:" + key}, ms).Err(); err != nil {
		return fmt.Errorf("blocking rate limit %s: %w", key, err)
	}
	return nil
}
