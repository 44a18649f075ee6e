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
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
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
	key, token string // Redis
	mkey       memKey // Memory
	mtoken     uint64 // Memory; never 0
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

func newToken() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "lease-" + hex.EncodeToString(b)
}

// Memory is the embedded, single-process Store.
//
// Done markers live DefaultDoneTTL (24 h), so at webhook rates they are most
// of the store: entries expire in insertion order from a FIFO instead of a
// periodic sweep of the whole map (which stalled every claim for as long as
// it took), and at most MaxEntries are kept, the oldest dropped first. A
// dropped done marker only matters if Lark re-pushes that event later,
// which it stops doing after ~7.1 h; the bound is sized to hold more than
// that at a few hundred events/s. Redis (several replicas, or higher rates)
// has no such bound.
type Memory struct {
	mu      sync.Mutex
	entries map[memKey]memEntry
	order   []memRef // insertion order; oldest first from head
	head    int
	max     int
	now     func() time.Time
	base    time.Time // expiry times are offsets from it
	seed    [2]maphash.Seed
	seq     uint64 // lease tokens and insertion generations
}

// DefaultMaxEntries bounds an embedded store: 2 M keys, some 250 MB at most
// (measured: 243 MB, whatever the key length).
const DefaultMaxEntries = 2_000_000

// memKey is (plugin, key) hashed to 128 bits with two random seeds: keys
// of any length cost 16 bytes, and neither the map nor the order holds a
// pointer for the garbage collector to scan (the store holds millions of
// entries). Two different pairs collide with probability about n²/2¹²⁹,
// some 10⁻²⁶ at the bound: never, in practice.
type memKey [2]uint64

type memEntry struct {
	token   uint64 // the lease holder's; doneToken once done
	expires int64  // ns after base
	gen     uint64 // which order record owns the entry
}

const doneToken = 0

// memRef is one insertion in order.
type memRef struct {
	key memKey
	gen uint64
}

// NewMemory returns an empty store bounded by DefaultMaxEntries.
func NewMemory() *Memory { return NewMemoryBounded(DefaultMaxEntries) }

// NewMemoryBounded returns an empty store keeping at most max keys.
func NewMemoryBounded(max int) *Memory {
	return &Memory{entries: map[memKey]memEntry{}, max: max, now: time.Now, base: time.Now(),
		seed: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
}

func (m *Memory) key(plugin, key string) memKey {
	var k memKey
	for i, seed := range m.seed {
		var h maphash.Hash
		h.SetSeed(seed)
		// Length-prefixed, so no two pairs write the same bytes.
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(plugin)))
		_, _ = h.Write(n[:])
		_, _ = h.WriteString(plugin)
		_, _ = h.WriteString(key)
		k[i] = h.Sum64()
	}
	return k
}

// clock is now as an offset from base (monotonic when now is time.Now).
func (m *Memory) clock() int64 { return int64(m.now().Sub(m.base)) }

// after is offset now plus d, saturating as time.Time.Add does: a huge TTL
// must mean "never expires", not wrap around to "expired".
func after(now int64, d time.Duration) int64 {
	if d > 0 && now > math.MaxInt64-int64(d) {
		return math.MaxInt64
	}
	return now + int64(d)
}

// Claim implements Store.
func (m *Memory) Claim(_ context.Context, plugin, key string, d time.Duration) (State, Lease, error) {
	k := m.key(plugin, key) // outside the lock: hashing needs no state
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock()
	m.expire(now)
	if e, ok := m.entries[k]; ok && now < e.expires {
		if e.token == doneToken {
			return AlreadyDone, Lease{}, nil
		}
		return Busy, Lease{}, nil
	}
	// One process: a counter tells lease holders apart as well as the
	// random tokens Redis needs across replicas, without their cost.
	m.seq++
	l := Lease{mkey: k, mtoken: m.seq}
	m.put(k, memEntry{token: l.mtoken, expires: after(now, d)})
	return Claimed, l, nil
}

// Done implements Store.
func (m *Memory) Done(_ context.Context, l Lease, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	expires := after(m.clock(), ttl)
	if e, ok := m.entries[l.mkey]; ok {
		// In place: the key keeps its claim's place in the eviction order
		// (seconds older), and the map and order do not grow a second time
		// per event.
		e.token, e.expires = doneToken, expires
		m.entries[l.mkey] = e
		return nil
	}
	m.put(l.mkey, memEntry{token: doneToken, expires: expires})
	return nil
}

// Release implements Store.
func (m *Memory) Release(_ context.Context, l Lease) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[l.mkey]; ok && e.token == l.mtoken {
		delete(m.entries, l.mkey)
	}
	return nil
}

// put stores e under k as its newest insertion, evicting the oldest keys
// beyond the bound. Callers hold m.mu.
func (m *Memory) put(k memKey, e memEntry) {
	m.seq++
	e.gen = m.seq
	m.entries[k] = e
	m.order = append(m.order, memRef{key: k, gen: e.gen})
	for len(m.entries) > m.max && m.head < len(m.order) {
		m.pop()
	}
}

// pop drops the oldest order record, and its key if no newer insertion
// replaced it. Callers hold m.mu.
func (m *Memory) pop() {
	r := m.order[m.head]
	m.order[m.head] = memRef{}
	m.head++
	if e, ok := m.entries[r.key]; ok && e.gen == r.gen {
		delete(m.entries, r.key)
	}
	if m.head > len(m.order)/2 && m.head > 1024 {
		// Reclaim the consumed front now and then (amortized O(1)).
		m.order = append(m.order[:0:0], m.order[m.head:]...)
		m.head = 0
	}
}

// expire drops expired keys from the front of the insertion order. Keys
// with different TTLs interleave, so an expired key behind a live one waits
// for it (bounded by MaxEntries); lookups check expiry themselves.
// Callers hold m.mu.
func (m *Memory) expire(now int64) {
	for m.head < len(m.order) {
		r := m.order[m.head]
		e, ok := m.entries[r.key]
		if ok && e.gen == r.gen && now < e.expires {
			return
		}
		m.pop()
	}
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
