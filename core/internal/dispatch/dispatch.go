// Package dispatch streams events from the bus to plugin instances and turns
// their results into actions, acks, retries and dead letters. Each plugin has
// its own bus subscription, so its backlog, retries and position are its own.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/envelope"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// ErrStreamBroken is returned when the plugin's Handle stream fails: the
// process died or stopped answering. Unfinished deliveries are redelivered.
var ErrStreamBroken = errors.New("plugin stream broken")

// Property on dead-lettered messages saying why.
const PropDeadLetterReason = "larkway-dead-letter-reason"

// Plugin is a running plugin instance.
type Plugin interface {
	Manifest() *pluginv1.Manifest
	Service() pluginv1.PluginServiceClient
}

// Executor performs a result's actions.
type Executor interface {
	Execute(ctx context.Context, req action.Request) ([]*pluginv1.RefusedAction, error)
}

// Config tunes delivery.
type Config struct {
	// Topics to consume (one per app).
	Topics []string
	// Deadline for each delivery.
	Deadline time.Duration
	// MaxAttempts before an event goes to the plugin's dead letters.
	MaxAttempts int
	// MaxInFlight when the manifest sets none.
	MaxInFlight int
	// Backoff is the redelivery delay per attempt (nil: bus default).
	Backoff func(attempt int) time.Duration
}

// Dispatcher delivers events to plugins.
type Dispatcher struct {
	cfg Config
	bus interface {
		bus.Publisher
		bus.Subscriber
	}
	exec    Executor
	logger  *slog.Logger
	metrics *metrics
	seq     atomic.Uint64
}

type metrics struct {
	deliveries *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	inFlight   *prometheus.GaugeVec
	dead       *prometheus.CounterVec
}

// New returns a dispatcher; it does no I/O.
func New(cfg Config, b interface {
	bus.Publisher
	bus.Subscriber
}, exec Executor, logger *slog.Logger, reg prometheus.Registerer) *Dispatcher {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_dispatch_results_total", Help: "Delivery outcomes by plugin.",
		}, []string{"plugin", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "larkway_dispatch_plugin_duration_seconds", Help: "Time from delivery to result, by plugin.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"plugin"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "larkway_dispatch_in_flight", Help: "Deliveries awaiting a result, by plugin.",
		}, []string{"plugin"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_dispatch_dead_letters_total", Help: "Events dead-lettered, by plugin.",
		}, []string{"plugin"}),
	}
	if reg != nil {
		reg.MustRegister(m.deliveries, m.latency, m.inFlight, m.dead)
	}
	return &Dispatcher{cfg: cfg, bus: b, exec: exec, logger: logger.With("component", "dispatch"), metrics: m}
}

// Subscription is the bus subscription name of a plugin.
func Subscription(plugin string) string { return "plugin-" + plugin }

// DeadLetterTopic is where a plugin's failed events of topic go.
func DeadLetterTopic(topic, plugin string) string { return topic + "-" + Subscription(plugin) + "-DLQ" }

// session is one plugin instance's Handle stream and its pending deliveries.
type session struct {
	d       *Dispatcher
	plugin  Plugin
	name    string
	matcher *matcher
	stream  pluginv1.PluginService_HandleClient

	sendMu  sync.Mutex
	mu      sync.Mutex
	pending map[string]chan *pluginv1.Result
	broken  chan struct{}
	err     error
}

