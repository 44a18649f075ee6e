// Package pulsar implements bus.Bus on Apache Pulsar. It is the only package
// that imports the Pulsar client; no Pulsar type appears in its API.
//
// Each bus topic maps to one non-partitioned Pulsar topic under
// Config.TopicPrefix (see PulsarTopic). Every subscription is Key_Shared and
// starts at the latest position when first created. Nack redelivery uses the
// client's nack tracker: delays under 30ms are raised to 30ms, and a
// redelivery may come up to a third of the second attempt's delay late.
// Dead-lettering is the client's: the message is routed to the dead-letter
// topic when it arrives for delivery number MaxDeliveries+1, that is one
// backoff after the last Nack. Producers are created per topic on first use;
// Config.Batching lets them batch concurrent publishes by key.
package pulsar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pulsarclient "github.com/apache/pulsar-client-go/pulsar"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/bus"
)

var _ bus.Bus = (*Bus)(nil)

// Config configures the Pulsar bus. Zero fields take the documented defaults.
type Config struct {
	// URL is the broker service URL: pulsar://host:6650 or pulsar+ssl://host:6651.
	URL string
	// AdminURL is the broker's HTTP admin endpoint, for backlog figures
	// (e.g. http://host:8080). Empty: Backlog is unavailable.
	AdminURL string
	// TopicPrefix is prepended to every escaped bus topic name. It names the
	// domain, tenant and namespace and ends with "/".
	// Default "persistent://public/default/".
	TopicPrefix string
	// ConnectionTimeout bounds establishing a TCP connection. Default 5s.
	ConnectionTimeout time.Duration
	// OperationTimeout bounds lookups, producer creation and subscribing.
	// Default 30s.
	OperationTimeout time.Duration
	// SendTimeout bounds one publish waiting for the broker, whatever the
	// caller's ctx allows. Default 30s.
	SendTimeout time.Duration
	// Batching lets concurrent publishes of one key share a broker entry
	// (KeyBasedBatchBuilder, as Key_Shared requires). It pays only when
	// publishes of one key overlap: with many chats a batch holds one
	// message, and the key-based builder's per-flush containers, the 1 ms
	// delay and batch-index acknowledgments then cost more than they save
	// (on the bench: ~8 µs more client CPU per event at 5 000/s, more broker
	// CPU per larkway event, p50 publish latency ~0.7 ms later; see
	// bench/README.md, "Pulsar."). The broker should run with
	// acknowledgmentAtBatchIndexLevelEnabled=true (Pulsar 4.0's default is
	// false): otherwise a Nack redelivers the whole entry, so messages acked
	// beside the nacked one are delivered again (the dispatcher's dedup then
	// acks them unhandled) and count toward MaxDeliveries with it. Without
	// batching every publish is its own entry; concurrent publishes are still
	// pipelined on one connection.
	Batching bool
	// BatchingMaxPublishDelay is how long a producer holds a publish to batch
	// it with concurrent ones, when Batching. Default 1ms.
	BatchingMaxPublishDelay time.Duration
	// ReceiverQueueSize is the per-consumer prefetch when
	// SubscribeOptions.ReceiverQueueSize is zero. Default 1000.
	ReceiverQueueSize int
	// Compression of producer batches: "" or "none" (default), "lz4",
	// "zstd" or "zlib". The broker stores batches as sent, so compression
	// moves CPU from the broker's disk writes to the client; see the
	// Pulsar section of bench/README.md for what it measured here.
	Compression string
}

// compressionTypes are Config.Compression's values.
var compressionTypes = map[string]pulsarclient.CompressionType{
	"": pulsarclient.NoCompression, "none": pulsarclient.NoCompression,
	"lz4": pulsarclient.LZ4, "zstd": pulsarclient.ZSTD, "zlib": pulsarclient.ZLib,
}

// DefaultTopicPrefix is the TopicPrefix used when Config leaves it empty.
const DefaultTopicPrefix = "persistent://public/default/"

func (c Config) withDefaults() Config {
	if c.TopicPrefix == "" {
		c.TopicPrefix = DefaultTopicPrefix
	}
	if c.ConnectionTimeout == 0 {
		c.ConnectionTimeout = 5 * time.Second
	}
	if c.OperationTimeout == 0 {
		c.OperationTimeout = 30 * time.Second
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = 30 * time.Second
	}
	if c.BatchingMaxPublishDelay == 0 {
		c.BatchingMaxPublishDelay = time.Millisecond
	}
	if c.ReceiverQueueSize == 0 {
		c.ReceiverQueueSize = 1000
	}
	return c
}

