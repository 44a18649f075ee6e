package action

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// "Failed actions" are actions whose Lark call finally failed (retries
// exhausted on the event's last delivery). They are not the event "dead
// letters" of package dlq: an event dead letter is an event a plugin could
// not handle; a failed action is one answer of a plugin that Lark did not
// take.

// ErrFailedNotFound is returned for an unknown failed action.
var ErrFailedNotFound = errors.New("failed action not found")

// FailedAction is an action that exhausted its retries, with what a replay
// needs: the app, plugin, the action as the plugin returned it, the event
// fields it may default to, and its idempotency uuid.
type FailedAction struct {
	// ID identifies the entry: a hash of its stored JSON, so that entries
	// written by older versions (which had no id) have one too. It is not
	// stored.
	ID       string `json:"id,omitempty"`
	Plugin   string `json:"plugin"`
	AppID    string `json:"app_id"`
	EventID  string `json:"event_id"`
	DedupKey string `json:"dedup_key"`
	ChatID   string `json:"chat_id,omitempty"`
	// MessageID and CardMessageID are the event's message or clicked card,
	// which a reply, reaction or card update without its own target uses.
	MessageID     string `json:"message_id,omitempty"`
	CardMessageID string `json:"card_message_id,omitempty"`
	// Index is the action's position in the plugin's result.
	Index int    `json:"index"`
	Kind  string `json:"kind"`
	// Action is the action as protobuf JSON, as the plugin returned it.
	Action json.RawMessage `json:"action,omitempty"`
	// UUID is the idempotency key the calls carried (sends and replies).
	UUID string `json:"uuid,omitempty"`
	// Error is the last call's error.
	Error string `json:"error"`
	// Attempts is how many calls were made; DeliveryAttempt is the event's
	// delivery attempt.
	Attempts        int       `json:"attempts"`
	DeliveryAttempt int       `json:"delivery_attempt"`
	At              time.Time `json:"at"`
}

// event is the part of the original event planning the action needs.
func (f FailedAction) event() *pluginv1.Event {
	ev := &pluginv1.Event{EventId: f.EventID, AppId: f.AppID, DedupKey: f.DedupKey, ChatId: f.ChatID}
	switch {
	case f.CardMessageID != "":
		ev.Payload = &pluginv1.Event_CardAction{CardAction: &pluginv1.CardAction{OpenMessageId: f.CardMessageID}}
	case f.MessageID != "":
		ev.Payload = &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: f.MessageID, ChatId: f.ChatID}}
	}
	return ev
}

// FailedStore keeps failed actions, newest first. Put is called by the
// executor (concurrently); when it fails, the delivery is retried instead,
// so an action is never dropped silently.
type FailedStore interface {
	Put(ctx context.Context, f FailedAction) error
	// List returns up to limit entries (≤ 0: all), newest first.
	List(ctx context.Context, limit int) ([]FailedAction, error)
	Get(ctx context.Context, id string) (FailedAction, error)
	// Delete removes one entry; ErrFailedNotFound if it is gone.
	Delete(ctx context.Context, id string) error
	Count(ctx context.Context) (int, error)
}

var (
	_ FailedStore = (*RedisFailedStore)(nil)
	_ FailedStore = (*MemoryFailedStore)(nil)
)

// DefaultFailedMax bounds a failed-action store.
const DefaultFailedMax = 10000

// FailedKey is the Redis list under the executor's key prefix. It keeps its
// first name: replicas of different versions share it during a rolling
// deploy, older ones pushing entries without uuid and event targets (a
// replay recomputes the uuid from the same fields).
const FailedKey = "dead-letters"

func encodeFailed(f FailedAction) (string, error) {
	f.ID = ""
	b, err := json.Marshal(f)
	if err != nil {
		return "", fmt.Errorf("encoding failed action: %w", err)
	}
	return string(b), nil
}

func failedID(raw string) string {
	h := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(h[:8])
}

func decodeFailed(raw string) (FailedAction, error) {
	var f FailedAction
	if err := json.Unmarshal([]byte(raw), &f); err != nil {
		return FailedAction{}, fmt.Errorf("decoding failed action: %w", err)
	}
	f.ID = failedID(raw)
	return f, nil
}

// RedisFailedStore keeps failed actions as JSON in a Redis list, newest
// first, trimmed to a maximum length, shared by every replica.
type RedisFailedStore struct {
	client redis.UniversalClient
	key    string
	max    int64
}

// NewRedisFailedStore uses the list at key (e.g.
// "larkway:action:"+FailedKey), keeping the newest maxLen entries (0:
// DefaultFailedMax). It does no I/O.
func NewRedisFailedStore(client redis.UniversalClient, key string, maxLen int64) *RedisFailedStore {
	if maxLen <= 0 {
		maxLen = DefaultFailedMax
	}
	return &RedisFailedStore{client: client, key: key, max: maxLen}
}

