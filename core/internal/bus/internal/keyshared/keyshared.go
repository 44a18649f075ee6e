// Package keyshared is the Key_Shared dispatch state that bus/memory and
// bus/embedded share: a subscription's pending entries in seq order, its open
// consumers, and the keys pinned to the consumer holding their in-flight
// entries. Consumers split the keys by rendezvous hashing, so a consumer
// that leaves moves only its own keys. It also holds what a consumer does
// the same way in both: waiting for an entry it may take, its hand-outs'
// claim rules, and its close. Where messages live (RAM or disk), and how a
// hand-out, an ack or a nack reaches them, stay with each bus.
//
// A State is not safe for concurrent use: callers guard it with their
// subscription's mutex.
package keyshared

import (
	"context"
	"hash/maphash"
	"iter"
	"slices"
	"sync"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
)

// Message is what the dispatch needs of a stored message.
type Message interface {
	Key() string
	Seq() uint64 // publish order within the topic
}

// Entry is a message's state within one subscription.
type Entry[M Message] struct {
	M          M
	Deliveries int
	ReadyAt    time.Time // redelivery not before; zero when ready
}

// Owner pins a key to the consumer holding its in-flight entries.
type Owner[C comparable] struct {
	C        C
	Inflight int
}

type member[C comparable] struct {
	c    C
	salt uint64
}

// State is one subscription's dispatch state. The zero value is not usable;
// call New.
type State[C comparable, M Message] struct {
	seed    maphash.Seed
	pending []*Entry[M]          // not handed out, ordered by seq
	owners  map[string]*Owner[C] // keys with entries handed out
	active  []member[C]          // open consumers, not closing
	changed chan struct{}        // closed and replaced on a change while watched
	watched bool                 // someone waits on changed
}

// New returns an empty state hashing keys with seed.
func New[C comparable, M Message](seed maphash.Seed) *State[C, M] {
	return &State[C, M]{
		seed:    seed,
		owners:  make(map[string]*Owner[C]),
		changed: make(chan struct{}),
	}
}

// Salt derives a consumer's hashing salt from a number unique to it.
func Salt(id uint64) uint64 { return mix(id) }

// Notify wakes everyone waiting on the channel Watch returned.
func (s *State[C, M]) Notify() {
	if !s.watched { // nobody waits: a new channel per ack was garbage
		return
	}
	s.watched = false
	close(s.changed)
	s.changed = make(chan struct{})
}

// Watch returns a channel closed at the next change.
func (s *State[C, M]) Watch() <-chan struct{} {
	s.watched = true
	return s.changed
}

// Join adds open consumer c, hashed with salt.
func (s *State[C, M]) Join(c C, salt uint64) {
	s.active = append(s.active, member[C]{c: c, salt: salt})
	s.Notify()
}

// Leave removes c from the open consumers: keys hashed to it move to the
// others, keys pinned to it stay until Release.
func (s *State[C, M]) Leave(c C) {
	s.active = slices.DeleteFunc(s.active, func(m member[C]) bool { return m.c == c })
	s.Notify() // keys hashed to c move to the other consumers
}

// pick returns the open consumer that key hashes to (rendezvous hashing);
// ok is false when there is none.
func (s *State[C, M]) pick(key string) (best C, ok bool) {
	h := maphash.String(s.seed, key)
	var bestScore uint64
	for _, m := range s.active {
		if score := mix(h ^ m.salt); !ok || score > bestScore {
			best, bestScore, ok = m.c, score, true
		}
	}
	return best, ok
}

// mix is the splitmix64 finalizer.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Next finds the first pending entry c may take now. When there is none it
// returns -1 and the earliest time a delayed entry becomes ready (zero if
// none).
func (s *State[C, M]) Next(c C, now time.Time) (int, time.Time) {
	var wake time.Time
	var picked map[string]bool // keys already hashed during this scan
	for i, e := range s.pending {
		if e.ReadyAt.After(now) {
			if wake.IsZero() || e.ReadyAt.Before(wake) {
				wake = e.ReadyAt
			}
			continue
		}
		key := e.M.Key()
		if o := s.owners[key]; o != nil {
			if o.C == c {
				return i, time.Time{}
			}
			continue
		}
		if len(s.active) == 1 {
			// The common case needs no hashing (and no map).
			if s.active[0].c == c {
				return i, time.Time{}
			}
			continue
		}
		mine, ok := picked[key]
		if !ok {
			p, found := s.pick(key)
			mine = found && p == c
			if picked == nil {
				picked = make(map[string]bool)
			}
			picked[key] = mine
		}
		if mine {
			return i, time.Time{}
		}
	}
	return -1, wake
}

