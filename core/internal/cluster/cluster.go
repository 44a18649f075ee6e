// Package cluster makes plugin changes cluster-wide: the desired version of
// every plugin lives in a shared store (Redis; memory when embedded), every
// core replica reconciles its plugins to it, and every replica registers
// itself and its plugins' states with heartbeats that expire when it
// vanishes.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/larkway/larkway/core/internal/manager"
)

// Desired is what every replica should run for one plugin.
type Desired struct {
	Spec       manager.Spec `json:"spec"`
	Enabled    bool         `json:"enabled"`
	Generation int64        `json:"generation"`
	UpdatedAt  time.Time    `json:"updated_at"`
	// Release is the canary or shadow beside Spec (release.go), and
	// LastRelease how the one before ended.
	Release     *Release    `json:"release,omitempty"`
	LastRelease *ReleaseEnd `json:"last_release,omitempty"`
}

// ReplicaStatus is one core replica's report.
type ReplicaStatus struct {
	ID        string           `json:"id"`
	Version   string           `json:"version"`
	State     string           `json:"state"` // serving, draining
	Plugins   []manager.Status `json:"plugins"`
	Heartbeat time.Time        `json:"heartbeat"`
	// Applied is the desired generation each plugin was reconciled to, and
	// ApplyErrors why the last reconciliation of a plugin failed.
	Applied     map[string]int64  `json:"applied,omitempty"`
	ApplyErrors map[string]string `json:"apply_errors,omitempty"`
}

// Store holds desired plugin states and replica heartbeats.
type Store interface {
	// Desired returns every plugin's desired state.
	Desired(ctx context.Context) (map[string]Desired, error)
	// SetDesired stores d for name under a new, larger generation and
	// returns it.
	SetDesired(ctx context.Context, name string, d Desired) (Desired, error)
	// SetDesiredIf is SetDesired if name's stored generation is still gen
	// (0: none stored); false if it is not. Replicas deciding a canary's
	// fate at once must not undo each other's decision.
	SetDesiredIf(ctx context.Context, name string, d Desired, gen int64) (Desired, bool, error)
	// Heartbeat records a replica's status for ttl.
	Heartbeat(ctx context.Context, s ReplicaStatus, ttl time.Duration) error
	// Replicas lists live replicas, sorted by id.
	Replicas(ctx context.Context) ([]ReplicaStatus, error)
	// Remove drops a replica (on clean shutdown).
	Remove(ctx context.Context, id string) error
}

// Memory is the embedded single-replica Store.
type Memory struct {
	mu       sync.Mutex
	gen      int64
	desired  map[string]Desired
	replicas map[string]memReplica
	now      func() time.Time
}

type memReplica struct {
	s       ReplicaStatus
	expires time.Time
}

// NewMemory returns an empty store.
func NewMemory() *Memory {
	return &Memory{desired: map[string]Desired{}, replicas: map[string]memReplica{}, now: time.Now}
}

// Desired implements Store.
func (m *Memory) Desired(context.Context) (map[string]Desired, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Desired, len(m.desired))
	for k, v := range m.desired {
		out[k] = v
	}
	return out, nil
}

// SetDesired implements Store.
func (m *Memory) SetDesired(_ context.Context, name string, d Desired) (Desired, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	d.Generation, d.UpdatedAt = m.gen, m.now()
	m.desired[name] = d
	return d, nil
}

// SetDesiredIf implements Store.
func (m *Memory) SetDesiredIf(_ context.Context, name string, d Desired, gen int64) (Desired, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.desired[name].Generation != gen {
		return Desired{}, false, nil
	}
	m.gen++
	d.Generation, d.UpdatedAt = m.gen, m.now()
	m.desired[name] = d
	return d, true, nil
}

// Heartbeat implements Store.
func (m *Memory) Heartbeat(_ context.Context, s ReplicaStatus, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.replicas[s.ID] = memReplica{s: s, expires: m.now().Add(ttl)}
	return nil
}

