package dedup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bits-and-blooms/bloom/v3"
)

// KV is a durable key space with expiring keys, such as the embedded
// bus's State (bus/embedded): Put with sync returns once the write is on
// disk.
type KV interface {
	Get(key string) (value []byte, ok bool, err error)
	Put(key string, value []byte, expires time.Time, sync bool) error
	Delete(key string) error
}

// Durable is the single-process Store of a core without Redis on the
// embedded bus: done markers in a KV on local disk, so that a restart after
// a crash never runs a handler again for an event it already finished.
// Markers are written without an fsync of their own: a process crash loses
// at most the last microseconds' (they reach the kernel's page cache at
// once), and the bus fsyncs its log with every publish and at least every
// embedded.SyncInterval, which bounds what a machine crash can lose.
//
// Leases stay in memory: one process uses the store, and a lease only
// keeps this process's consumers from running one event twice at once;
// after a crash its holder is gone, so a lease on disk would only delay
// the redelivery until it expired. (A lease an earlier version wrote to
// disk is still honoured until it expires.) That saves a write per event.
//
// Nearly every claim is of a key that does not exist, and a look-up of a
// missing key in the store reads the filter and index blocks of several
// sstables (7 % of the embedded core's CPU under load). So the keys this
// process marks done are also added to a Bloom filter (front), and a claim
// whose key the filter has never seen is answered "absent" without the
// disk, once no key an earlier process wrote can still be live (the KV's
// Horizon, read at the first claim; a KV without one is always read).
type Durable struct {
	kv    KV
	now   func() time.Time
	epoch string // tells this process's lease tokens from an earlier one's

	front   front
	horizon struct {
		once  sync.Once
		until time.Time // earlier processes' keys may be live until then
	}

	// locks make Claim's check-then-set atomic per key; striped, so that
	// look-ups of different keys (which may read the disk) do not wait for
	// each other.
	locks [64]sync.Mutex
	seq   atomic.Uint64

	leaseMu   sync.Mutex
	leases    map[string]memLease
	nextSweep int // sweep expired leases when the map grows past it
}

type memLease struct {
	token   string
	expires time.Time
}

func (s *Durable) lock(k string) *sync.Mutex {
	return &s.locks[maphash.String(lockSeed, k)%uint64(len(s.locks))]
}

var lockSeed = maphash.MakeSeed()

// NewDurable returns a Store on kv.
func NewDurable(kv KV) *Durable {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return &Durable{kv: kv, now: time.Now, epoch: "lease-" + hex.EncodeToString(b) + "-",
		leases: map[string]memLease{}, nextSweep: 1024}
}

// durableKey length-prefixes plugin so that no two pairs share a key.
func durableKey(plugin, key string) string {
	return strconv.Itoa(len(plugin)) + ":" + plugin + key
}

// Claim implements Store.
func (s *Durable) Claim(_ context.Context, plugin, key string, d time.Duration) (State, Lease, error) {
	k := durableKey(plugin, key)
	mu := s.lock(k)
	mu.Lock()
	defer mu.Unlock()
	now := s.now()
	s.leaseMu.Lock()
	held, ok := s.leases[k]
	s.leaseMu.Unlock()
	if ok && now.Before(held.expires) {
		return Busy, Lease{}, nil
	}
	if s.front.mayHold(k, now) || now.Before(s.diskUntil()) {
		v, ok, err := s.kv.Get(k)
		if err != nil {
			return 0, Lease{}, fmt.Errorf("claiming %s/%s: %w: %w", plugin, key, ErrStore, err)
		}
		if ok {
			if string(v) == doneValue {
				return AlreadyDone, Lease{}, nil
			}
			return Busy, Lease{}, nil // an earlier version's lease on disk
		}
	}
	l := Lease{key: k, token: s.epoch + strconv.FormatUint(s.seq.Add(1), 36)}
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	s.leases[k] = memLease{token: l.token, expires: now.Add(d)}
	if len(s.leases) > s.nextSweep {
		// Done and Release drop leases; this catches any left behind.
		for k, l := range s.leases {
			if !now.Before(l.expires) {
				delete(s.leases, k)
			}
		}
		s.nextSweep = 2*len(s.leases) + 1024
	}
	return Claimed, l, nil
}