// Validate reports the first invalid field of c, after defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.URL == "":
		return errors.New("pulsar: URL is required")
	case !strings.HasPrefix(c.URL, "pulsar://") && !strings.HasPrefix(c.URL, "pulsar+ssl://"):
		return fmt.Errorf("pulsar: URL %q: want pulsar:// or pulsar+ssl://", c.URL)
	case c.ConnectionTimeout < 0 || c.OperationTimeout < 0 || c.SendTimeout < 0 || c.BatchingMaxPublishDelay < 0:
		return errors.New("pulsar: timeouts and delays must not be negative")
	case c.ReceiverQueueSize < 0:
		return fmt.Errorf("pulsar: negative ReceiverQueueSize %d", c.ReceiverQueueSize)
	}
	if _, ok := compressionTypes[c.Compression]; !ok {
		return fmt.Errorf("pulsar: Compression %q: want none, lz4, zstd or zlib", c.Compression)
	}
	domain, rest, ok := strings.Cut(c.TopicPrefix, "://")
	parts := strings.Split(rest, "/")
	if !ok || (domain != "persistent" && domain != "non-persistent") ||
		len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] != "" {
		return fmt.Errorf("pulsar: TopicPrefix %q: want persistent://<tenant>/<namespace>/", c.TopicPrefix)
	}
	return nil
}

// minNackDelay floors redelivery delays: the client's nack tracker ticks at a
// third of the second attempt's delay (so redelivery can be that late), and a
// zero delay would stop it.
const minNackDelay = 30 * time.Millisecond

// Bus is a bus.Bus on a Pulsar cluster.
type Bus struct {
	cfg    Config
	logger *slog.Logger
	client pulsarclient.Client
	admin  *http.Client

	// ops counts Publish, Subscribe and Ping calls in progress; bg counts the
	// goroutines they start. Both are waited for by Close.
	ops, bg tracker

	mu        sync.Mutex
	closed    bool // refusing new calls
	shut      bool // producers and consumers released
	producers map[string]*producerEntry
	consumers map[*consumer]struct{}
	done      chan struct{} // closed when Close has finished
}

type producerEntry struct {
	ready chan struct{} // closed once p or err is set
	p     pulsarclient.Producer
	err   error
}

// New returns a bus for cfg. It creates the Pulsar client object, which does
// not connect until the first call.
func New(cfg Config, logger *slog.Logger) (*Bus, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "bus.pulsar")
	client, err := pulsarclient.NewClient(pulsarclient.ClientOptions{
		URL:               cfg.URL,
		ConnectionTimeout: cfg.ConnectionTimeout,
		OperationTimeout:  cfg.OperationTimeout,
		Logger:            newClientLogger(logger.With("component", "pulsar-client")),
		// Keep the client's metrics off the global registry.
		MetricsRegisterer: prometheus.NewRegistry(),
	})
	if err != nil {
		return nil, fmt.Errorf("creating pulsar client for %s: %w", cfg.URL, err)
	}
	return &Bus{
		admin:     &http.Client{Timeout: 5 * time.Second},
		cfg:       cfg,
		logger:    logger,
		client:    client,
		producers: make(map[string]*producerEntry),
		consumers: make(map[*consumer]struct{}),
		done:      make(chan struct{}),
	}, nil
}

// PulsarTopic returns the Pulsar topic that bus topic maps to: TopicPrefix
// followed by the escaped name (see EscapeTopic).
func (b *Bus) PulsarTopic(topic string) (string, error) {
	if topic == "" {
		return "", errors.New("empty topic")
	}
	return b.cfg.TopicPrefix + EscapeTopic(topic), nil
}

