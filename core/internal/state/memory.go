package state

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Bounds of the embedded store, per plugin, so one plugin can neither
// exhaust the core's memory nor crowd out another plugin's state.
const (
	DefaultMaxEntriesPerPlugin = 100_000
	DefaultMaxBytesPerPlugin   = 64 << 20
)

// ErrFull is a write refused because the plugin is at its bound in the
// embedded store; it reaches the plugin as RESOURCE_EXHAUSTED. Live state
// is never evicted to make room: losing a conversation's state silently
// is worse than refusing a new key.
var ErrFull = errors.New("state store: plugin at its bound")

// Memory is the embedded Store. Keys expire on their own: every call first
// removes the keys whose TTL has passed (oldest expiry first, from a heap),
// so memory is held only for live keys whether or not they are asked for
// again.
type Memory struct {
	mu         sync.Mutex
	entries    map[string]*memEntry
	expiry     expiryHeap
	usage      map[string]*usage // per plugin
	rev        uint64
	now        func() time.Time
	maxEntries int
	maxBytes   int
}

type usage struct{ entries, bytes int }

type memEntry struct {
	plugin  string
	key     string // the map key
	v       Value
	expires time.Time
	index   int // in the expiry heap
}

// size counts what an entry holds: its value and its key.
func (e *memEntry) size() int { return len(e.v.Data) + len(e.key) }

// NewMemory returns an empty store with the default bounds.
func NewMemory() *Memory {
	return NewMemoryBounded(DefaultMaxEntriesPerPlugin, DefaultMaxBytesPerPlugin)
}

// NewMemoryBounded returns an empty store holding at most maxEntries keys
// and maxBytes of keys and values per plugin.
func NewMemoryBounded(maxEntries, maxBytes int) *Memory {
	return &Memory{entries: map[string]*memEntry{}, usage: map[string]*usage{}, now: time.Now,
		maxEntries: maxEntries, maxBytes: maxBytes}
}

func memKey(plugin, key string) string { return plugin + "\x00" + key }

// expire removes every key whose TTL has passed. Callers hold m.mu.
func (m *Memory) expire() {
	now := m.now()
	for len(m.expiry) > 0 && !now.Before(m.expiry[0].expires) {
		m.remove(m.expiry[0])
	}
}

func (m *Memory) remove(e *memEntry) {
	heap.Remove(&m.expiry, e.index)
	delete(m.entries, e.key)
	u := m.usage[e.plugin]
	u.entries--
	u.bytes -= e.size()
	if u.entries == 0 {
		delete(m.usage, e.plugin)
	}
}

// put writes data under (plugin, key), within the plugin's bounds.
// Callers hold m.mu and have expired old keys.
func (m *Memory) put(plugin, key string, data []byte, ttl time.Duration) (uint64, error) {
	k := memKey(plugin, key)
	u := m.usage[plugin]
	if u == nil {
		u = &usage{}
	}
	old := m.entries[k]
	entries, bytes := u.entries+1, u.bytes+len(data)+len(k)
	if old != nil {
		entries, bytes = entries-1, bytes-old.size()
	}
	if entries > m.maxEntries || bytes > m.maxBytes {
		return 0, fmt.Errorf("%w: %d keys, %d bytes (limits %d keys, %d bytes)", ErrFull, u.entries, u.bytes, m.maxEntries, m.maxBytes)
	}
	m.usage[plugin] = u
	u.entries, u.bytes = entries, bytes
	m.rev++
	v := Value{Data: append([]byte(nil), data...), Revision: m.rev}
	expires := addSaturating(m.now(), ttl)
	if old != nil {
		old.v, old.expires = v, expires
		heap.Fix(&m.expiry, old.index)
		return m.rev, nil
	}
	e := &memEntry{plugin: plugin, key: k, v: v, expires: expires}
	m.entries[k] = e
	heap.Push(&m.expiry, e)
	return m.rev, nil
}

// addSaturating is t.Add(d) that never wraps into the past.
func addSaturating(t time.Time, d time.Duration) time.Time {
	if d > MaxTTL {
		d = MaxTTL
	}
	return t.Add(d)
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, plugin, key string) (Value, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire()
	e, ok := m.entries[memKey(plugin, key)]
	if !ok {
		return Value{}, false, nil
	}
	// A copy: callers may modify what they read (append, say).
	return Value{Data: append([]byte(nil), e.v.Data...), Revision: e.v.Revision}, true, nil
}

// Set implements Store.
func (m *Memory) Set(_ context.Context, plugin, key string, data []byte, ttl time.Duration) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire()
	return m.put(plugin, key, data, ttl)
}

// CompareAndSwap implements Store.
func (m *Memory) CompareAndSwap(_ context.Context, plugin, key string, expected uint64, data []byte, ttl time.Duration) (bool, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire()
	cur := uint64(0)
	if e, ok := m.entries[memKey(plugin, key)]; ok {
		cur = e.v.Revision
	}
	if cur != expected {
		return false, cur, nil
	}
	rev, err := m.put(plugin, key, data, ttl)
	if err != nil {
		return false, cur, err
	}
	return true, rev, nil
}

// Delete implements Store.
func (m *Memory) Delete(_ context.Context, plugin, key string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire()
	e, ok := m.entries[memKey(plugin, key)]
	if ok {
		m.remove(e)
	}
	return ok, nil
}

// Len is the number of live keys (expired ones are removed first).
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire()
	return len(m.entries)
}

// expiryHeap orders entries by expiry, soonest first (container/heap).
type expiryHeap []*memEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expires.Before(h[j].expires) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *expiryHeap) Push(x any) {
	e := x.(*memEntry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}
