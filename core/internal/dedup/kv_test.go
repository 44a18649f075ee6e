package dedup

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// mapKV is a KV in a map with a horizon of its own choosing, counting the
// look-ups that reach it.
type mapKV struct {
	mu      sync.Mutex
	m       map[string]mapValue
	now     func() time.Time
	horizon time.Time
	gets    int
}

type mapValue struct {
	v       []byte
	expires time.Time
}

func newMapKV(now func() time.Time) *mapKV { return &mapKV{m: map[string]mapValue{}, now: now} }

func (k *mapKV) Get(key string) ([]byte, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.gets++
	v, ok := k.m[key]
	if !ok || !k.now().Before(v.expires) {
		return nil, false, nil
	}
	return v.v, true, nil
}

func (k *mapKV) Put(key string, value []byte, expires time.Time, _ bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[key] = mapValue{v: append([]byte(nil), value...), expires: expires}
	return nil
}

func (k *mapKV) Delete(key string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.m, key)
	return nil
}

func (k *mapKV) Horizon() (time.Time, error) { return k.horizon, nil }

func (k *mapKV) getCount() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.gets
}

// On a store that held no key at the start, a claim of a key this process
// never wrote does not read the disk; one of a key it wrote does, and gets
// the disk's answer.
func TestDurableFrontSkipsDiskForNewKeys(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	kv := newMapKV(func() time.Time { return now })
	s := NewDurable(kv)
	s.now = func() time.Time { return now }
	for i := range 1000 {
		st, l, err := s.Claim(ctx, "p", fmt.Sprint("new-", i), time.Minute)
		if st != Claimed || err != nil {
			t.Fatalf("claim %d: %v %v", i, st, err)
		}
		if i%2 == 0 {
			if err := s.Done(ctx, l, time.Hour); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A 1 % false-positive rate: a handful of reads at most.
	if n := kv.getCount(); n > 50 {
		t.Fatalf("%d disk look-ups for 1000 new keys", n)
	}
	for i, want := range map[int]State{0: AlreadyDone, 1: Busy, 998: AlreadyDone, 999: Busy} {
		if st, _, _ := s.Claim(ctx, "p", fmt.Sprint("new-", i), time.Minute); st != want {
			t.Fatalf("claim again of key %d: %v, want %v", i, st, want)
		}
	}
	// Expired leases and released keys are claimable again.
	now = now.Add(2 * time.Minute)
	if st, l, _ := s.Claim(ctx, "p", "new-1", time.Minute); st != Claimed {
		t.Fatalf("claim after the lease expired: %v", st)
	} else if err := s.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := s.Claim(ctx, "p", "new-1", time.Minute); st != Claimed {
		t.Fatalf("claim after release: %v", st)
	}
}

// Keys an earlier process left are found on disk until the last of them
// expires (the KV's horizon); after it the disk is left alone. A KV that
// cannot tell its horizon is always read.
func TestDurableReadsDiskUntilHorizon(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	kv := newMapKV(func() time.Time { return now })
	_ = kv.Put(durableKey("p", "earlier"), []byte(doneValue), now.Add(time.Hour), false)
	kv.horizon = now.Add(time.Hour)
	s := NewDurable(kv)
	s.now = func() time.Time { return now }
	if st, _, _ := s.Claim(ctx, "p", "earlier", time.Minute); st != AlreadyDone {
		t.Fatalf("an earlier process's done event: %v", st)
	}
	// An earlier version wrote leases to disk: honoured until they expire.
	_ = kv.Put(durableKey("p", "leased"), []byte("lease-x"), now.Add(time.Minute), false)
	if st, _, _ := s.Claim(ctx, "p", "leased", time.Minute); st != Busy {
		t.Fatalf("an earlier version's lease on disk: %v", st)
	}
	before := kv.getCount()
	if st, _, _ := s.Claim(ctx, "p", "fresh", time.Minute); st != Claimed || kv.getCount() == before {
		t.Fatalf("claim before the horizon: %v, %d look-ups", st, kv.getCount()-before)
	}
	now = now.Add(time.Hour)
	before = kv.getCount()
	for i := range 100 {
		if st, _, _ := s.Claim(ctx, "p", fmt.Sprint("after-", i), time.Minute); st != Claimed {
			t.Fatalf("claim after the horizon: %v", st)
		}
	}
	if n := kv.getCount() - before; n > 10 {
		t.Fatalf("%d disk look-ups after the horizon", n)
	}

	plain := struct{ KV }{newMapKV(time.Now)} // no Horizon
	s = NewDurable(plain)
	_, _, _ = s.Claim(ctx, "p", "k", time.Minute)
	if plain.KV.(*mapKV).getCount() != 1 {
		t.Fatal("a KV without a horizon was not read")
	}
}

// Beyond its bound the front drops its oldest generation early: keys in it
// are looked up on disk again until they expire, so none is missed.
func TestDurableFrontDropsGenerationsSafely(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	kv := newMapKV(func() time.Time { return now })
	s := NewDurable(kv)
	s.now = func() time.Time { return now }
	s.front.genKeys, s.front.maxGens = 10, 2
	for i := range 50 {
		_, l, _ := s.Claim(ctx, "p", fmt.Sprint("k", i), time.Minute)
		if err := s.Done(ctx, l, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 {
		if st, _, _ := s.Claim(ctx, "p", fmt.Sprint("k", i), time.Minute); st != AlreadyDone {
			t.Fatalf("key %d after its generation was dropped: %v", i, st)
		}
	}
	// Generations whose keys all expired go, and with them the disk reads.
	now = now.Add(2 * time.Hour)
	before := kv.getCount()
	for i := range 5 {
		if st, _, _ := s.Claim(ctx, "p", fmt.Sprint("later", i), time.Minute); st != Claimed {
			t.Fatalf("claim after expiry: %v", st)
		}
	}
	if n := kv.getCount() - before; n > 2 {
		t.Fatalf("%d disk look-ups once every dropped key expired", n)
	}
	if len(s.front.gens) > 2 {
		t.Fatalf("%d generations kept", len(s.front.gens))
	}
}

// Leases live in memory: Done and Release drop them, and expired ones that
// neither dropped (a consumer that died mid-delivery) are swept as the map
// grows, so it stays within about twice the leases live at once.
func TestDurableLeasesDoNotAccumulate(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	s := NewDurable(newMapKV(func() time.Time { return now }))
	s.now = func() time.Time { return now }
	held := func() int {
		s.leaseMu.Lock()
		defer s.leaseMu.Unlock()
		return len(s.leases)
	}
	for i := range 1000 {
		_, l, _ := s.Claim(ctx, "p", fmt.Sprint("finished-", i), time.Minute)
		if i%2 == 0 {
			_ = s.Done(ctx, l, time.Hour)
		} else {
			_ = s.Release(ctx, l)
		}
	}
	if n := held(); n != 0 {
		t.Fatalf("%d leases held after every claim was done or released", n)
	}
	for i := range 3000 {
		if st, _, _ := s.Claim(ctx, "p", fmt.Sprint("abandoned-", i), time.Second); st != Claimed {
			t.Fatalf("claim %d: %v", i, st)
		}
	}
	now = now.Add(2 * time.Second)
	for i := range 3000 {
		if st, _, _ := s.Claim(ctx, "p", fmt.Sprint("live-", i), time.Minute); st != Claimed {
			t.Fatalf("claim %d: %v", i, st)
		}
	}
	// The abandoned leases expired and were swept when the map outgrew its
	// last sweep; the live ones stay.
	if n := held(); n != 3000 {
		t.Fatalf("%d leases held, want the 3000 live ones", n)
	}
}
