package action

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ActionDeadLetter is an action that exhausted its retries, with its error.
type ActionDeadLetter struct {
	Plugin   string `json:"plugin"`
	AppID    string `json:"app_id"`
	EventID  string `json:"event_id"`
	DedupKey string `json:"dedup_key"`
	ChatID   string `json:"chat_id,omitempty"`
	// Index is the action's position in the plugin's result.
	Index int    `json:"index"`
	Kind  string `json:"kind"`
	// Action is the action as protobuf JSON, to replay it.
	Action json.RawMessage `json:"action"`
	// Error is the last call's error.
	Error string `json:"error"`
	// Attempts is how many calls were made; DeliveryAttempt is the event's
	// delivery attempt.
	Attempts        int       `json:"attempts"`
	DeliveryAttempt int       `json:"delivery_attempt"`
	At              time.Time `json:"at"`
}

// DeadLetters receives actions that exhausted their retries. Put is called
// by the executor (concurrently); when it fails, the delivery is retried
// instead, so an action is never dropped silently.
type DeadLetters interface {
	Put(ctx context.Context, dl ActionDeadLetter) error
}

var (
	_ DeadLetters = (*RedisDeadLetters)(nil)
	_ DeadLetters = (*MemoryDeadLetters)(nil)
)

// RedisDeadLetters keeps dead letters as JSON in a Redis list, newest
// first, trimmed to a maximum length.
type RedisDeadLetters struct {
	client redis.UniversalClient
	key    string
	max    int64
}

// DefaultDeadLetterMax bounds a Redis dead-letter list.
const DefaultDeadLetterMax = 10000

// NewRedisDeadLetters uses the list at key (e.g. "larkway:action:dead-letters"),
// keeping the newest maxLen entries (0: DefaultDeadLetterMax). It does no I/O.
func NewRedisDeadLetters(client redis.UniversalClient, key string, maxLen int64) *RedisDeadLetters {
	if maxLen <= 0 {
		maxLen = DefaultDeadLetterMax
	}
	return &RedisDeadLetters{client: client, key: key, max: maxLen}
}

// Put implements DeadLetters.
func (r *RedisDeadLetters) Put(ctx context.Context, dl ActionDeadLetter) error {
	b, err := json.Marshal(dl)
	if err != nil {
		return fmt.Errorf("encoding action dead letter: %w", err)
	}
	pipe := r.client.TxPipeline()
	pipe.LPush(ctx, r.key, b)
	pipe.LTrim(ctx, r.key, 0, r.max-1)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("writing action dead letter to %s: %w", r.key, err)
	}
	return nil
}

// List returns up to n dead letters, newest first.
func (r *RedisDeadLetters) List(ctx context.Context, n int64) ([]ActionDeadLetter, error) {
	raw, err := r.client.LRange(ctx, r.key, 0, n-1).Result()
	if err != nil {
		return nil, fmt.Errorf("reading action dead letters from %s: %w", r.key, err)
	}
	out := make([]ActionDeadLetter, 0, len(raw))
	for _, s := range raw {
		var dl ActionDeadLetter
		if err := json.Unmarshal([]byte(s), &dl); err != nil {
			return nil, fmt.Errorf("decoding action dead letter: %w", err)
		}
		out = append(out, dl)
	}
	return out, nil
}

// MemoryDeadLetters keeps dead letters in the process (embedded mode,
// tests).
type MemoryDeadLetters struct {
	mu    sync.Mutex
	items []ActionDeadLetter
}

// Put implements DeadLetters.
func (m *MemoryDeadLetters) Put(_ context.Context, dl ActionDeadLetter) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.items = append(m.items, dl)
	return nil
}

// List returns every dead letter, oldest first.
func (m *MemoryDeadLetters) List() []ActionDeadLetter {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]ActionDeadLetter(nil), m.items...)
}