// EscapeTopic maps a bus topic name to a legal local Pulsar topic name,
// deterministically and injectively. Bytes outside [a-zA-Z0-9_.:-] become
// "=XX" (uppercase hex; "=" itself is escaped), as do a leading "." or "_"
// (relative paths, system topics) and the "-" that starts "-partition-"
// (which Pulsar reads as a partition suffix). Names made of the usual
// characters, such as "events.cli_x", are unchanged.
func EscapeTopic(topic string) string {
	const hex = "0123456789ABCDEF"
	var sb strings.Builder
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		plain := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '_' || c == '-' || c == '.' || c == ':'
		switch {
		case i == 0 && (c == '.' || c == '_'):
			plain = false
		case c == '-' && strings.HasPrefix(topic[i:], "-partition-"):
			plain = false
		}
		if plain {
			sb.WriteByte(c)
			continue
		}
		sb.WriteByte('=')
		sb.WriteByte(hex[c>>4])
		sb.WriteByte(hex[c&0xf])
	}
	return sb.String()
}

// enter admits a Publish, Subscribe or Ping call, or reports ErrClosed.
func (b *Bus) enter() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return bus.ErrClosed
	}
	b.ops.add()
	return nil
}

// goTracked runs fn on a goroutine that Close waits for.
func (b *Bus) goTracked(fn func()) {
	b.bg.add()
	go func() {
		defer b.bg.done()
		fn()
	}()
}

// await runs op on a tracked goroutine, since the client's calls take no
// context, and returns its result or ctx's error. A result that arrives after
// ctx ended is passed to discard.
func await[T any](ctx context.Context, b *Bus, op func() (T, error), discard func(T)) (T, error) {
	type result struct {
		v   T
		err error
	}
	var (
		mu        sync.Mutex
		abandoned bool
		results   = make(chan result, 1)
	)
	b.goTracked(func() {
		v, err := op()
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			if err == nil && discard != nil {
				discard(v)
			}
			return
		}
		results <- result{v, err}
	})
	select {
	case r := <-results:
		return r.v, r.err
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		select {
		case r := <-results:
			return r.v, r.err
		default:
			abandoned = true
			var zero T
			return zero, ctx.Err()
		}
	}
}

// Publish sends msg and returns once the broker has stored it.
func (b *Bus) Publish(ctx context.Context, topic string, msg bus.Message) error {
	name, err := b.PulsarTopic(topic)
	if err != nil {
		return fmt.Errorf("publishing: %w", err)
	}
	if err := b.enter(); err != nil {
		return fmt.Errorf("publishing to %s: %w", topic, err)
	}
	defer b.ops.done()

	p, err := b.producer(ctx, name)
	if err != nil {
		return fmt.Errorf("publishing to %s: %w", topic, err)
	}
	// Producer.Send flushes its batch at once, so concurrent Sends never share
	// one; SendAsync lets them batch, and its callback runs on the broker's
	// receipt, so waiting for it keeps Publish synchronous and durable.
	w := sendWaits.Get().(*sendWait)
	w.msg = pulsarclient.ProducerMessage{Key: msg.Key, Payload: msg.Payload, Properties: msg.Properties}
	p.SendAsync(ctx, &w.msg, w.done)
	select {
	case err = <-w.sent:
		// The callback has run and the client holds neither: reuse them.
		w.msg = pulsarclient.ProducerMessage{}
		sendWaits.Put(w)
	case <-ctx.Done():
		err = ctx.Err() // w is the client's until its callback runs
	}
	if err != nil {
		return fmt.Errorf("publishing to %s: %w", topic, classify(err))
	}
	return nil
}

// sendWait is one Publish's message and receipt, pooled: a publish
// otherwise allocates the message, a channel and a callback closure.
type sendWait struct {
	msg  pulsarclient.ProducerMessage
	sent chan error
	done func(pulsarclient.MessageID, *pulsarclient.ProducerMessage, error)
}

var sendWaits = sync.Pool{New: func() any {
	w := &sendWait{sent: make(chan error, 1)}
	w.done = func(_ pulsarclient.MessageID, _ *pulsarclient.ProducerMessage, err error) { w.sent <- err }
	return w
}}

// producer returns the cached producer for the Pulsar topic name, creating it
// on first use. Concurrent callers share one creation.
func (b *Bus) producer(ctx context.Context, name string) (pulsarclient.Producer, error) {
	b.mu.Lock()
	if b.shut {
		b.mu.Unlock()
		return nil, bus.ErrClosed
	}
	e := b.producers[name]
	if e == nil {
		e = &producerEntry{ready: make(chan struct{})}
		b.producers[name] = e
		b.goTracked(func() { b.createProducer(name, e) })
	}
	b.mu.Unlock()

	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("creating producer: %w: %w", bus.ErrUnavailable, ctx.Err())
	}
	if e.err != nil {
		return nil, e.err
	}
	return e.p, nil
}

