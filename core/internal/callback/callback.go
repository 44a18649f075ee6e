// Package callback carries a plugin's answer to a card click back to the
// HTTP request (or WebSocket frame) that is still waiting for it: Lark wants
// the toast or new card within 3 s, while the click travels through the bus
// and may be handled on another replica. Waiters register before the event
// is published; the dispatcher delivers the plugin's CardResponse; a waiter
// that gave up (the budget ran out) makes Deliver report false, and the
// dispatcher applies the card later through the delayed-update API.
package callback

import (
	"context"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Hub registers waiters and delivers responses.
type Hub interface {
	// Register starts waiting for eventID's response; call it before the
	// event is published, and Close the waiter when done.
	Register(ctx context.Context, eventID string) (Waiter, error)
	// Deliver hands resp to eventID's waiter and reports whether one took it.
	Deliver(ctx context.Context, eventID string, resp *pluginv1.CardResponse) (bool, error)
}

// Waiter receives one response.
type Waiter interface {
	// Wait returns the response, or ok=false when ctx ends first.
	Wait(ctx context.Context) (resp *pluginv1.CardResponse, ok bool)
	Close()
}

// Memory is the in-process Hub (a single replica).
type Memory struct {
	mu      sync.Mutex
	waiters map[string]*memWaiter
}

// NewMemory returns an empty hub.
func NewMemory() *Memory { return &Memory{waiters: map[string]*memWaiter{}} }

type memWaiter struct {
	hub *Memory
	id  string
	ch  chan *pluginv1.CardResponse
}

// Register implements Hub.
func (m *Memory) Register(_ context.Context, eventID string) (Waiter, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := &memWaiter{hub: m, id: eventID, ch: make(chan *pluginv1.CardResponse, 1)}
	m.waiters[eventID] = w
	return w, nil
}

// Deliver implements Hub.
func (m *Memory) Deliver(_ context.Context, eventID string, resp *pluginv1.CardResponse) (bool, error) {
	m.mu.Lock()
	w, ok := m.waiters[eventID]
	delete(m.waiters, eventID)
	m.mu.Unlock()
	if !ok {
		return false, nil
	}
	w.ch <- resp
	return true, nil
}

func (w *memWaiter) Wait(ctx context.Context) (*pluginv1.CardResponse, bool) {
	select {
	case r := <-w.ch:
		return r, true
	case <-ctx.Done():
		return nil, false
	}
}

func (w *memWaiter) Close() {
	w.hub.mu.Lock()
	defer w.hub.mu.Unlock()
	if w.hub.waiters[w.id] == w {
		delete(w.hub.waiters, w.id)
	}
}

// Redis delivers across replicas with pub/sub: a waiter subscribes to its
// event's channel; Deliver publishes and learns from the receiver count
// whether anyone was waiting.
type Redis struct {
	client *redis.Client
	prefix string
}

// NewRedis uses channels under prefix (e.g. "larkway:callback:").
func NewRedis(client *redis.Client, prefix string) *Redis {
	return &Redis{client: client, prefix: prefix}
}

type redisWaiter struct {
	sub *redis.PubSub
}

// Register implements Hub.
func (r *Redis) Register(ctx context.Context, eventID string) (Waiter, error) {
	sub := r.client.Subscribe(ctx, r.prefix+eventID)
	// Receive the subscription confirmation so a Deliver from now on is seen.
	if _, err := sub.Receive(ctx); err != nil {
		_ = sub.Close()
		return nil, fmt.Errorf("waiting for card response: %w", err)
	}
	return &redisWaiter{sub: sub}, nil
}

// Deliver implements Hub.
func (r *Redis) Deliver(ctx context.Context, eventID string, resp *pluginv1.CardResponse) (bool, error) {
	b, err := proto.Marshal(resp)
	if err != nil {
		return false, err
	}
	n, err := r.client.Publish(ctx, r.prefix+eventID, b).Result()
	if err != nil {
		return false, fmt.Errorf("delivering card response: %w", err)
	}
	return n > 0, nil
}

func (w *redisWaiter) Wait(ctx context.Context) (*pluginv1.CardResponse, bool) {
	for {
		msg, err := w.sub.ReceiveMessage(ctx)
		if err != nil {
			return nil, false
		}
		resp := &pluginv1.CardResponse{}
		if proto.Unmarshal([]byte(msg.Payload), resp) == nil {
			return resp, true
		}
	}
}

func (w *redisWaiter) Close() { _ = w.sub.Close() }
