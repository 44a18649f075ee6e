package action

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// ErrBreakerOpen is returned while an app's endpoint's circuit breaker is
// open (or half-open with its probes out). Retryable: the call was not
// made.
var ErrBreakerOpen = errors.New("circuit breaker open")

// BreakerSettings configure the circuit breaker kept per app and endpoint.
// Zero fields take defaults.
type BreakerSettings struct {
	// Disabled turns the breakers off.
	Disabled bool
	// FailureThreshold is the number of consecutive failures (5xx,
	// timeouts, transport errors) that opens a breaker. Default 5.
	FailureThreshold int
	// OpenFor is how long an open breaker refuses calls before letting
	// probes through. Default 30 s.
	OpenFor time.Duration
	// HalfOpenProbes is how many calls a half-open breaker lets through;
	// that many successes close it, one failure opens it again. Default 1.
	HalfOpenProbes int
}

func (b BreakerSettings) withDefaults() BreakerSettings {
	if b.FailureThreshold == 0 {
		b.FailureThreshold = 5
	}
	if b.OpenFor == 0 {
		b.OpenFor = 30 * time.Second
	}
	if b.HalfOpenProbes == 0 {
		b.HalfOpenProbes = 1
	}
	return b
}

// Validate reports problems with b (after defaults).
func (b BreakerSettings) Validate() error {
	if b.FailureThreshold < 1 || b.OpenFor <= 0 || b.HalfOpenProbes < 1 {
		return fmt.Errorf("action: breaker failure_threshold (%d) and half_open_probes (%d) must be at least 1 and open_for (%s) positive",
			b.FailureThreshold, b.HalfOpenProbes, b.OpenFor)
	}
	return nil
}

// callOutcome is how a call counts for a breaker.
type callOutcome int

const (
	// outcomeIgnored: neither success nor failure (rate limited, token
	// refetch, cancelled by the caller).
	outcomeIgnored callOutcome = iota
	// outcomeSuccess: Lark answered, even with a business error.
	outcomeSuccess
	// outcomeFailure: Lark failed (5xx, timeout, transport).
	outcomeFailure
)

// Breaker states, numbered as gobreaker numbers them (the
// larkway_action_breaker_state gauge's values).
const (
	stateClosed   = int(gobreaker.StateClosed)
	stateHalfOpen = int(gobreaker.StateHalfOpen)
	stateOpen     = int(gobreaker.StateOpen)
)

// breakerStore keeps the breakers: Redis for every replica (redisBreakers)
// or the process (memoryBreakers). Safe for concurrent use; no goroutines.
type breakerStore interface {
	// allow admits a call to key. It returns ErrBreakerOpen (with how long
	// until a probe may go, if known) when the breaker refuses.
	allow(ctx context.Context, key string) (done func(ctx context.Context, o callOutcome) int, state int, retryAfter time.Duration, err error)
}

// memoryBreakers are gobreaker TwoStepCircuitBreakers, one per key.
type memoryBreakers struct {
	settings BreakerSettings
	onState  func(key string, state int)

	mu       sync.Mutex
	breakers map[string]*gobreaker.TwoStepCircuitBreaker[struct{}]
	openedAt map[string]time.Time
}

var _ breakerStore = (*memoryBreakers)(nil)

var (
	errCallFailed  = errors.New("call failed")
	errCallIgnored = errors.New("call ignored")
)

func newMemoryBreakers(s BreakerSettings, onState func(string, int)) *memoryBreakers {
	return &memoryBreakers{settings: s, onState: onState,
		breakers: make(map[string]*gobreaker.TwoStepCircuitBreaker[struct{}]), openedAt: make(map[string]time.Time)}
}

func (m *memoryBreakers) get(key string) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.breakers[key]; ok {
		return b
	}
	b := gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        key,
		MaxRequests: uint32(m.settings.HalfOpenProbes),
		Timeout:     m.settings.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(m.settings.FailureThreshold) },
		IsExcluded:  func(err error) bool { return errors.Is(err, errCallIgnored) },
		OnStateChange: func(name string, _, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				m.mu.Lock()
				m.openedAt[name] = time.Now()
				m.mu.Unlock()
			}
			m.onState(name, int(to))
		},
	})
	m.breakers[key] = b
	return b
}

func (m *memoryBreakers) allow(_ context.Context, key string) (func(context.Context, callOutcome) int, int, time.Duration, error) {
	b := m.get(key)
	done, err := b.Allow()
	m.onState(key, int(b.State()))
	if err != nil {
		m.mu.Lock()
		retry := max(time.Until(m.openedAt[key].Add(m.settings.OpenFor)), 0)
		m.mu.Unlock()
		return nil, int(b.State()), retry, fmt.Errorf("%w: %w", ErrBreakerOpen, err)
	}
	return func(_ context.Context, o callOutcome) int {
		switch o {
		case outcomeSuccess:
			done(nil)
		case outcomeFailure:
			done(errCallFailed)
		default:
			done(errCallIgnored)
		}
		return int(b.State())
	}, int(b.State()), 0, nil
}