func (b *Bus) createProducer(name string, e *producerEntry) {
	opts := b.producerOptions()
	opts.Topic = name
	p, err := b.client.CreateProducer(opts)
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case err != nil:
		e.err = fmt.Errorf("creating producer for %s: %w", name, classify(err))
		delete(b.producers, name) // the next publish tries again
		b.logger.Warn("creating producer failed", "topic", name, "err", err)
	case b.shut:
		p.Close()
		e.err = bus.ErrClosed
	default:
		e.p = p
	}
	close(e.ready)
}

// producerOptions are the options of every producer, the dead-letter ones
// included, without the topic.
func (b *Bus) producerOptions() pulsarclient.ProducerOptions {
	return pulsarclient.ProducerOptions{
		SendTimeout:             b.cfg.SendTimeout,
		DisableBatching:         !b.cfg.Batching,
		BatchingMaxPublishDelay: b.cfg.BatchingMaxPublishDelay,
		CompressionType:         compressionTypes[b.cfg.Compression],
		// Key_Shared consumers need every batch to hold a single key.
		BatcherBuilderType: pulsarclient.KeyBasedBatchBuilder,
	}
}

// Subscribe opens a Key_Shared consumer on opts.Subscription.
func (b *Bus) Subscribe(ctx context.Context, opts bus.SubscribeOptions) (bus.Consumer, error) {
	name, err := b.PulsarTopic(opts.Topic)
	if err != nil {
		return nil, fmt.Errorf("subscribing: %w", err)
	}
	switch {
	case opts.Subscription == "":
		return nil, fmt.Errorf("subscribing to %s: empty subscription name", opts.Topic)
	case opts.MaxDeliveries < 0:
		return nil, fmt.Errorf("subscribing to %s: negative MaxDeliveries %d", opts.Topic, opts.MaxDeliveries)
	}
	if err := b.enter(); err != nil {
		return nil, fmt.Errorf("subscribing to %s: %w", opts.Topic, err)
	}
	defer b.ops.done()

	queue := opts.ReceiverQueueSize
	if queue == 0 {
		queue = b.cfg.ReceiverQueueSize
	}
	precision := int64(0) // redeliver at the backoff's millisecond, not a 256ms bucket
	co := pulsarclient.ConsumerOptions{
		Topic:                          name,
		SubscriptionName:               opts.Subscription,
		Type:                           pulsarclient.KeyShared,
		SubscriptionInitialPosition:    pulsarclient.SubscriptionPositionLatest,
		ReceiverQueueSize:              queue,
		NackBackoffPolicy:              nackBackoff{opts},
		NackPrecisionBit:               &precision,
		EnableBatchIndexAcknowledgment: true,
	}
	if opts.MaxDeliveries > 0 {
		dlq, err := b.PulsarTopic(opts.DeadLetter())
		if err != nil {
			return nil, fmt.Errorf("subscribing to %s: dead-letter topic: %w", opts.Topic, err)
		}
		co.DLQ = &pulsarclient.DLQPolicy{
			MaxDeliveries:   uint32(opts.MaxDeliveries),
			DeadLetterTopic: dlq,
			ProducerOptions: b.producerOptions(),
		}
	}

	pc, err := await(ctx, b, func() (pulsarclient.Consumer, error) { return b.client.Subscribe(co) },
		func(pc pulsarclient.Consumer) { pc.Close() })
	if err != nil {
		return nil, fmt.Errorf("subscribing %s to %s: %w", opts.Subscription, opts.Topic, classify(err))
	}
	c := &consumer{
		b:       b,
		pc:      pc,
		topic:   opts.Topic,
		sub:     opts.Subscription,
		done:    make(chan struct{}),
		drained: make(chan struct{}),
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.shut {
		pc.Close()
		return nil, fmt.Errorf("subscribing to %s: %w", opts.Topic, bus.ErrClosed)
	}
	b.consumers[c] = struct{}{}
	return c, nil
}

// nackBackoff adapts SubscribeOptions.BackoffFor to the client's policy, which
// counts redeliveries from 0 where the bus counts attempts from 1.
type nackBackoff struct{ opts bus.SubscribeOptions }

func (n nackBackoff) Next(redeliveryCount uint32) time.Duration {
	return max(n.opts.BackoffFor(int(redeliveryCount)+1), minNackDelay)
}

// Ping looks up a topic on the broker: it fails when the broker is unreachable.
func (b *Bus) Ping(ctx context.Context) error {
	if err := b.enter(); err != nil {
		return fmt.Errorf("pinging pulsar: %w", err)
	}
	defer b.ops.done()
	topic := b.cfg.TopicPrefix + "larkway-ping"
	_, err := await(ctx, b, func() ([]string, error) { return b.client.TopicPartitions(topic) }, nil)
	if err != nil {
		return fmt.Errorf("pinging pulsar at %s: %w", b.cfg.URL, classify(err))
	}
	return nil
}

// Close refuses new calls, waits (bounded by ctx) for publishes in progress,
// closes every consumer (draining each, bounded by ctx), flushes and closes
// the producers and closes the client. It is idempotent; a concurrent call
// waits for the first to finish.
func (b *Bus) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		select {
		case <-b.done:
		case <-ctx.Done():
		}
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	defer close(b.done)

	var errs []error
	if err := b.ops.wait(ctx); err != nil {
		errs = append(errs, fmt.Errorf("waiting for calls in progress: %w", err))
	}
	b.mu.Lock()
	b.shut = true
	consumers := slices.Collect(maps.Keys(b.consumers))
	var producers []pulsarclient.Producer
	for _, e := range b.producers {
		select {
		case <-e.ready:
			if e.p != nil {
				producers = append(producers, e.p)
			}
		default: // createProducer closes it when it arrives
		}
	}
	b.mu.Unlock()

	for _, c := range consumers {
		if err := c.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range producers {
		p.Close() // flushes pending batches
	}
	b.client.Close()
	b.bg.wait(context.Background()) // bounded by OperationTimeout once the client is closed
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing pulsar bus: %w", err)
	}
	return nil
}

