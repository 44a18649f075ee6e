// Package shadow keeps the records of shadow releases: for each event a
// shadow candidate received, what the stable version did and what the
// candidate would have done (its actions are recorded here, never
// performed), and whether they differ. `larkway plugin shadow report` and
// the admin API read them.
package shadow

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultKeep is how many records a plugin keeps (the newest).
const DefaultKeep = 20000

// Side is one version's handling of an event.
type Side struct {
	Version string `json:"version"`
	// Outcome is the delivery outcome (done, retry, failed, timeout, …),
	// "not_subscribed" when the version's manifest does not take the event.
	Outcome string            `json:"outcome"`
	Actions []json.RawMessage `json:"actions"`
	// Refused are the candidate's actions its manifest does not allow, as
	// "index: reason".
	Refused []string `json:"refused,omitempty"`
}

// Record pairs the stable version's and the candidate's handling of one
// event.
type Record struct {
	Plugin    string    `json:"plugin"`
	EventID   string    `json:"event_id"`
	ChatID    string    `json:"chat_id,omitempty"`
	Source    string    `json:"source"` // live, replay
	At        time.Time `json:"at"`
	Stable    Side      `json:"stable"`
	Candidate Side      `json:"candidate"`
	Differs   bool      `json:"differs"`
	// Differences say what differs, e.g. "action 0 differs".
	Differences []string `json:"differences,omitempty"`
}

// Summary counts a plugin's records since the last Clear.
type Summary struct {
	Events  int64 `json:"events"`
	Differ  int64 `json:"differ"`
	Actions int64 `json:"candidate_actions"`
	Refused int64 `json:"candidate_refused"`
}

// Store keeps records.
type Store interface {
	Add(ctx context.Context, r Record) error
	// List returns up to limit of plugin's records, newest first (limit
	// ≤ 0: all kept).
	List(ctx context.Context, plugin string, limit int) ([]Record, error)
	Summary(ctx context.Context, plugin string) (Summary, error)
	// Clear forgets plugin's records (a new shadow starts afresh).
	Clear(ctx context.Context, plugin string) error
}

func count(s *Summary, r Record) {
	s.Events++
	if r.Differs {
		s.Differ++
	}
	s.Actions += int64(len(r.Candidate.Actions))
	s.Refused += int64(len(r.Candidate.Refused))
}

// Memory is the in-process Store.
type Memory struct {
	keep int
	mu   sync.Mutex
	recs map[string][]Record // oldest first
	sums map[string]Summary
}

// NewMemory keeps up to keep records a plugin (≤ 0: DefaultKeep).
func NewMemory(keep int) *Memory {
	if keep <= 0 {
		keep = DefaultKeep
	}
	return &Memory{keep: keep, recs: map[string][]Record{}, sums: map[string]Summary{}}
}

// Add implements Store.
func (m *Memory) Add(_ context.Context, r Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := append(m.recs[r.Plugin], r)
	if len(l) > m.keep {
		l = l[len(l)-m.keep:]
	}
	m.recs[r.Plugin] = l
	s := m.sums[r.Plugin]
	count(&s, r)
	m.sums[r.Plugin] = s
	return nil
}

// List implements Store.
func (m *Memory) List(_ context.Context, plugin string, limit int) ([]Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.recs[plugin]
	out := []Record{}
	for i := len(l) - 1; i >= 0 && (limit <= 0 || len(out) < limit); i-- {
		out = append(out, l[i])
	}
	return out, nil
}

// Summary implements Store.
func (m *Memory) Summary(_ context.Context, plugin string) (Summary, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sums[plugin], nil
}

// Clear implements Store.
func (m *Memory) Clear(_ context.Context, plugin string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.recs, plugin)
	delete(m.sums, plugin)
	return nil
}

// Redis is the shared Store: every replica's records in one list a plugin.
type Redis struct {
	client redis.UniversalClient
	prefix string
	keep   int
}

// NewRedis keeps records under prefix (e.g. "larkway:shadow:").
func NewRedis(client redis.UniversalClient, prefix string, keep int) *Redis {
	if keep <= 0 {
		keep = DefaultKeep
	}
	return &Redis{client: client, prefix: prefix, keep: keep}
}

func (r *Redis) list(plugin string) string { return r.prefix + plugin + ":records" }
func (r *Redis) sum(plugin string) string  { return r.prefix + plugin + ":summary" }

// Add implements Store.
func (r *Redis) Add(ctx context.Context, rec Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding shadow record: %w", err)
	}
	var s Summary
	count(&s, rec)
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.LPush(ctx, r.list(rec.Plugin), b)
		p.LTrim(ctx, r.list(rec.Plugin), 0, int64(r.keep-1))
		p.HIncrBy(ctx, r.sum(rec.Plugin), "events", s.Events)
		p.HIncrBy(ctx, r.sum(rec.Plugin), "differ", s.Differ)
		p.HIncrBy(ctx, r.sum(rec.Plugin), "candidate_actions", s.Actions)
		p.HIncrBy(ctx, r.sum(rec.Plugin), "candidate_refused", s.Refused)
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording shadow result: %w", err)
	}
	return nil
}

// List implements Store.
func (r *Redis) List(ctx context.Context, plugin string, limit int) ([]Record, error) {
	vals, err := r.client.LRange(ctx, r.list(plugin), 0, int64(limit-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("listing shadow records: %w", err)
	}
	out := make([]Record, 0, len(vals))
	for _, v := range vals {
		var rec Record
		if err := json.Unmarshal([]byte(v), &rec); err != nil {
			return nil, fmt.Errorf("decoding shadow record: %w", err)
		}
		out = append(out, rec)
	}
	return out, nil
}

// Summary implements Store.
func (r *Redis) Summary(ctx context.Context, plugin string) (Summary, error) {
	var s Summary
	vals, err := r.client.HGetAll(ctx, r.sum(plugin)).Result()
	if err != nil {
		return s, fmt.Errorf("reading shadow summary: %w", err)
	}
	for k, p := range map[string]*int64{"events": &s.Events, "differ": &s.Differ, "candidate_actions": &s.Actions, "candidate_refused": &s.Refused} {
		_, _ = fmt.Sscan(vals[k], p)
	}
	return s, nil
}

// Clear implements Store.
func (r *Redis) Clear(ctx context.Context, plugin string) error {
	if err := r.client.Del(ctx, r.list(plugin), r.sum(plugin)).Err(); err != nil {
		return fmt.Errorf("clearing shadow records: %w", err)
	}
	return nil
}
