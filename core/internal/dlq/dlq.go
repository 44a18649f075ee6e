// Package dlq indexes dead-lettered events so admins can list, inspect,
// replay and purge them. The bus's dead-letter topics stay the durable
// record; the dispatcher copies each dead letter into a Store (Redis, or
// memory when embedded) from which the admin API reads.
package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotFound is returned for an unknown entry.
var ErrNotFound = errors.New("dead letter not found")

// Entry is one dead-lettered event of one plugin.
type Entry struct {
	// ID is unique per plugin (the bus message id of the dead letter).
	ID     string `json:"id"`
	Plugin string `json:"plugin"`
	// Topic is the event's original topic, where a replay publishes it.
	Topic      string            `json:"topic"`
	Key        string            `json:"key"`
	Reason     string            `json:"reason"`
	EventID    string            `json:"event_id"`
	EventType  string            `json:"event_type"`
	Payload    []byte            `json:"payload"`
	Properties map[string]string `json:"properties,omitempty"`
	DeadAt     time.Time         `json:"dead_at"`
}

// Store holds entries per plugin, newest last.
type Store interface {
	Add(ctx context.Context, e Entry) error
	List(ctx context.Context, plugin string, limit int) ([]Entry, error)
	Get(ctx context.Context, plugin, id string) (Entry, error)
	Delete(ctx context.Context, plugin, id string) error
	Count(ctx context.Context, plugin string) (int, error)
}

// Memory is the embedded Store.
type Memory struct {
	mu      sync.Mutex
	entries map[string]map[string]Entry
}

// NewMemory returns an empty store.
func NewMemory() *Memory { return &Memory{entries: map[string]map[string]Entry{}} }

// Add implements Store.
func (m *Memory) Add(_ context.Context, e Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries[e.Plugin] == nil {
		m.entries[e.Plugin] = map[string]Entry{}
	}
	m.entries[e.Plugin][e.ID] = e
	return nil
}

// List implements Store: the oldest limit entries (limit ≤ 0: all).
func (m *Memory) List(_ context.Context, plugin string, limit int) ([]Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Entry, 0, len(m.entries[plugin]))
	for _, e := range m.entries[plugin] {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].DeadAt.Equal(out[j].DeadAt) {
			return out[i].ID < out[j].ID
		}
		return out[i].DeadAt.Before(out[j].DeadAt)
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, plugin, id string) (Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[plugin][id]
	if !ok {
		return Entry{}, fmt.Errorf("%w: %s/%s", ErrNotFound, plugin, id)
	}
	return e, nil
}

// Delete implements Store.
func (m *Memory) Delete(_ context.Context, plugin, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.entries[plugin][id]; !ok {
		return fmt.Errorf("%w: %s/%s", ErrNotFound, plugin, id)
	}
	delete(m.entries[plugin], id)
	return nil
}

// Count implements Store.
func (m *Memory) Count(_ context.Context, plugin string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries[plugin]), nil
}

// Redis shares the index across replicas: per plugin a hash id → entry JSON
// and a sorted set of ids by time.
type Redis struct {
	client redis.UniversalClient
	prefix string
}

// NewRedis uses keys under prefix (e.g. "larkway:dlq:").
func NewRedis(client redis.UniversalClient, prefix string) *Redis {
	return &Redis{client: client, prefix: prefix}
}

func (r *Redis) keys(plugin string) (hash, index string) {
	return r.prefix + plugin + ":entries", r.prefix + plugin + ":index"
}

// Add implements Store.
func (r *Redis) Add(ctx context.Context, e Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encoding dead letter: %w", err)
	}
	h, idx := r.keys(e.Plugin)
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, h, e.ID, b)
		p.ZAdd(ctx, idx, redis.Z{Score: float64(e.DeadAt.UnixMilli()), Member: e.ID})
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing dead letter %s: %w", e.ID, err)
	}
	return nil
}

// List implements Store.
func (r *Redis) List(ctx context.Context, plugin string, limit int) ([]Entry, error) {
	h, idx := r.keys(plugin)
	stop := int64(-1)
	if limit > 0 {
		stop = int64(limit - 1)
	}
	ids, err := r.client.ZRange(ctx, idx, 0, stop).Result()
	if err != nil {
		return nil, fmt.Errorf("listing dead letters: %w", err)
	}
	if len(ids) == 0 {
		return []Entry{}, nil
	}
	vals, err := r.client.HMGet(ctx, h, ids...).Result()
	if err != nil {
		return nil, fmt.Errorf("listing dead letters: %w", err)
	}
	out := make([]Entry, 0, len(vals))
	for _, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var e Entry
		if err := json.Unmarshal([]byte(s), &e); err == nil {
			out = append(out, e)
		}
	}
	return out, nil
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, plugin, id string) (Entry, error) {
	h, _ := r.keys(plugin)
	s, err := r.client.HGet(ctx, h, id).Result()
	if errors.Is(err, redis.Nil) {
		return Entry{}, fmt.Errorf("%w: %s/%s", ErrNotFound, plugin, id)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("reading dead letter: %w", err)
	}
	var e Entry
	if err := json.Unmarshal([]byte(s), &e); err != nil {
		return Entry{}, fmt.Errorf("decoding dead letter %s: %w", id, err)
	}
	return e, nil
}

// Delete implements Store.
func (r *Redis) Delete(ctx context.Context, plugin, id string) error {
	h, idx := r.keys(plugin)
	var del *redis.IntCmd
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		del = p.HDel(ctx, h, id)
		p.ZRem(ctx, idx, id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("deleting dead letter: %w", err)
	}
	if del.Val() == 0 {
		return fmt.Errorf("%w: %s/%s", ErrNotFound, plugin, id)
	}
	return nil
}

// Count implements Store.
func (r *Redis) Count(ctx context.Context, plugin string) (int, error) {
	_, idx := r.keys(plugin)
	n, err := r.client.ZCard(ctx, idx).Result()
	if err != nil {
		return 0, fmt.Errorf("counting dead letters: %w", err)
	}
	return int(n), nil
}
