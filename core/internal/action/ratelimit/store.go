package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

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
	limit gcraLimit
	// nb names what a refusal says about the scope for this caller: when
	// callers pass different bursts for one key, each learns its own wait.
	nb string
}

// interval is the GCRA's emission interval: the time between two calls at
// the sustained rate.
func (s scope) interval() time.Duration {
	return time.Duration(float64(s.limit.Period) / float64(s.limit.Rate))
}

func newScope(key, block string, limit gcraLimit) scope {
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

// memoryRateStore is the in-process store: the same GCRA as the Redis
// script, evaluated for all scopes before any is charged.
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

// redisRateStore shares limits across replicas. Each scope is a GCRA key
// holding its theoretical arrival time; a block is a key whose TTL is what
// remains of it.
//
// The keys (<prefix>{rl}:<scope key> holding the time as seconds since
// 2017-01-01 with six decimals, <prefix>{rl}:block:<block key>) and the
// scope keys' names (see Scheduler.scopes and the *Scope functions) are
// shared by every replica, including replicas of the previous version
// during a rolling deploy: change them only in a way both versions read
// alike.
//
// The GCRA is go-redis/redis_rate's (same formula, same clock, same state),
// but run by one script over all of a call's scopes instead of redis_rate's
// one call per key, because a call must be admitted by its app's two
// windows and its chat's (or user's) at once: charging them one by one
// takes a slot in one scope while another refuses — a slot that can be
// given back only approximately — and costs four round trips where the
// script costs one. The pump of each app is serial, so round trips bound
// its rate: the script keeps a stalled replica able to catch up. The
// script also reads the blocks in the same step.
//
// Keys share the hash tag {rl} so that the script's keys live on one node
// of a Redis Cluster.
type redisRateStore struct {
	client redis.UniversalClient
	prefix string
}

var _ rateStore = (*redisRateStore)(nil)

func newRedisRateStore(client redis.UniversalClient, prefix string) *redisRateStore {
	return &redisRateStore{client: client, prefix: prefix + "{rl}:"}
}

// acquireScript: KEYS are n GCRA keys then their n block keys; ARGV holds
// burst, rate and period (seconds) per scope. It answers {1, 0, "0"} when
// every scope admits the call (and charges them all), else {0, i, wait}
// with the 0-based refusing scope and the seconds until it admits.
var acquireScript = redis.NewScript(`
local t = redis.call('TIME')
local now = (t[1] - 1483228800) + t[2] / 1000000
local n = #KEYS / 2
for i = 1, n do
  local ms = redis.call('PTTL', KEYS[n + i])
  if ms > 0 then return {0, i - 1, tostring(ms / 1000)} end
end
local tats = {}
for i = 1, n do
  local burst = tonumber(ARGV[3 * i - 2])
  local interval = tonumber(ARGV[3 * i]) / tonumber(ARGV[3 * i - 1])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - burst * interval
  if allow_at > now then return {0, i - 1, tostring(allow_at - now)} end
  tats[i] = new_tat
end
for i = 1, n do
  redis.call('SET', KEYS[i], string.format('%.6f', tats[i]), 'EX', math.ceil(tats[i] - now))
end
return {1, 0, '0'}`)

func (r *redisRateStore) acquire(ctx context.Context, scopes []scope) (bool, int, time.Duration, error) {
	keys := make([]string, 2*len(scopes))
	args := make([]any, 0, 3*len(scopes))
	for i, s := range scopes {
		keys[i] = r.prefix + s.key
		keys[len(scopes)+i] = r.prefix + "block:" + s.block
		args = append(args, s.limit.Burst, s.limit.Rate, s.limit.Period.Seconds())
	}
	res, err := acquireScript.Run(ctx, r.client, keys, args...).Slice()
	if err != nil {
		return false, 0, 0, fmt.Errorf("acquiring rate limits: %w", err)
	}
	if len(res) != 3 {
		return false, 0, 0, fmt.Errorf("acquiring rate limits: unexpected script answer %v", res)
	}
	ok, _ := res[0].(int64)
	refused, _ := res[1].(int64)
	waitStr, _ := res[2].(string)
	wait, err := strconv.ParseFloat(waitStr, 64)
	if err != nil || refused < 0 || int(refused) >= len(scopes) {
		return false, 0, 0, fmt.Errorf("acquiring rate limits: unexpected script answer %v", res)
	}
	return ok == 1, int(refused), time.Duration(wait * float64(time.Second)), nil
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
