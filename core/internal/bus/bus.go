// Package bus is the durable event log between ingest and dispatch.
//
// Three implementations pass one conformance suite (bus/bustest):
// bus/embedded, the durable single-machine default (an fsynced log on local
// disk), bus/pulsar, backed by Apache Pulsar, and bus/memory, non-durable (RAM
// only), for tests and benchmarks. Only bus/pulsar imports the Pulsar client
// and only bus/embedded the storage engine; no type of theirs appears in this
// package.
package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/larkway/larkway/core/internal/backoff"
)

// ErrUnavailable classes failures where the bus could not take or hand out a
// message right now (broker down, closed client). Ingest maps it to HTTP 503 so
// Lark retries; it is never a reason to acknowledge an event that was not stored.
var ErrUnavailable = errors.New("bus unavailable")

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("bus closed")

// ErrFull classes a publish refused because the bus holds as much as its
// bound allows: it wraps ErrUnavailable (Lark retries), and the publish may
// succeed as soon as consumers acknowledge what is held.
var ErrFull = fmt.Errorf("%w: at its bound", ErrUnavailable)

// Admitter is implemented by a bus that bounds what it holds. Ingest asks
// it before a request's expensive work (verification, decryption), so that
// at the bound a request costs a cheap 503 rather than the CPU dispatch
// needs to make room.
type Admitter interface {
	// Room returns nil while a publish would be taken; otherwise a channel
	// that is closed once it may be taken again (it may stay open forever,
	// e.g. while a disk is full: callers bound their wait).
	Room() <-chan struct{}
}

// Message is what producers publish. Key orders messages: messages with one key
// reach one consumer of a subscription in publish order (Key_Shared).
type Message struct {
	Key        string
	Payload    []byte
	Properties map[string]string
}

// Delivery is one received message. Exactly one of Ack or Nack must be called.
// Its Payload and Properties are read-only: an implementation may share them
// between deliveries, but never reuses their memory, even after Ack or Nack
// (the dispatcher hands the Payload to gRPC without copying it, and a write
// can still be queued when a timed-out delivery is nacked).
// Both are safe to call from any goroutine; calls after the first are no-ops.
type Delivery struct {
	Message
	// ID identifies the message within its topic, stable across redeliveries.
	ID string
	// Topic is the topic the message was read from (the dead-letter topic when
	// reading one).
	Topic string
	// Attempt counts deliveries of this message on this subscription, from 1.
	Attempt int
	// PublishTime is when the bus stored the message.
	PublishTime time.Time

	ack  func() error
	nack func() error
}

// NewDelivery is for implementations: it binds the ack and nack callbacks.
func NewDelivery(m Message, id, topic string, attempt int, published time.Time, ack, nack func() error) *Delivery {
	return &Delivery{Message: m, ID: id, Topic: topic, Attempt: attempt, PublishTime: published, ack: ack, nack: nack}
}

// Ack marks the message processed; it will not be delivered again on this
// subscription.
func (d *Delivery) Ack() error { return d.ack() }

// Nack asks for redelivery after the subscription's backoff for this attempt.
// Once a message has been delivered MaxDeliveries times, a further Nack moves
// it to the subscription's dead-letter topic instead.
func (d *Delivery) Nack() error { return d.nack() }

// Publisher writes messages.
//
// Publish returns nil only once the bus has durably stored the message (for
// embedded: fsynced; for memory, which is not durable: stored in the
// process's log); callers may then acknowledge upstream.
// It is safe for concurrent use; concurrent publishes are batched by the
// implementation. Errors wrap ErrUnavailable when the write may succeed later.
// Once Publish has returned nil the bus holds no reference to msg's Payload,
// so the caller may reuse it; after an error it may still (a send can be in
// flight past the caller's deadline).
type Publisher interface {
	Publish(ctx context.Context, topic string, msg Message) error
}

// SubscribeOptions selects a topic and a named subscription on it. Consumers that
// share a Subscription split the keys between them (Key_Shared) and each key's
// messages stay in order; distinct Subscriptions each see every message.
type SubscribeOptions struct {
	Topic        string
	Subscription string
	// MaxDeliveries moves a message to DeadLetterTopic instead of delivering
	// it again after this many deliveries. Zero disables dead-lettering.
	MaxDeliveries int
	// DeadLetterTopic defaults to "<Topic>-<Subscription>-DLQ".
	DeadLetterTopic string
	// Backoff gives the redelivery delay after a Nack of the given attempt
	// (1-based). Nil means DefaultBackoff.
	Backoff func(attempt int) time.Duration
	// ReceiverQueueSize bounds messages prefetched per consumer (0: default).
	ReceiverQueueSize int
}

// DeadLetterTopic returns the dead-letter topic o names or its default.
func (o SubscribeOptions) DeadLetter() string {
	if o.DeadLetterTopic != "" {
		return o.DeadLetterTopic
	}
	return o.Topic + "-" + o.Subscription + "-DLQ"
}

// BackoffFor returns the redelivery delay for attempt under o.
func (o SubscribeOptions) BackoffFor(attempt int) time.Duration {
	if o.Backoff != nil {
		return o.Backoff(attempt)
	}
	return DefaultBackoff(attempt)
}

// DefaultBackoff doubles from 1 s up to 1 min.
func DefaultBackoff(attempt int) time.Duration {
	return backoff.Policy{First: time.Second, Max: time.Minute}.Delay(attempt)
}

// Consumer receives one subscription's messages.
//
// Receive blocks until a message arrives, ctx ends (ctx.Err()) or the consumer
// is closed (ErrClosed). It is safe for concurrent use. Close stops delivering
// new messages, waits (bounded by ctx) for messages already handed out to be
// acked or nacked, then releases the subscription; it is idempotent.
type Consumer interface {
	Receive(ctx context.Context) (*Delivery, error)
	Close(ctx context.Context) error
}

// Subscriber opens consumers.
type Subscriber interface {
	Subscribe(ctx context.Context, opts SubscribeOptions) (Consumer, error)
}

// Backlogger reports a subscription's unacknowledged messages; every
// implementation provides it (Pulsar from the broker's topic stats).
type Backlogger interface {
	Backlog(ctx context.Context, topic, subscription string) (int64, error)
}

// Bus is a whole implementation: publish, subscribe, and an idempotent Close
// that flushes pending publishes and releases connections.
type Bus interface {
	Publisher
	Subscriber
	// Ping reports whether the bus can take writes now (readiness).
	Ping(ctx context.Context) error
	Close(ctx context.Context) error
}

// ErrNoHistory is returned by a bus that keeps no history to read back
// (the memory bus).
var ErrNoHistory = errors.New("the bus keeps no history")

// Historian reads a topic's stored messages back, whether or not any
// subscription still needs them: what the bus's retention keeps (the
// embedded bus's log; Pulsar's retention, through a reader).
type Historian interface {
	// History calls fn, in publish order, for each stored message of topic
	// published in [from, to), until fn returns an error (which History
	// returns).
	History(ctx context.Context, topic string, from, to time.Time, fn func(m Message, published time.Time) error) error
}