// redisBreakers keep each breaker's state in a Redis hash, changed by two
// scripts that run atomically: allow (may turn open into half-open and
// hands out probes) and record (counts the outcome and changes state). The
// state machine is gobreaker's — consecutive failures open, probes in
// half-open, a generation number so results of an older state are ignored.
//
// gobreaker v2's own DistributedCircuitBreaker is not used: it holds its
// shared lock for the whole protected call, which serialises every call to
// an endpoint across all replicas (at Lark's 100–300 ms latency that caps an
// endpoint at a few calls a second, far under the 50/s to be used); it reads
// the shared state before taking that lock, so concurrent updates get lost;
// and it polls a busy lock with 500 ms sleeps and takes no context.
type redisBreakers struct {
	client   redis.UniversalClient
	prefix   string
	settings BreakerSettings
	onState  func(key string, state int)
}

var _ breakerStore = (*redisBreakers)(nil)

// breakerKeep is how long an idle breaker's hash lives.
const breakerKeep = 24 * time.Hour

var breakerAllowScript = redis.NewScript(`
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local h = redis.call('HMGET', KEYS[1], 'st', 'gen', 'until', 'probes', 'probe_until')
local st = tonumber(h[1]) or 0
local gen = tonumber(h[2]) or 0
local untl = tonumber(h[3]) or 0
local probes = tonumber(h[4]) or 0
local pu = tonumber(h[5]) or 0
local maxreq = tonumber(ARGV[1])
if st == 2 then
  if now < untl then return {0, st, gen, untl - now} end
  st = 1
  gen = gen + 1
  probes = 0
  redis.call('HSET', KEYS[1], 'st', 1, 'gen', gen, 'succ', 0, 'probes', 0)
end
if st == 1 then
  -- the probes are out: callers back off (their own delay) until they report
  if probes >= maxreq and now < pu then return {0, st, gen, 0} end
  if probes >= maxreq then
    -- the probes never reported (their callers died): hand out new ones
    probes = 0
    redis.call('HSET', KEYS[1], 'succ', 0)
  end
  redis.call('HSET', KEYS[1], 'probes', probes + 1, 'probe_until', now + tonumber(ARGV[2]))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, st, gen, 0}
end
return {1, 0, gen, 0}`)

var breakerRecordScript = redis.NewScript(`
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local h = redis.call('HMGET', KEYS[1], 'st', 'gen', 'fails', 'succ', 'probes')
local st = tonumber(h[1]) or 0
local gen = tonumber(h[2]) or 0
local fails = tonumber(h[3]) or 0
local succ = tonumber(h[4]) or 0
local probes = tonumber(h[5]) or 0
if tonumber(ARGV[1]) ~= gen then return st end
local o = tonumber(ARGV[2])
local threshold = tonumber(ARGV[3])
local openms = tonumber(ARGV[4])
local maxreq = tonumber(ARGV[5])
local function open()
  redis.call('HSET', KEYS[1], 'st', 2, 'gen', gen + 1, 'until', now + openms, 'fails', 0, 'succ', 0, 'probes', 0)
  return 2
end
if st == 0 then
  if o == 2 then
    fails = fails + 1
    if fails >= threshold then st = open() else redis.call('HSET', KEYS[1], 'fails', fails) end
  elseif o == 1 and fails > 0 then
    redis.call('HSET', KEYS[1], 'fails', 0)
  end
elseif st == 1 then
  if probes > 0 then probes = probes - 1 end
  if o == 2 then
    st = open()
  elseif o == 1 then
    succ = succ + 1
    if succ >= maxreq then
      redis.call('HSET', KEYS[1], 'st', 0, 'gen', gen + 1, 'fails', 0, 'succ', 0, 'probes', 0)
      st = 0
    else
      redis.call('HSET', KEYS[1], 'succ', succ, 'probes', probes)
    end
  else
    redis.call('HSET', KEYS[1], 'probes', probes)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return st`)

func (r *redisBreakers) allow(ctx context.Context, key string) (func(context.Context, callOutcome) int, int, time.Duration, error) {
	k := r.prefix + "cb:" + key
	probeTTL := max(r.settings.OpenFor, 10*time.Second)
	res, err := breakerAllowScript.Run(ctx, r.client, []string{k}, r.settings.HalfOpenProbes, probeTTL.Milliseconds(), breakerKeep.Milliseconds()).Int64Slice()
	if err == nil && len(res) != 4 {
		err = fmt.Errorf("unexpected script answer %v", res)
	}
	if err != nil {
		return nil, stateClosed, 0, fmt.Errorf("reading circuit breaker %s: %w", key, err)
	}
	state, gen := int(res[1]), res[2]
	r.onState(key, state)
	if res[0] == 0 {
		return nil, state, time.Duration(res[3]) * time.Millisecond, fmt.Errorf("%w: %s is %s", ErrBreakerOpen, key, stateName(state))
	}
	return func(ctx context.Context, o callOutcome) int {
		st, err := breakerRecordScript.Run(ctx, r.client, []string{k}, gen, int(o), r.settings.FailureThreshold,
			r.settings.OpenFor.Milliseconds(), r.settings.HalfOpenProbes, breakerKeep.Milliseconds()).Int()
		if err != nil {
			return state // the outcome is lost; the breaker errs on the side of staying as it was
		}
		r.onState(key, st)
		return st
	}, state, 0, nil
}

func stateName(s int) string { return gobreaker.State(s).String() }