// Serve delivers the plugin's events until ctx ends (then it finishes what
// it holds and returns nil) or the plugin's stream breaks (it redelivers what
// was unfinished and returns an error wrapping ErrStreamBroken). subscribed,
// if not nil, is called once every topic's subscription exists.
func (d *Dispatcher) Serve(ctx context.Context, p Plugin, subscribed func()) error {
	m := p.Manifest()
	name := m.GetName()
	mt, err := newMatcher(m)
	if err != nil {
		return fmt.Errorf("serving plugin %s: %w", name, err)
	}
	// The stream outlives ctx so in-flight deliveries can finish on shutdown.
	streamCtx, cancelStream := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelStream()
	stream, err := p.Service().Handle(streamCtx)
	if err != nil {
		return fmt.Errorf("opening %s stream: %w: %w", name, ErrStreamBroken, err)
	}
	s := &session{d: d, plugin: p, name: name, matcher: mt, stream: stream,
		pending: map[string]chan *pluginv1.Result{}, broken: make(chan struct{})}
	recvDone := make(chan struct{})
	go func() { defer close(recvDone); s.receive() }()

	n := int(m.GetMaxInFlight())
	if n <= 0 {
		n = d.cfg.MaxInFlight
	}
	work := make([]chan *bus.Delivery, n)
	var workers sync.WaitGroup
	for i := range work {
		work[i] = make(chan *bus.Delivery, 1)
		workers.Add(1)
		go func() { defer workers.Done(); s.worker(ctx, work[i]) }()
	}

	var consumers []bus.Consumer
	var readers sync.WaitGroup
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	for _, topic := range d.cfg.Topics {
		c, err := d.bus.Subscribe(ctx, bus.SubscribeOptions{
			Topic: topic, Subscription: Subscription(name), DeadLetterTopic: DeadLetterTopic(topic, name),
			// The dispatcher dead-letters with a reason itself at MaxAttempts;
			// the bus's own dead-lettering one later is a backstop.
			MaxDeliveries: d.cfg.MaxAttempts + 1, Backoff: d.cfg.Backoff,
		})
		if err != nil {
			err = fmt.Errorf("subscribing %s to %s: %w", name, topic, err)
			stopReading()
			readers.Wait()
			closeAll(work)
			workers.Wait()
			d.closeConsumers(consumers)
			_ = stream.CloseSend()
			return err
		}
		consumers = append(consumers, c)
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				del, err := c.Receive(readCtx)
				if err != nil {
					return
				}
				work[shard(del.Key, n)] <- del
			}
		}()
	}
	if subscribed != nil {
		subscribed()
	}
	// Stop reading on shutdown or when the plugin's stream breaks.
	select {
	case <-ctx.Done():
	case <-s.broken:
	}
	stopReading()
	readers.Wait()
	closeAll(work)
	workers.Wait()
	d.closeConsumers(consumers)
	_ = stream.CloseSend()
	cancelStream()
	<-recvDone
	select {
	case <-s.broken:
		if ctx.Err() == nil {
			return fmt.Errorf("serving plugin %s: %w: %w", name, ErrStreamBroken, s.err)
		}
	default:
	}
	return nil
}

func closeAll(chs []chan *bus.Delivery) {
	for _, c := range chs {
		close(c)
	}
}

func (d *Dispatcher) closeConsumers(cs []bus.Consumer) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range cs {
		if err := c.Close(ctx); err != nil {
			d.logger.Warn("closing consumer", "err", err)
		}
	}
}

func shard(key string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// receive routes results to waiting deliveries until the stream ends.
func (s *session) receive() {
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			s.mu.Lock()
			s.err = err
			for id, ch := range s.pending {
				close(ch)
				delete(s.pending, id)
			}
			s.mu.Unlock()
			close(s.broken)
			return
		}
		res := resp.GetResult()
		if res == nil {
			continue
		}
		s.mu.Lock()
		ch, ok := s.pending[res.GetDeliveryId()]
		delete(s.pending, res.GetDeliveryId())
		s.mu.Unlock()
		if !ok {
			// A result for nothing we wait for (late after a timeout, or
			// made up): dropped, and counted.
			s.d.metrics.deliveries.WithLabelValues(s.name, "unknown_result").Inc()
			continue
		}
		ch <- res
	}
}

func (s *session) worker(ctx context.Context, in <-chan *bus.Delivery) {
	for del := range in {
		s.process(ctx, del)
	}
}