// Put implements FailedStore.
func (r *RedisFailedStore) Put(ctx context.Context, f FailedAction) error {
	raw, err := encodeFailed(f)
	if err != nil {
		return err
	}
	pipe := r.client.TxPipeline()
	pipe.LPush(ctx, r.key, raw)
	pipe.LTrim(ctx, r.key, 0, r.max-1)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("writing failed action to %s: %w", r.key, err)
	}
	return nil
}

// List implements FailedStore. An entry that does not decode is skipped.
func (r *RedisFailedStore) List(ctx context.Context, limit int) ([]FailedAction, error) {
	stop := int64(-1)
	if limit > 0 {
		stop = int64(limit) - 1
	}
	raw, err := r.client.LRange(ctx, r.key, 0, stop).Result()
	if err != nil {
		return nil, fmt.Errorf("reading failed actions from %s: %w", r.key, err)
	}
	out := make([]FailedAction, 0, len(raw))
	for _, s := range raw {
		if f, err := decodeFailed(s); err == nil {
			out = append(out, f)
		}
	}
	return out, nil
}

// find returns the stored JSON of entry id, reading the list a page at a
// time (it is bounded by max).
func (r *RedisFailedStore) find(ctx context.Context, id string) (string, error) {
	const page = 256
	for start := int64(0); start < r.max; start += page {
		raw, err := r.client.LRange(ctx, r.key, start, start+page-1).Result()
		if err != nil {
			return "", fmt.Errorf("reading failed actions from %s: %w", r.key, err)
		}
		for _, s := range raw {
			if failedID(s) == id {
				return s, nil
			}
		}
		if len(raw) < page {
			break
		}
	}
	return "", fmt.Errorf("%w: %s", ErrFailedNotFound, id)
}

// Get implements FailedStore.
func (r *RedisFailedStore) Get(ctx context.Context, id string) (FailedAction, error) {
	raw, err := r.find(ctx, id)
	if err != nil {
		return FailedAction{}, err
	}
	return decodeFailed(raw)
}

// Delete implements FailedStore. It removes the entry by value, so entries
// pushed meanwhile (shifting positions) are untouched.
func (r *RedisFailedStore) Delete(ctx context.Context, id string) error {
	raw, err := r.find(ctx, id)
	if err != nil {
		return err
	}
	n, err := r.client.LRem(ctx, r.key, 1, raw).Result()
	if err != nil {
		return fmt.Errorf("deleting failed action %s: %w", id, err)
	}
	if n == 0 { // another replica removed it first
		return fmt.Errorf("%w: %s", ErrFailedNotFound, id)
	}
	return nil
}

// Count implements FailedStore.
func (r *RedisFailedStore) Count(ctx context.Context) (int, error) {
	n, err := r.client.LLen(ctx, r.key).Result()
	if err != nil {
		return 0, fmt.Errorf("counting failed actions in %s: %w", r.key, err)
	}
	return int(n), nil
}

// MemoryFailedStore keeps failed actions in the process (embedded mode,
// tests), newest first, bounded like the Redis store.
type MemoryFailedStore struct {
	mu    sync.Mutex
	items []string // stored JSON, newest first
}

// Put implements FailedStore.
func (m *MemoryFailedStore) Put(_ context.Context, f FailedAction) error {
	raw, err := encodeFailed(f)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.items = append([]string{raw}, m.items...)
	if len(m.items) > DefaultFailedMax {
		m.items = m.items[:DefaultFailedMax]
	}
	return nil
}

// List implements FailedStore.
func (m *MemoryFailedStore) List(_ context.Context, limit int) ([]FailedAction, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	items := m.items
	if limit > 0 && len(items) > limit {
		items = items[:limit]
	}
	out := make([]FailedAction, 0, len(items))
	for _, s := range items {
		f, _ := decodeFailed(s) // encoded by Put
		out = append(out, f)
	}
	return out, nil
}

// Get implements FailedStore.
func (m *MemoryFailedStore) Get(_ context.Context, id string) (FailedAction, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.items {
		if failedID(s) == id {
			return decodeFailed(s)
		}
	}
	return FailedAction{}, fmt.Errorf("%w: %s", ErrFailedNotFound, id)
}

// Delete implements FailedStore.
func (m *MemoryFailedStore) Delete(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, s := range m.items {
		if failedID(s) == id {
			m.items = append(m.items[:i:i], m.items[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("%w: %s", ErrFailedNotFound, id)
}

// Count implements FailedStore.
func (m *MemoryFailedStore) Count(context.Context) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.items), nil
}
