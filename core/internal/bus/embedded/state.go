package embedded

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/larkway/larkway/core/internal/bus"
)

// State is a durable key space with expiring keys beside the bus, in the
// same store: the dedup markers, leases and webhook nonces of a core
// without Redis. Its writes go to the bus's WAL, so a write made before a
// publish is on disk whenever that publish is (a nonce recorded before the
// event is stored is kept with it, without an fsync of its own).
//
// Get and Put are not one atomic step: callers that check and set hold a
// lock of their own (one process uses a State).
type State struct {
	b     *Bus
	space string
}

// State returns the key space named space.
func (b *Bus) State(space string) *State { return &State{b: b, space: space} }

// Keys: 'x' space key → expiry (Unix ns, 0: never) then the value; for an
// expiring key also 'y' expiry space key → "", the index the sweep reads
// in expiry order.
const (
	kindState      = 'x'
	kindStateIndex = 'y'
)

func (s *State) key(key string) []byte {
	return append(appendName([]byte{kindState}, s.space), key...)
}

func (s *State) indexKey(expires int64, key string) []byte {
	k := binary.BigEndian.AppendUint64([]byte{kindStateIndex}, uint64(expires))
	return append(appendName(k, s.space), key...)
}

// Get returns key's value, or ok false when it is absent or expired.
func (s *State) Get(key string) (value []byte, ok bool, err error) {
	b := s.b
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.dbClosed {
		return nil, false, fmt.Errorf("reading %s state: %w", s.space, bus.ErrClosed)
	}
	v, closer, err := b.db.Get(s.key(key))
	if err == pebble.ErrNotFound {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading %s state: %w", s.space, withDetails(err))
	}
	defer closer.Close()
	if len(v) < 8 {
		return nil, false, fmt.Errorf("reading %s state: %w: short value", s.space, errCorrupt)
	}
	if exp := int64(binary.BigEndian.Uint64(v)); exp != 0 && b.now().UnixNano() >= exp {
		return nil, false, nil
	}
	return append([]byte(nil), v[8:]...), true, nil
}

// Empty reports whether the space holds no key at all (expired or not):
// a check-then-set caller then knows no earlier process left one to find.
func (s *State) Empty() (bool, error) {
	b := s.b
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.dbClosed {
		return false, fmt.Errorf("reading %s state: %w", s.space, bus.ErrClosed)
	}
	return s.emptyLocked()
}

// emptyLocked is Empty; callers hold dbMu for reading.
func (s *State) emptyLocked() (bool, error) {
	b := s.b
	prefix := s.key("")
	empty := true
	err := b.scan(prefix, prefixEnd(prefix), func(_, _ []byte) error {
		empty = false
		return errFound
	})
	if err != nil && !errors.Is(err, errFound) {
		return false, fmt.Errorf("reading %s state: %w", s.space, err)
	}
	return empty, nil
}

// Horizon is the latest time any key of the space may still be live:
// zero when the space holds no key, far in the future when one never
// expires. A check-then-set caller that remembers every key it writes needs
// the disk only for keys it did not write, and for those only until then.
// It reads the expiry index backwards and stops at the space's last entry;
// an index entry may outlive its key (a rewrite, a delete), which only
// makes the answer later than needed, never earlier.
func (s *State) Horizon() (time.Time, error) {
	b := s.b
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.dbClosed {
		return time.Time{}, fmt.Errorf("reading %s state: %w", s.space, bus.ErrClosed)
	}
	lower := []byte{kindStateIndex}
	it, err := b.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return time.Time{}, fmt.Errorf("reading %s state: %w", s.space, err)
	}
	defer it.Close()
	name := appendName(nil, s.space)
	for ok := it.Last(); ok; ok = it.Prev() {
		k := it.Key()
		if len(k) < 9 {
			return time.Time{}, fmt.Errorf("reading %s state: %w: short state index key", s.space, errCorrupt)
		}
		if bytes.HasPrefix(k[9:], name) {
			return time.Unix(0, int64(binary.BigEndian.Uint64(k[1:9]))), nil
		}
	}
	if err := it.Error(); err != nil {
		return time.Time{}, fmt.Errorf("reading %s state: %w", s.space, withDetails(err))
	}
	// No expiring key; one written without an expiry is not indexed.
	empty, err := s.emptyLocked()
	if err != nil || empty {
		return time.Time{}, err
	}
	return time.Unix(1<<62, 0), nil
}

// errFound stops a scan at its first record.
var errFound = errors.New("found")

// Put sets key to value until expires (zero: never). With sync it returns
// once the write is fsynced; without, the next fsync of the store (a
// publish's, or Close) makes it durable.
func (s *State) Put(key string, value []byte, expires time.Time, sync bool) error {
	batch := s.b.db.NewBatch()
	defer batch.Close()
	s.set(batch, key, value, expires)
	if err := s.b.write(batch, sync); err != nil {
		return fmt.Errorf("writing %s state: %w", s.space, err)
	}
	return nil
}

// PutDeferred is Put without a commit of its own: the write rides on the
// store's next one (a publish, which is fsynced, at the latest within
// SyncInterval). Get does not see it until then, and a crash before then
// loses it. The webhook's nonces are written so: the event's publish
// carries its nonce, and a nonce whose event was never stored guards
// nothing.
func (s *State) PutDeferred(key string, value []byte, expires time.Time) error {
	if err := s.b.writeDeferred(func(batch *pebble.Batch) { s.set(batch, key, value, expires) }); err != nil {
		return fmt.Errorf("writing %s state: %w", s.space, err)
	}
	return nil
}

// set adds the writes of Put to batch.
func (s *State) set(batch *pebble.Batch, key string, value []byte, expires time.Time) {
	var exp int64
	if !expires.IsZero() {
		exp = expires.UnixNano()
	}
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(value)), uint64(exp))
	_ = batch.Set(s.key(key), append(v, value...), nil)
	if exp != 0 {
		_ = batch.Set(s.indexKey(exp, key), nil, nil)
	}
}

// Delete removes key (its index entry goes with the sweep).
func (s *State) Delete(key string) error {
	batch := s.b.db.NewBatch()
	defer batch.Close()
	_ = batch.Delete(s.key(key), nil)
	if err := s.b.write(batch, false); err != nil {
		return fmt.Errorf("deleting %s state: %w", s.space, err)
	}
	return nil
}

// sweepState deletes the state keys that expired before now, reading the
// expiry index in order. A key rewritten with a later expiry keeps its
// value: only the stale index entry goes.
func (b *Bus) sweepState(now time.Time) error {
	lower := []byte{kindStateIndex}
	upper := binary.BigEndian.AppendUint64([]byte{kindStateIndex}, uint64(now.UnixNano()))
	batch := b.db.NewBatch()
	defer batch.Close()
	n := 0
	err := b.scan(lower, upper, func(k, _ []byte) error {
		if len(k) < 9 {
			return fmt.Errorf("%w: short state index key", errCorrupt)
		}
		exp := binary.BigEndian.Uint64(k[1:9])
		stateKey := append([]byte{kindState}, k[9:]...)
		v, closer, err := b.db.Get(stateKey)
		switch {
		case err == pebble.ErrNotFound:
		case err != nil:
			return err
		default:
			current := binary.BigEndian.Uint64(v)
			_ = closer.Close()
			if current == exp {
				_ = batch.Delete(stateKey, nil)
			}
		}
		_ = batch.Delete(k, nil)
		n++
		return nil
	})
	if err != nil {
		return fmt.Errorf("sweeping expired state: %w", err)
	}
	if n == 0 {
		return nil
	}
	return b.write(batch, false)
}