func (b *Bus) forget(c *consumer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.consumers, c)
}

// classify wraps err with bus.ErrUnavailable unless retrying cannot help.
func classify(err error) error {
	if errors.Is(err, bus.ErrClosed) || errors.Is(err, bus.ErrUnavailable) {
		return err
	}
	var pe *pulsarclient.Error
	if errors.As(err, &pe) {
		switch pe.Result() {
		case pulsarclient.InvalidConfiguration, pulsarclient.InvalidMessage, pulsarclient.MessageTooBig,
			pulsarclient.InvalidTopicName, pulsarclient.InvalidURL, pulsarclient.SchemaFailure,
			pulsarclient.AuthenticationError, pulsarclient.AuthorizationError, pulsarclient.TopicTerminated,
			pulsarclient.InvalidBatchBuilderType, pulsarclient.OperationNotSupported,
			pulsarclient.UnsupportedVersionError, pulsarclient.CryptoError:
			return err
		}
	}
	return fmt.Errorf("%w: %w", bus.ErrUnavailable, err)
}

type consumer struct {
	b     *Bus
	pc    pulsarclient.Consumer
	topic string // the bus topic
	sub   string

	mu          sync.Mutex
	closing     bool
	released    bool // pc closed
	outstanding int
	done        chan struct{} // closed when Close begins
	drained     chan struct{} // closed when closing and nothing is outstanding
}

var _ bus.Consumer = (*consumer)(nil)

// Receive returns the next message. A message the client hands over after
// Close began is left unacknowledged; the broker redelivers it.
func (c *consumer) Receive(ctx context.Context) (*bus.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case <-c.done:
		return nil, bus.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	case cm, ok := <-c.pc.Chan():
		if !ok {
			return nil, bus.ErrClosed
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closing {
			return nil, bus.ErrClosed
		}
		c.outstanding++
		return c.delivery(cm.Message), nil
	}
}