// Take removes pending entry i (from Next), counts the delivery and pins its
// key to c until Release.
func (s *State[C, M]) Take(c C, i int) *Entry[M] {
	e := s.pending[i]
	// Entries are taken from near the front: shift the i before it one
	// place right and drop the first slot, O(i) rather than O(len) — a
	// deep backlog must not make every hand-out copy all of it.
	copy(s.pending[1:i+1], s.pending[:i])
	s.pending[0] = nil
	s.pending = s.pending[1:]
	e.Deliveries++
	e.ReadyAt = time.Time{}
	key := e.M.Key()
	o := s.owners[key]
	if o == nil {
		o = &Owner[C]{C: c}
		s.owners[key] = o
	}
	o.Inflight++
	return e
}

// Release unpins e's key from its consumer once nothing of it is in flight.
func (s *State[C, M]) Release(e *Entry[M]) {
	key := e.M.Key()
	if o := s.owners[key]; o != nil {
		if o.Inflight--; o.Inflight <= 0 {
			delete(s.owners, key)
		}
	}
}

// Offer adds published entry e and wakes the consumers waiting.
func (s *State[C, M]) Offer(e *Entry[M]) {
	s.Insert(e)
	s.Notify()
}

// Insert puts e among the pending entries in seq order: publishes that land
// out of seq order, and redeliveries, take their place.
func (s *State[C, M]) Insert(e *Entry[M]) {
	seq := e.M.Seq()
	if n := len(s.pending); n == 0 || s.pending[n-1].M.Seq() < seq {
		s.pending = append(s.pending, e)
		return
	}
	i, _ := slices.BinarySearchFunc(s.pending, seq, func(p *Entry[M], seq uint64) int {
		switch ps := p.M.Seq(); {
		case ps < seq:
			return -1
		case ps > seq:
			return 1
		}
		return 0
	})
	s.pending = slices.Insert(s.pending, i, e)
}

// Append adds e after every pending entry, without looking at its message:
// for a caller that reads entries in seq order before their messages.
func (s *State[C, M]) Append(e *Entry[M]) { s.pending = append(s.pending, e) }

// Pending returns the pending entries, in seq order; the caller must not
// modify the slice.
func (s *State[C, M]) Pending() []*Entry[M] { return s.pending }

// Backlog counts the entries not yet settled: pending or handed out.
func (s *State[C, M]) Backlog() int {
	n := len(s.pending)
	for _, o := range s.owners {
		n += o.Inflight
	}
	return n
}

// Consumers counts the open consumers.
func (s *State[C, M]) Consumers() int { return len(s.active) }

// Owners yields the pinned keys with their owners.
func (s *State[C, M]) Owners() iter.Seq2[string, Owner[C]] {
	return func(yield func(string, Owner[C]) bool) {
		for k, o := range s.owners {
			if !yield(k, *o) {
				return
			}
		}
	}
}

// Receive waits until consumer c may take a pending entry and calls take
// with it, under mu, returning what take returns. It fails with ctx's error
// when ctx ends and with bus.ErrClosed once c's close has begun. mu guards s
// and h; now is the clock delays are read against. idle, if not nil, is
// called under mu each time c finds nothing to take, before it waits (a
// bus holding more entries elsewhere can bring them in).
func Receive[C comparable, M Message, T any](ctx context.Context, mu sync.Locker, s *State[C, M], c C, h *Handouts[M], now func() time.Time, take func(c C, i int) T, idle func()) (T, error) {
	var zero T
	for {
		if err := ctx.Err(); err != nil {
			return zero, err
		}
		mu.Lock()
		if h.Closing() {
			mu.Unlock()
			return zero, bus.ErrClosed
		}
		i, wake := s.Next(c, now())
		if i >= 0 {
			t := take(c, i)
			mu.Unlock()
			return t, nil
		}
		changed := s.Watch()
		if idle != nil {
			idle()
		}
		mu.Unlock()
		wait(ctx, h.Done(), changed, wake)
	}
}

// wait blocks until ctx ends, done or changed is closed, or wake (when not
// zero) has come.
func wait(ctx context.Context, done, changed <-chan struct{}, wake time.Time) {
	var timer *time.Timer
	var fire <-chan time.Time
	if !wake.IsZero() {
		timer = time.NewTimer(time.Until(wake))
		fire = timer.C
	}
	select {
	case <-ctx.Done():
	case <-done:
	case <-changed:
	case <-fire:
	}
	if timer != nil {
		timer.Stop()
	}
}
