package pulsar

import (
	"context"
	"fmt"
	"time"

	pulsarclient "github.com/apache/pulsar-client-go/pulsar"

	"github.com/larkway/larkway/core/internal/bus"
)

// History implements bus.Historian with a non-durable reader, positioned
// by publish time: it sees what the namespace's retention policy keeps
// (acknowledged messages are deleted at once unless retention is set).
func (b *Bus) History(ctx context.Context, topic string, from, to time.Time, fn func(bus.Message, time.Time) error) error {
	name, err := b.PulsarTopic(topic)
	if err != nil {
		return fmt.Errorf("reading history: %w", err)
	}
	if err := b.enter(); err != nil {
		return fmt.Errorf("reading the history of %s: %w", topic, err)
	}
	defer b.ops.done()
	r, err := b.client.CreateReader(pulsarclient.ReaderOptions{Topic: name, StartMessageID: pulsarclient.EarliestMessageID()})
	if err != nil {
		return fmt.Errorf("reading the history of %s: %w", topic, err)
	}
	defer r.Close()
	if err := r.SeekByTime(from); err != nil {
		return fmt.Errorf("reading the history of %s from %s: %w", topic, from, err)
	}
	for r.HasNext() {
		m, err := r.Next(ctx)
		if err != nil {
			return fmt.Errorf("reading the history of %s: %w", topic, err)
		}
		pt := m.PublishTime()
		if pt.Before(from) {
			continue
		}
		if !pt.Before(to) {
			return nil
		}
		props := m.Properties()
		if err := fn(bus.Message{Key: m.Key(), Payload: m.Payload(), Properties: props}, pt); err != nil {
			return err
		}
	}
	return nil
}