func (c *consumer) delivery(msg pulsarclient.Message) *bus.Delivery {
	mid := msg.ID()
	// MessageID.String omits the batch index, which tells apart the messages
	// of one batch.
	id := messageID(mid)
	var settled atomic.Bool
	ack := func() error {
		if !settled.CompareAndSwap(false, true) {
			return nil
		}
		defer c.settle()
		if c.isReleased() {
			return fmt.Errorf("acknowledging message %s: consumer closed, the broker redelivers it: %w", id, bus.ErrClosed)
		}
		if err := c.pc.Ack(msg); err != nil {
			return fmt.Errorf("acknowledging message %s: %w", id, classify(err))
		}
		return nil
	}
	nack := func() error {
		if !settled.CompareAndSwap(false, true) {
			return nil
		}
		defer c.settle()
		if c.isReleased() {
			return fmt.Errorf("negatively acknowledging message %s: consumer closed, the broker redelivers it: %w", id, bus.ErrClosed)
		}
		c.pc.Nack(msg)
		return nil
	}
	m := bus.Message{Key: msg.Key(), Payload: msg.Payload(), Properties: msg.Properties()}
	return bus.NewDelivery(m, id, c.topic, int(msg.RedeliveryCount())+1, msg.PublishTime(), ack, nack)
}

// messageID is "ledger:entry:partition:batch", formatted without fmt's
// boxing (it runs once per delivery).
func messageID(mid pulsarclient.MessageID) string {
	b := make([]byte, 0, 48)
	b = strconv.AppendInt(b, mid.LedgerID(), 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, mid.EntryID(), 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(mid.PartitionIdx()), 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(mid.BatchIdx()), 10)
	return string(b)
}

func (c *consumer) isReleased() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.released
}

func (c *consumer) settle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.outstanding--
	if c.closing && c.outstanding == 0 {
		close(c.drained)
	}
}

// Close stops receiving, waits (bounded by ctx) for handed-out messages to be
// acked or nacked, then closes the Pulsar consumer, flushing its acks. The
// broker redelivers whatever is left unacknowledged to the subscription's
// other consumers. Close returns ctx's error if it stopped waiting; it is
// idempotent.
func (c *consumer) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.released {
		c.mu.Unlock()
		return nil
	}
	if !c.closing {
		c.closing = true
		close(c.done)
		if c.outstanding == 0 {
			close(c.drained)
		}
	}
	c.mu.Unlock()

	var err error
	select {
	case <-c.drained:
	case <-ctx.Done():
		c.mu.Lock()
		n := c.outstanding
		c.mu.Unlock()
		err = fmt.Errorf("closing consumer %s of %s: %d messages unsettled: %w", c.sub, c.topic, n, ctx.Err())
	}

	c.mu.Lock()
	release := !c.released
	c.released = true
	c.mu.Unlock()
	if release {
		c.pc.Close()
		c.b.forget(c)
	}
	return err
}

// tracker counts running work and lets Close wait for it to reach zero. Unlike
// sync.WaitGroup, work may start while someone waits.
type tracker struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0
}

func (t *tracker) add() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		t.zero = make(chan struct{})
	}
	t.n++
}

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n--; t.n == 0 {
		close(t.zero)
	}
}

func (t *tracker) wait(ctx context.Context) error {
	for {
		t.mu.Lock()
		if t.n == 0 {
			t.mu.Unlock()
			return nil
		}
		zero := t.zero
		t.mu.Unlock()
		select {
		case <-zero:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Backlog is a subscription's backlog from the broker's topic stats
// (msgBacklog); zero when the subscription does not exist yet.
func (b *Bus) Backlog(ctx context.Context, topic, subscription string) (int64, error) {
	if b.cfg.AdminURL == "" {
		return 0, fmt.Errorf("backlog of %s/%s: no admin URL configured", topic, subscription)
	}
	full, err := b.PulsarTopic(topic)
	if err != nil {
		return 0, err
	}
	// persistent://tenant/ns/topic → /admin/v2/persistent/tenant/ns/topic/stats
	path := strings.Replace(full, "://", "/", 1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(b.cfg.AdminURL, "/")+"/admin/v2/"+path+"/stats", nil)
	if err != nil {
		return 0, err
	}
	resp, err := b.admin.Do(req)
	if err != nil {
		return 0, fmt.Errorf("reading stats of %s: %w: %w", topic, bus.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return 0, nil
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("reading stats of %s: HTTP %d", topic, resp.StatusCode)
	}
	var stats struct {
		Subscriptions map[string]struct {
			MsgBacklog int64 `json:"msgBacklog"`
		} `json:"subscriptions"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(&stats); err != nil {
		return 0, fmt.Errorf("decoding stats of %s: %w", topic, err)
	}
	return stats.Subscriptions[subscription].MsgBacklog, nil
}
