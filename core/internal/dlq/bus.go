package dlq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/envelope"
)

// Message properties of dead letters and replays.
const (
	// PropReason says why a message was dead-lettered.
	PropReason = "larkway-dead-letter-reason"
	// PropOnlyPlugin limits a replayed event to the plugin it was replayed for.
	PropOnlyPlugin = "larkway-only-plugin"
)

// IndexSubscription is the bus subscription on every dead-letter topic
// that copies its messages into the index.
const IndexSubscription = "larkway-dlq-index"

// Index copies the dead letters c receives into store until ctx ends or c
// closes. c reads plugin's dead-letter topic for topic, the event's original
// topic (where a replay publishes it). A dead letter that cannot be stored
// is nacked, so the bus offers it again.
func Index(ctx context.Context, c bus.Consumer, store Store, plugin, topic string, logger *slog.Logger) {
	for {
		del, err := c.Receive(ctx)
		if err != nil {
			return
		}
		props := maps.Clone(del.Properties)
		if props == nil {
			props = map[string]string{}
		}
		e := Entry{ID: del.ID, Plugin: plugin, Topic: topic, Key: del.Key, Reason: props[PropReason],
			EventID: props[envelope.PropEventID], EventType: props[envelope.PropEventType], Payload: del.Payload,
			Properties: props, DeadAt: del.PublishTime}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err = store.Add(actx, e)
		cancel()
		if err != nil {
			logger.Warn("indexing dead letter failed; will retry", "plugin", plugin, "err", err)
			_ = del.Nack()
			continue
		}
		_ = del.Ack()
	}
}

// Replay publishes a dead letter back to its topic for its plugin alone
// and removes it from store (nil: no index to remove it from).
func Replay(ctx context.Context, pub bus.Publisher, store Store, e Entry) error {
	props := make(map[string]string, len(e.Properties)+1)
	for k, v := range e.Properties {
		if k != PropReason {
			props[k] = v
		}
	}
	props[PropOnlyPlugin] = e.Plugin
	if err := pub.Publish(ctx, e.Topic, bus.Message{Key: e.Key, Payload: e.Payload, Properties: props}); err != nil {
		return fmt.Errorf("replaying %s/%s: %w", e.Plugin, e.ID, err)
	}
	if store != nil {
		if err := store.Delete(ctx, e.Plugin, e.ID); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("replayed %s/%s but could not remove it from the index: %w", e.Plugin, e.ID, err)
		}
	}
	return nil
}
