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
// embedded bus: claims and done markers in a KV on local disk, so that a
// restart after a crash never runs a handler again for an event it already
// finished. Markers are written without an fsync of their own: a process
// crash loses at most the last microseconds' (they reach the kernel's page
// cache at once), and the bus
// fsyncs its log with every publish and at least every
// embedded.SyncInterval, which bounds what a machine crash can lose. A lost
// lease only means an earlier retry.
type Durable struct {
	kv    KV
	now   func() time.Time
	epoch string // tells this process's lease tokens from an earlier one's

	// locks make Claim's and Release's check-then-write atomic per key;
	// striped, so that look-ups of different keys (which may read the
	// disk) do not wait for each other.
	locks [64]sync.Mutex
	seq   atomic.Uint64
}

func (s *Durable) lock(k string) *sync.Mutex {
	return &s.locks[maphash.String(lockSeed, k)%uint64(len(s.locks))]
}

var lockSeed = maphash.MakeSeed()

// NewDurable returns a Store on kv.
func NewDurable(kv KV) *Durable {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return &Durable{kv: kv, now: time.Now, epoch: "lease-" + hex.EncodeToString(b) + "-"}
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
	v, ok, err := s.kv.Get(k)
	if err != nil {
		return 0, Lease{}, fmt.Errorf("claiming %s/%s: %w: %w", plugin, key, ErrStore, err)
	}
	if ok {
		if string(v) == doneValue {
			return AlreadyDone, Lease{}, nil
		}
		return Busy, Lease{}, nil
	}
	l := Lease{key: k, token: s.epoch + strconv.FormatUint(s.seq.Add(1), 36)}
	if err := s.kv.Put(k, []byte(l.token), s.now().Add(d), false); err != nil {
		return 0, Lease{}, fmt.Errorf("claiming %s/%s: %w: %w", plugin, key, ErrStore, err)
	}
	return Claimed, l, nil
}

// Done implements Store.
func (s *Durable) Done(_ context.Context, l Lease, ttl time.Duration) error {
	if err := s.kv.Put(l.key, []byte(doneValue), s.now().Add(ttl), false); err != nil {
		return fmt.Errorf("marking %s done: %w: %w", l.key, ErrStore, err)
	}
	return nil
}

// Release implements Store.
func (s *Durable) Release(_ context.Context, l Lease) error {
	mu := s.lock(l.key)
	mu.Lock()
	defer mu.Unlock()
	v, ok, err := s.kv.Get(l.key)
	if err == nil && ok && string(v) == l.token {
		err = s.kv.Delete(l.key)
	}
	if err != nil {
		return fmt.Errorf("releasing %s: %w: %w", l.key, ErrStore, err)
	}
	return nil
}