// Replicas implements Store.
func (m *Memory) Replicas(context.Context) ([]ReplicaStatus, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	out := []ReplicaStatus{}
	for id, r := range m.replicas {
		if now.After(r.expires) {
			delete(m.replicas, id)
			continue
		}
		out = append(out, r.s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Remove implements Store.
func (m *Memory) Remove(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.replicas, id)
	return nil
}

// Redis is the shared Store.
type Redis struct {
	client redis.UniversalClient
	prefix string
}

// NewRedis uses keys under prefix (e.g. "larkway:cluster:").
func NewRedis(client redis.UniversalClient, prefix string) *Redis {
	return &Redis{client: client, prefix: prefix}
}

// Desired implements Store.
func (r *Redis) Desired(ctx context.Context) (map[string]Desired, error) {
	vals, err := r.client.HGetAll(ctx, r.prefix+"desired").Result()
	if err != nil {
		return nil, fmt.Errorf("reading desired plugins: %w", err)
	}
	out := make(map[string]Desired, len(vals))
	for name, v := range vals {
		var d Desired
		if err := json.Unmarshal([]byte(v), &d); err != nil {
			return nil, fmt.Errorf("decoding desired state of %s: %w", name, err)
		}
		out[name] = d
	}
	return out, nil
}

// SetDesired implements Store.
func (r *Redis) SetDesired(ctx context.Context, name string, d Desired) (Desired, error) {
	gen, err := r.client.Incr(ctx, r.prefix+"generation").Result()
	if err != nil {
		return Desired{}, fmt.Errorf("setting desired state of %s: %w", name, err)
	}
	d.Generation, d.UpdatedAt = gen, time.Now()
	b, err := json.Marshal(d)
	if err != nil {
		return Desired{}, err
	}
	if err := r.client.HSet(ctx, r.prefix+"desired", name, b).Err(); err != nil {
		return Desired{}, fmt.Errorf("setting desired state of %s: %w", name, err)
	}
	return d, nil
}

// SetDesiredIf implements Store: an optimistic transaction on the desired
// hash (WATCH), retried by the caller's next pass if another write wins.
func (r *Redis) SetDesiredIf(ctx context.Context, name string, d Desired, gen int64) (Desired, bool, error) {
	key := r.prefix + "desired"
	var out Desired
	ok := false
	err := r.client.Watch(ctx, func(tx *redis.Tx) error {
		cur, err := tx.HGet(ctx, key, name).Result()
		var stored Desired
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return err
		default:
			if err := json.Unmarshal([]byte(cur), &stored); err != nil {
				return fmt.Errorf("decoding desired state of %s: %w", name, err)
			}
		}
		if stored.Generation != gen {
			return nil
		}
		next, err := tx.Incr(ctx, r.prefix+"generation").Result()
		if err != nil {
			return err
		}
		d.Generation, d.UpdatedAt = next, time.Now()
		b, err := json.Marshal(d)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, key, name, b)
			return nil
		})
		if err == nil {
			out, ok = d, true
		}
		return err
	}, key)
	if errors.Is(err, redis.TxFailedErr) {
		return Desired{}, false, nil
	}
	if err != nil {
		return Desired{}, false, fmt.Errorf("setting desired state of %s: %w", name, err)
	}
	return out, ok, nil
}

// Heartbeat implements Store. Each replica's status is a key with the
// heartbeat's TTL, indexed in a sorted set scored by its expiry: listing
// replicas reads the index instead of SCANning a keyspace that the dedup
// markers fill with millions of keys.
func (r *Redis) Heartbeat(ctx context.Context, s ReplicaStatus, ttl time.Duration) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	expires := time.Now().Add(ttl).UnixMilli()
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, r.prefix+"replica:"+s.ID, b, ttl)
		p.ZAdd(ctx, r.prefix+"replicas", redis.Z{Score: float64(expires), Member: s.ID})
		return nil
	})
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

// Replicas implements Store.
func (r *Redis) Replicas(ctx context.Context) ([]ReplicaStatus, error) {
	index := r.prefix + "replicas"
	// Entries whose heartbeat expired go; their keys expired with them.
	if err := r.client.ZRemRangeByScore(ctx, index, "-inf", fmt.Sprint(time.Now().UnixMilli())).Err(); err != nil {
		return nil, fmt.Errorf("listing replicas: %w", err)
	}
	ids, err := r.client.ZRange(ctx, index, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("listing replicas: %w", err)
	}
	out := []ReplicaStatus{}
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = r.prefix + "replica:" + id
	}
	vals, err := r.client.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("listing replicas: %w", err)
	}
	for _, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue // expired between the index and MGET
		}
		var rs ReplicaStatus
		if err := json.Unmarshal([]byte(s), &rs); err == nil {
			out = append(out, rs)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Remove implements Store.
func (r *Redis) Remove(ctx context.Context, id string) error {
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.prefix+"replica:"+id)
		p.ZRem(ctx, r.prefix+"replicas", id)
		return nil
	})
	return err
}

// validName keeps replica ids usable as key suffixes.
func validName(s string) error {
	if s == "" || len(s) > 128 || strings.ContainsAny(s, " *?[]\n") {
		return errors.New("replica id must be 1-128 characters without spaces or glob characters")
	}
	return nil
}
