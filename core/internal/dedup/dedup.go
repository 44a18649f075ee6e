// Package dedup keeps redelivered events from producing a second result.
//
// Before a plugin gets an event, the dispatcher claims (plugin, dedup key)
// with a lease; after the result's actions are done it marks the pair done
// for a TTL longer than Lark's ~7.1 h retry window. A Lark re-push or our own
// redelivery of a done pair is acknowledged without delivery; a pair leased
// by another consumer is retried later; a lease whose holder died expires, so
// nothing blocks forever.
package dedup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultDoneTTL outlives Lark's retry ladder (15 s, 5 min, 1 h, 6 h).
const DefaultDoneTTL = 24 * time.Hour

// State is a claim's outcome.
type State int

const (
	// Claimed: the caller holds the lease and must call Done or Release.
	Claimed State = iota + 1
	// AlreadyDone: a result was already produced; acknowledge and skip.
	AlreadyDone
	// Busy: another holder's lease is live; try again later.
	Busy
)

func (s State) String() string {
	switch s {
	case Claimed:
		return "claimed"
	case AlreadyDone:
		return "done"
	case Busy:
		return "busy"
	}
	return "unknown"
}

// Lease identifies a claim, for Done and Release.
type Lease struct {
	key, token string
}

// Store is the claim/done store. Implementations are safe for concurrent use.
type Store interface {
	// Claim tries to lease (plugin, key) for d.
	Claim(ctx context.Context, plugin, key string, d time.Duration) (State, Lease, error)
	// Done marks the pair done for ttl, replacing the lease.
	Done(ctx context.Context, l Lease, ttl time.Duration) error
	// Release drops the lease if still held, so a redelivery can claim it.
	Release(ctx context.Context, l Lease) error
}

const doneValue = "done"

func storeKey(plugin, key string) string { return plugin + "\x00" + key }

func newToken() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "lease-" + hex.EncodeToString(b)
}

// Memory is the embedded, single-process Store.
type Memory struct {
	mu      sync.Mutex
	entries map[string]memEntry
	now     func() time.Time
	sweep   time.Time
	seq     uint64 // lease tokens
}

type memEntry struct {
	value   string
	expires time.Time
}

// NewMemory returns an empty store.
func NewMemory() *Memory { return &Memory{entries: map[string]memEntry{}, now: time.Now} }

// Claim implements Store.
func (m *Memory) Claim(_ context.Context, plugin, key string, d time.Duration) (State, Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.expire(now)
	k := storeKey(plugin, key)
	if e, ok := m.entries[k]; ok && now.Before(e.expires) {
		if e.value == doneValue {
			return AlreadyDone, Lease{}, nil
		}
		return Busy, Lease{}, nil
	}
	// One process: a counter tells lease holders apart as well as the
	// random tokens Redis needs across replicas, without their cost.
	m.seq++
	l := Lease{key: k, token: "m" + strconv.FormatUint(m.seq, 36)}
	m.entries[k] = memEntry{value: l.token, expires: now.Add(d)}
	return Claimed, l, nil
}

// Done implements Store.
func (m *Memory) Done(_ context.Context, l Lease, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries[l.key] = memEntry{value: doneValue, expires: m.now().Add(ttl)}
	return nil
}

// Release implements Store.
func (m *Memory) Release(_ context.Context, l Lease) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[l.key]; ok && e.value == l.token {
		delete(m.entries, l.key)
	}
	return nil
}

// expire drops expired entries at most once a minute (amortized).
func (m *Memory) expire(now time.Time) {
	if now.Before(m.sweep) {
		return
	}
	for k, e := range m.entries {
		if !now.Before(e.expires) {
			delete(m.entries, k)
		}
	}
	m.sweep = now.Add(time.Minute)
}

// Redis shares claims across replicas.
type Redis struct {
	client redis.UniversalClient
	prefix string
}

// NewRedis uses client with keys under prefix (e.g. "larkway:dedup:").
func NewRedis(client redis.UniversalClient, prefix string) *Redis {
	return &Redis{client: client, prefix: prefix}
}

// ErrStore classes store failures (Redis down): the caller should retry the
// delivery later rather than deliver without dedup.
var ErrStore = errors.New("dedup store unavailable")

// claimScript sets the lease unless a live value exists, and returns the
// existing value (or "" when it claimed) in one round trip.
var claimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ''
`)

// releaseScript deletes the key only if this lease still holds it.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// doneScript marks done unless the key was already marked done (idempotent)
// — it overwrites a lease, ours or an expired holder's.
var doneScript = redis.NewScript(`
redis.call('SET', KEYS[1], 'done', 'PX', ARGV[1])
return 1
`)

// Claim implements Store.
func (r *Redis) Claim(ctx context.Context, plugin, key string, d time.Duration) (State, Lease, error) {
	l := Lease{key: r.prefix + plugin + ":" + key, token: newToken()}
	v, err := claimScript.Run(ctx, r.client, []string{l.key}, l.token, d.Milliseconds()).Text()
	if err != nil {
		return 0, Lease{}, fmt.Errorf("claiming %s/%s: %w: %w", plugin, key, ErrStore, err)
	}
	switch v {
	case "":
		return Claimed, l, nil
	case doneValue:
		return AlreadyDone, Lease{}, nil
	default:
		return Busy, Lease{}, nil
	}
}

// Done implements Store.
func (r *Redis) Done(ctx context.Context, l Lease, ttl time.Duration) error {
	if err := doneScript.Run(ctx, r.client, []string{l.key}, ttl.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("marking %s done: %w: %w", l.key, ErrStore, err)
	}
	return nil
}

// Release implements Store.
func (r *Redis) Release(ctx context.Context, l Lease) error {
	if err := releaseScript.Run(ctx, r.client, []string{l.key}, l.token).Err(); err != nil {
		return fmt.Errorf("releasing %s: %w: %w", l.key, ErrStore, err)
	}
	return nil
}