// process handles one bus delivery end to end; exactly one of ack, nack or
// dead-letter happens.
func (s *session) process(ctx context.Context, del *bus.Delivery) {
	d := s.d
	log := d.logger.With("plugin", s.name, "msg_id", del.ID, "attempt", del.Attempt)
	ev, err := envelope.Decode(del.Payload)
	if err != nil {
		s.deadLetter(del, "undecodable event: "+err.Error(), log)
		return
	}
	if !s.matcher.match(ev) {
		_ = del.Ack()
		return
	}
	select {
	case <-s.broken:
		_ = del.Nack()
		return
	default:
	}
	id := s.name + "-" + strconv.FormatUint(d.seq.Add(1), 36)
	ch := make(chan *pluginv1.Result, 1)
	s.mu.Lock()
	s.pending[id] = ch
	s.mu.Unlock()
	deadline := time.Now().Add(d.cfg.Deadline)
	start := time.Now()
	d.metrics.inFlight.WithLabelValues(s.name).Inc()
	defer d.metrics.inFlight.WithLabelValues(s.name).Dec()
	s.sendMu.Lock()
	err = s.stream.Send(&pluginv1.HandleRequest{Kind: &pluginv1.HandleRequest_Delivery{Delivery: &pluginv1.Delivery{
		DeliveryId: id, Event: ev, Attempt: uint32(del.Attempt), Deadline: timestamppb.New(deadline),
	}}})
	s.sendMu.Unlock()
	if err != nil {
		s.forget(id)
		d.metrics.deliveries.WithLabelValues(s.name, "stream_error").Inc()
		_ = del.Nack()
		return
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	var res *pluginv1.Result
	select {
	case r, ok := <-ch:
		if !ok {
			d.metrics.deliveries.WithLabelValues(s.name, "stream_error").Inc()
			_ = del.Nack()
			return
		}
		res = r
	case <-timer.C:
		s.forget(id)
		d.metrics.deliveries.WithLabelValues(s.name, "timeout").Inc()
		s.retry(del, "deadline exceeded", log)
		return
	}
	d.metrics.latency.WithLabelValues(s.name).Observe(time.Since(start).Seconds())
	switch res.GetOutcome() {
	case pluginv1.Outcome_OUTCOME_DONE:
		// Actions run on a context that shutdown does not cut short: the
		// plugin has answered, and its reply must not be lost.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		refused, err := d.exec.Execute(actx, action.Request{Plugin: s.name, Allowed: s.plugin.Manifest().GetAllowedActions(),
			Event: ev, Actions: res.GetActions(), Attempts: del.Attempt})
		cancel()
		if len(refused) > 0 {
			s.sendAck(id, refused)
		}
		if err != nil {
			d.metrics.deliveries.WithLabelValues(s.name, "action_retry").Inc()
			s.retry(del, err.Error(), log)
			return
		}
		d.metrics.deliveries.WithLabelValues(s.name, "done").Inc()
		_ = del.Ack()
	case pluginv1.Outcome_OUTCOME_RETRY:
		d.metrics.deliveries.WithLabelValues(s.name, "retry").Inc()
		s.retry(del, "plugin asked to retry: "+res.GetError(), log)
	default:
		d.metrics.deliveries.WithLabelValues(s.name, "failed").Inc()
		s.deadLetter(del, "plugin failed: "+res.GetError(), log)
	}
}

func (s *session) forget(id string) {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
}

func (s *session) sendAck(id string, refused []*pluginv1.RefusedAction) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	_ = s.stream.Send(&pluginv1.HandleRequest{Kind: &pluginv1.HandleRequest_ResultAck{ResultAck: &pluginv1.ResultAck{DeliveryId: id, Refused: refused}}})
}

// retry nacks, or dead-letters once the attempts are used up.
func (s *session) retry(del *bus.Delivery, reason string, log *slog.Logger) {
	if del.Attempt >= s.d.cfg.MaxAttempts {
		s.deadLetter(del, fmt.Sprintf("after %d attempts: %s", del.Attempt, reason), log)
		return
	}
	_ = del.Nack()
}

// deadLetter moves the message to the plugin's dead-letter topic with the
// reason, then acks it. If the dead-letter write fails the message is nacked
// instead, so it is never dropped.
func (s *session) deadLetter(del *bus.Delivery, reason string, log *slog.Logger) {
	props := make(map[string]string, len(del.Properties)+1)
	for k, v := range del.Properties {
		props[k] = v
	}
	props[PropDeadLetterReason] = reason
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.d.bus.Publish(ctx, DeadLetterTopic(del.Topic, s.name), bus.Message{Key: del.Key, Payload: del.Payload, Properties: props}); err != nil {
		log.Error("dead-lettering failed; will redeliver", "err", err)
		_ = del.Nack()
		return
	}
	s.d.metrics.dead.WithLabelValues(s.name).Inc()
	log.Warn("event dead-lettered", "reason", reason)
	_ = del.Ack()
}
