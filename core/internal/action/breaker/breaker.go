// Package breaker keeps circuit breakers, one per key (the executor keys
// them by app and endpoint), so that calls stop going to a failing Lark
// endpoint and probes find out when it recovers. Memory keeps them in the
// process (gobreaker); Redis shares them with every replica through the
// same state machine.
package breaker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// ErrOpen is returned while a key's breaker is open (or half-open with its
// probes out). Retryable: the call was not made.
var ErrOpen = errors.New("circuit breaker open")

// Settings configure every breaker of a Store. Zero fields take defaults.
type Settings struct {
	// Disabled turns the breakers off: the caller does not ask a Store.
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

// WithDefaults fills b's zero fields.
func (b Settings) WithDefaults() Settings {
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
func (b Settings) Validate() error {
	if b.FailureThreshold < 1 || b.OpenFor <= 0 || b.HalfOpenProbes < 1 {
		return fmt.Errorf("action: breaker failure_threshold (%d) and half_open_probes (%d) must be at least 1 and open_for (%s) positive",
			b.FailureThreshold, b.HalfOpenProbes, b.OpenFor)
	}
	return nil
}

// Outcome is how a call counts for a breaker. Its values are passed to the
// Redis scripts: keep them.
type Outcome int

const (
	// OutcomeIgnored: neither success nor failure (rate limited, token
	// refetch, cancelled by the caller).
	OutcomeIgnored Outcome = iota
	// OutcomeSuccess: Lark answered, even with a business error.
	OutcomeSuccess
	// OutcomeFailure: Lark failed (5xx, timeout, transport).
	OutcomeFailure
)

// State is a breaker's state, numbered as gobreaker numbers them (the
// values of the Redis hash's st field and of the executor's
// larkway_action_breaker_state gauge).
type State int

// Breaker states.
const (
	StateClosed   = State(gobreaker.StateClosed)
	StateHalfOpen = State(gobreaker.StateHalfOpen)
	StateOpen     = State(gobreaker.StateOpen)
)

func (s State) String() string { return gobreaker.State(s).String() }

// Store keeps the breakers: Redis for every replica (*Redis) or the process
// (*Memory). Safe for concurrent use; no goroutines.
type Store interface {
	// Allow admits a call to key, returning done to report the call's
	// outcome with (it returns the state after it). It returns ErrOpen
	// (with how long until a probe may go, if known) when the breaker
	// refuses, or another error when the store fails.
	Allow(ctx context.Context, key string) (done func(ctx context.Context, o Outcome) State, state State, retryAfter time.Duration, err error)
}

// OnState is told a key's breaker state each time a Store sees it.
type OnState func(key string, state State)

// Memory keeps gobreaker TwoStepCircuitBreakers, one per key.
type Memory struct {
	settings Settings
	onState  OnState

	mu       sync.Mutex
	breakers map[string]*gobreaker.TwoStepCircuitBreaker[struct{}]
	openedAt map[string]time.Time
}

var _ Store = (*Memory)(nil)

var (
	errCallFailed  = errors.New("call failed")
	errCallIgnored = errors.New("call ignored")
)

// NewMemory returns breakers kept in the process, with s's defaults filled
// (onState nil: not told).
func NewMemory(s Settings, onState OnState) *Memory {
	if onState == nil {
		onState = func(string, State) {}
	}
	return &Memory{settings: s.WithDefaults(), onState: onState,
		breakers: make(map[string]*gobreaker.TwoStepCircuitBreaker[struct{}]), openedAt: make(map[string]time.Time)}
}

func (m *Memory) get(key string) *gobreaker.TwoStepCircuitBreaker[struct{}] {
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
			m.onState(name, State(to))
		},
	})
	m.breakers[key] = b
	return b
}

// Allow implements Store.
func (m *Memory) Allow(_ context.Context, key string) (func(context.Context, Outcome) State, State, time.Duration, error) {
	b := m.get(key)
	done, err := b.Allow()
	m.onState(key, State(b.State()))
	if err != nil {
		m.mu.Lock()
		retry := max(time.Until(m.openedAt[key].Add(m.settings.OpenFor)), 0)
		m.mu.Unlock()
		return nil, State(b.State()), retry, fmt.Errorf("%w: %w", ErrOpen, err)
	}
	return func(_ context.Context, o Outcome) State {
		switch o {
		case OutcomeSuccess:
			done(nil)
		case OutcomeFailure:
			done(errCallFailed)
		default:
			done(errCallIgnored)
		}
		return State(b.State())
	}, State(b.State()), 0, nil
}

// Redis keeps each breaker's state in a Redis hash, changed by two
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
//
// The hash (<prefix>cb:<key>: fields st, gen, until, fails, succ, probes,
// probe_until) and the scripts' meaning of it are shared by every replica,
// including replicas of the previous version during a rolling deploy:
// change them only in a way both versions read alike.
type Redis struct {
	client   redis.UniversalClient
	prefix   string
	settings Settings
	onState  OnState
}

var _ Store = (*Redis)(nil)

// NewRedis returns breakers shared through client, under
// prefix+"cb:"+key, with s's defaults filled (onState nil: not told). It
// does no I/O.
func NewRedis(client redis.UniversalClient, prefix string, s Settings, onState OnState) *Redis {
	if onState == nil {
		onState = func(string, State) {}
	}
	return &Redis{client: client, prefix: prefix, settings: s.WithDefaults(), onState: onState}
}

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

// Allow implements Store.
func (r *Redis) Allow(ctx context.Context, key string) (func(context.Context, Outcome) State, State, time.Duration, error) {
	k := r.prefix + "cb:" + key
	probeTTL := max(r.settings.OpenFor, 10*time.Second)
	res, err := breakerAllowScript.Run(ctx, r.client, []string{k}, r.settings.HalfOpenProbes, probeTTL.Milliseconds(), breakerKeep.Milliseconds()).Int64Slice()
	if err == nil && len(res) != 4 {
		err = fmt.Errorf("unexpected script answer %v", res)
	}
	if err != nil {
		return nil, StateClosed, 0, fmt.Errorf("reading circuit breaker %s: %w", key, err)
	}
	state, gen := State(res[1]), res[2]
	r.onState(key, state)
	if res[0] == 0 {
		return nil, state, time.Duration(res[3]) * time.Millisecond, fmt.Errorf("%w: %s is %s", ErrOpen, key, state)
	}
	return func(ctx context.Context, o Outcome) State {
		st, err := breakerRecordScript.Run(ctx, r.client, []string{k}, gen, int(o), r.settings.FailureThreshold,
			r.settings.OpenFor.Milliseconds(), r.settings.HalfOpenProbes, breakerKeep.Milliseconds()).Int()
		if err != nil {
			return state // the outcome is lost; the breaker errs on the side of staying as it was
		}
		r.onState(key, State(st))
		return State(st)
	}, state, 0, nil
}