// Done implements Store.
func (s *Durable) Done(_ context.Context, l Lease, ttl time.Duration) error {
	expires := s.now().Add(ttl)
	// Into the filter before the store, so that no claim can miss a key
	// that is on disk.
	s.front.add(l.key, expires)
	if err := s.kv.Put(l.key, []byte(doneValue), expires, false); err != nil {
		return fmt.Errorf("marking %s done: %w: %w", l.key, ErrStore, err)
	}
	// After the marker: a claim in between finds the lease (Busy), never
	// neither.
	s.leaseMu.Lock()
	delete(s.leases, l.key)
	s.leaseMu.Unlock()
	return nil
}

// Release implements Store.
func (s *Durable) Release(_ context.Context, l Lease) error {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if held, ok := s.leases[l.key]; ok && held.token == l.token {
		delete(s.leases, l.key)
	}
	return nil
}

// HorizonKV is a KV that can tell until when any of its keys may be live:
// zero if it holds none (State.Horizon in bus/embedded).
type HorizonKV interface {
	KV
	Horizon() (time.Time, error)
}

// forever is a horizon never reached.
var forever = time.Unix(1<<62, 0)

// diskUntil is until when a key missing from the front may still be live on
// disk: an earlier process's keys (the KV's horizon, read once), or keys
// of this process whose filter generation was dropped early (front.lost).
func (s *Durable) diskUntil() time.Time {
	s.horizon.once.Do(func() {
		s.horizon.until = forever
		if h, ok := s.kv.(HorizonKV); ok {
			if until, err := h.Horizon(); err == nil {
				// On an error, read the disk as if it held keys forever.
				s.horizon.until = until
			}
		}
	})
	if lost := s.front.lostUntil(); lost.After(s.horizon.until) {
		return lost
	}
	return s.horizon.until
}

// front is a Bloom filter of the keys this process wrote, in generations:
// a generation is dropped once every key written into it has expired, so
// memory follows the keys live within their TTL, not the process's age.
// Beyond frontGenerations (a long TTL at a high rate), the oldest is
// dropped early and its keys are looked up on disk until they expire
// (lost).
type front struct {
	mu   sync.Mutex
	gens []*generation // oldest first; the last takes new keys
	lost time.Time
	// genKeys and maxGens: frontGenKeys and frontGenerations when zero
	// (tests shrink them).
	genKeys, maxGens uint
}

type generation struct {
	filter  *bloom.BloomFilter
	n       uint
	expires time.Time // the latest expiry of a key added
}

const (
	// frontGenKeys sizes a generation for a 1 % false-positive rate
	// (1.2 MB); frontGenerations bounds the front to about 38 MB, 32 M
	// keys: a day of done markers at 370 events/s.
	frontGenKeys     = 1 << 20
	frontGenerations = 32
	frontFPRate      = 0.01
)

// mayHold reports whether key may have been added and may still be live.
func (f *front) mayHold(key string, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.expire(now)
	for _, g := range f.gens {
		if g.filter.TestString(key) {
			return true
		}
	}
	return false
}

func (f *front) add(key string, expires time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	genKeys, maxGens := f.genKeys, f.maxGens
	if genKeys == 0 {
		genKeys, maxGens = frontGenKeys, frontGenerations
	}
	if len(f.gens) == 0 || f.gens[len(f.gens)-1].n >= genKeys {
		if uint(len(f.gens)) >= maxGens {
			if old := f.gens[0]; old.expires.After(f.lost) {
				f.lost = old.expires
			}
			f.gens = f.gens[1:]
		}
		f.gens = append(f.gens, &generation{filter: bloom.NewWithEstimates(genKeys, frontFPRate)})
	}
	g := f.gens[len(f.gens)-1]
	g.filter.AddString(key)
	g.n++
	if expires.After(g.expires) {
		g.expires = expires
	}
}

func (f *front) lostUntil() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lost
}

// expire drops full generations whose keys have all expired. Callers hold
// f.mu.
func (f *front) expire(now time.Time) {
	for len(f.gens) > 1 && !now.Before(f.gens[0].expires) {
		f.gens[0] = nil
		f.gens = f.gens[1:]
	}
}
