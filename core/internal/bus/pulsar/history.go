package pulsar

import (
	"context"
	"fmt"
	"time"

	pulsarclient "github.com/apache/pulsar-client-go/pulsar"

	"github.com/larkway/larkway/core/internal/bus"
)

// History implements bus.Historian with a non-durable reader: it sees what
// the namespace's retention policy keeps (acknowledged messages are
// deleted once their ledger is trimmed unless retention is set).
//
// It reads from the earliest message kept up to the last one stored when
// it starts, skipping those published outside [from, to): the end is a
// message id, not a time, because publish times come from the producers
// (several replicas) and are only roughly in storage order, and because
// the reader's HasNext reports a failed broker call as "no more", which
// would cut a replay short without an error.
func (b *Bus) History(ctx context.Context, topic string, from, to time.Time, fn func(bus.Message, time.Time) error) error {
	name, err := b.PulsarTopic(topic)
	if err != nil {
		return fmt.Errorf("reading history: %w", err)
	}
	if err := b.enter(); err != nil {
		return fmt.Errorf("reading the history of %s: %w", topic, err)
	}
	defer b.ops.done()
	r, err := b.client.CreateReader(pulsarclient.ReaderOptions{Topic: name, StartMessageID: pulsarclient.EarliestMessageID(),
		StartMessageIDInclusive: true})
	if err != nil {
		return fmt.Errorf("reading the history of %s: %w", topic, err)
	}
	defer r.Close()
	last, err := r.GetLastMessageID()
	if err != nil {
		return fmt.Errorf("reading the history of %s: finding its last message: %w", topic, err)
	}
	if last.EntryID() < 0 {
		return nil // nothing stored
	}
	for {
		m, err := r.Next(ctx)
		if err != nil {
			return fmt.Errorf("reading the history of %s: %w", topic, err)
		}
		if pt := m.PublishTime(); !pt.Before(from) && pt.Before(to) {
			if err := fn(bus.Message{Key: m.Key(), Payload: m.Payload(), Properties: m.Properties()}, pt); err != nil {
				return err
			}
		}
		if reached(m.ID(), last) {
			return nil
		}
	}
}

// reached reports whether id is at or past last, the last message stored.
// A batched last entry may be reported with or without its batch index:
// the entry's final message ends it either way.
func reached(id, last pulsarclient.MessageID) bool {
	if id.LedgerID() != last.LedgerID() {
		return id.LedgerID() > last.LedgerID()
	}
	if id.EntryID() != last.EntryID() {
		return id.EntryID() > last.EntryID()
	}
	if id.BatchIdx() < 0 || id.BatchIdx() >= id.BatchSize()-1 {
		return true
	}
	return last.BatchIdx() >= 0 && id.BatchIdx() >= last.BatchIdx()
}
