// Package stream is the transport between the dispatcher and one plugin
// instance: its Handle stream, the deliveries in flight on it, and how they
// travel — pre-encoded from the bus payload (wire.go), batched into one
// message when several are ready, and timed out by one expiry ticker.
// It knows nothing of the bus, dedup or actions: a delivery goes in, a
// result or an error comes out.
package stream

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/larkway/larkway/core/internal/telemetry"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

var (
	// ErrBroken is returned when the plugin's Handle stream fails: the
	// process died or stopped answering. The delivery may or may not have
	// reached the plugin.
	ErrBroken = errors.New("plugin stream broken")
	// ErrTimeout is returned when no result came before the delivery's
	// deadline (waiting for a free slot included).
	ErrTimeout = errors.New("no result before the delivery deadline")
)

// Options configure a Session.
type Options struct {
	// Name is the plugin's; delivery ids start with it.
	Name string
	// Deadline is each delivery's time limit.
	Deadline time.Duration
	// MaxInFlight bounds deliveries the instance holds at once (at least 1).
	MaxInFlight int
	// Batches: the plugin takes DeliveryBatch messages.
	Batches bool
	// Metrics are the plugin's series (nil fields: not observed).
	Metrics Metrics
}

// Metrics are one plugin's series the transport keeps. They are resolved
// once per plugin: WithLabelValues hashes its labels on every call.
type Metrics struct {
	// InFlight counts deliveries awaiting a result.
	InFlight prometheus.Gauge
	// Latency observes the time from delivery to result, in seconds.
	Latency prometheus.Observer
	// UnknownResults counts results for no delivery waited for (late after a
	// timeout, or made up); they are dropped.
	UnknownResults prometheus.Counter
}

// Session is one plugin instance's Handle stream and its pending deliveries.
type Session struct {
	name     string
	deadline time.Duration
	stream   pluginv1.PluginService_HandleClient
	cancel   context.CancelFunc
	recv     chan struct{} // closed when the receive loop ends
	swept    chan struct{} // closed when the expiry loop ends

	// batches: the plugin takes DeliveryBatch messages.
	batches bool
	// slots bounds deliveries in flight to the manifest's max_in_flight.
	slots chan struct{}
	// Deliveries wait in queue for the sender goroutine, which sends what
	// has gathered as one message (batching only what is ready: it never
	// waits to fill a batch). sendMu serializes it with acks and CloseSend.
	qmu    sync.Mutex
	queue  []outgoing
	spare  []outgoing // the sender's last queue, reused by enqueue
	kick   chan struct{}
	done   chan struct{} // closed by Close: the sender stops
	sent   chan struct{} // closed when the sender has stopped
	sendMu sync.Mutex

	inFlight prometheus.Gauge
	latency  prometheus.Observer
	unknown  prometheus.Counter

	answered chan struct{} // a result arrived

	mu      sync.Mutex
	pending map[string]pendingResult
	broken  chan struct{}
	err     error

	activeMu sync.Mutex
	active   int
	detached bool
	idle     chan struct{} // closed once detached and no delivery is active
}

// seq numbers deliveries. Ids are unique in the process, not only per
// stream: a result is only ever matched within its own stream, but a plugin
// may log or key on them.
var seq atomic.Uint64

// Open opens the instance's Handle stream. The stream lives until Drain or
// Close, independent of ctx, so in-flight deliveries can finish on shutdown.
func Open(ctx context.Context, client pluginv1.PluginServiceClient, o Options) (*Session, error) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stream, err := client.Handle(sctx, handleCodec)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("opening %s stream: %w: %w", o.Name, ErrBroken, err)
	}
	m := o.Metrics // missing series are kept, but registered nowhere
	if m.InFlight == nil {
		m.InFlight = prometheus.NewGauge(prometheus.GaugeOpts{Name: "unregistered"})
	}
	if m.Latency == nil {
		m.Latency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "unregistered"})
	}
	if m.UnknownResults == nil {
		m.UnknownResults = prometheus.NewCounter(prometheus.CounterOpts{Name: "unregistered"})
	}
	s := &Session{name: o.Name, deadline: o.Deadline, stream: stream, cancel: cancel,
		recv: make(chan struct{}), swept: make(chan struct{}), pending: map[string]pendingResult{}, broken: make(chan struct{}), idle: make(chan struct{}),
		batches: o.Batches, slots: make(chan struct{}, max(o.MaxInFlight, 1)), kick: make(chan struct{}, 1), answered: make(chan struct{}, 1),
		done: make(chan struct{}), sent: make(chan struct{}),
		inFlight: m.InFlight, latency: m.Latency, unknown: m.UnknownResults}
	go func() { defer close(s.recv); s.receive() }()
	go func() { defer close(s.sent); s.sendLoop() }()
	go func() { defer close(s.swept); s.expireLoop() }()
	return s, nil
}

// pendingResult is a delivery waiting for its result. Whoever removes it
// from pending (the result, the expiry loop, a failed send or the broken
// stream) is the one to answer on ch.
type pendingResult struct {
	ch       chan *pluginv1.Result // nil sent: deadline passed; closed: stream broken
	deadline time.Time
}

// expireLoop times out deliveries whose deadline passed. One ticker per
// session replaces a timer per delivery, which was a tenth of deliver's CPU;
// a timeout is late by at most a tick (a twentieth of the deadline, 100 ms
// at most), after the plugin's own context has ended.
func (s *Session) expireLoop() {
	t := time.NewTicker(min(max(s.deadline/20, time.Millisecond), 100*time.Millisecond))
	defer t.Stop()
	var late []chan *pluginv1.Result
	for {
		select {
		case now := <-t.C:
			s.mu.Lock()
			for id, p := range s.pending {
				if !now.Before(p.deadline) {
					delete(s.pending, id)
					late = append(late, p.ch)
				}
			}
			s.mu.Unlock()
			for i, ch := range late {
				ch <- nil
				late[i] = nil
			}
			late = late[:0]
		case <-s.recv: // the stream is gone and pending with it
			return
		}
	}
}

const (
	lingerMin = 16
	lingerMax = 100 * time.Microsecond
)

// Broken is closed when the stream fails (the process died or hung up).
func (s *Session) Broken() <-chan struct{} { return s.broken }

// Err is why the stream broke.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Active is the number of deliveries in flight on this session (between
// Acquire and Release).
func (s *Session) Active() int {
	s.activeMu.Lock()
	defer s.activeMu.Unlock()
	return s.active
}

// Acquire counts a delivery in; false once the session is detached.
func (s *Session) Acquire() bool {
	s.activeMu.Lock()
	defer s.activeMu.Unlock()
	if s.detached {
		return false
	}
	s.active++
	return true
}

// Release counts a delivery Acquire counted in out.
func (s *Session) Release() {
	s.activeMu.Lock()
	defer s.activeMu.Unlock()
	s.active--
	if s.detached && s.active == 0 {
		closeOnce(s.idle)
	}
}

// Detach makes Acquire refuse: the session takes no new deliveries.
func (s *Session) Detach() {
	s.activeMu.Lock()
	defer s.activeMu.Unlock()
	s.detached = true
	if s.active == 0 {
		closeOnce(s.idle)
	}
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

// Drain detaches the session, waits (bounded by ctx) until its in-flight
// deliveries are finished, then closes the stream. It returns ctx's error
// if deliveries were still in flight; those fail with ErrBroken when the
// stream closes.
func (s *Session) Drain(ctx context.Context) error {
	s.Detach()
	var err error
	select {
	case <-s.idle:
	case <-s.broken:
	case <-ctx.Done():
		err = fmt.Errorf("draining %s: %w", s.name, ctx.Err())
	}
	s.Close()
	return err
}

// Close ends the stream at once; deliveries still waiting fail with
// ErrBroken. It is idempotent.
func (s *Session) Close() {
	closeOnce(s.done)
	<-s.sent
	s.sendMu.Lock()
	_ = s.stream.CloseSend()
	s.sendMu.Unlock()
	s.cancel()
	<-s.recv
	<-s.swept
}

// receive routes results to waiting deliveries until the stream ends.
func (s *Session) receive() {
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			s.mu.Lock()
			s.err = err
			for _, p := range s.pending {
				close(p.ch)
			}
			s.pending = nil // Deliver sees the stream is gone
			s.mu.Unlock()
			close(s.broken)
			return
		}
		if res := resp.GetResult(); res != nil {
			s.route(res)
		}
		for _, res := range resp.GetResults().GetResults() {
			s.route(res)
		}
	}
}

// route hands a result to the delivery waiting for it.
func (s *Session) route(res *pluginv1.Result) {
	s.mu.Lock()
	p, ok := s.pending[res.GetDeliveryId()]
	delete(s.pending, res.GetDeliveryId())
	s.mu.Unlock()
	if !ok {
		s.unknown.Inc()
		return
	}
	p.ch <- res
	select {
	case s.answered <- struct{}{}:
	default:
	}
}

// linger: with few deliveries queued while others are in flight, wait (at
// most lingerMax) for the next result first, so the deliveries it frees
// leave in the same message.
func (s *Session) linger() {
	s.qmu.Lock()
	q := len(s.queue)
	s.qmu.Unlock()
	if q >= lingerMin || len(s.slots) <= q {
		return
	}
	select { // a result that came before this send counts
	case <-s.answered:
	default:
	}
	t := time.NewTimer(lingerMax)
	defer t.Stop()
	select {
	case <-s.answered:
		runtime.Gosched()
	case <-t.C:
	case <-s.done:
	}
}

// outgoing is an encoded Delivery waiting to be sent.
type outgoing struct {
	id   string
	wire wireDelivery
}

// enqueue hands o to the sender goroutine.
func (s *Session) enqueue(o outgoing) {
	s.qmu.Lock()
	if s.queue == nil {
		s.queue, s.spare = s.spare, nil
	}
	s.queue = append(s.queue, o)
	s.qmu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default: // the sender is already due to run
	}
}

// sendLoop sends queued deliveries until Close: everything queued at once
// goes as one DeliveryBatch to plugins that take them (bounded by
// maxBatchBytes), else one message each. A failed send fails its deliveries
// at once; the stream is broken and the receive loop fails the rest.
func (s *Session) sendLoop() {
	var batch []wireDelivery
	for {
		select {
		case <-s.kick:
		case <-s.done:
			return
		}
		// Let workers that are runnable right now enqueue too, so their
		// deliveries share this message. This never waits on a timer.
		runtime.Gosched()
		s.linger()
		s.qmu.Lock()
		all := s.queue
		s.queue = nil
		s.qmu.Unlock()
		queued := all
		for len(queued) > 0 {
			n, size := 1, queued[0].wire.size()
			if s.batches {
				for n < len(queued) && size+queued[n].wire.size() <= maxBatchBytes {
					size += queued[n].wire.size()
					n++
				}
			}
			batch = batch[:0]
			for _, o := range queued[:n] {
				batch = append(batch, o.wire)
			}
			s.sendMu.Lock()
			err := s.stream.SendMsg(request(batch))
			s.sendMu.Unlock()
			if err != nil {
				for _, o := range queued[:n] {
					s.fail(o)
				}
			}
			queued = queued[n:]
		}
		clear(all)
		s.qmu.Lock()
		s.spare = all[:0]
		s.qmu.Unlock()
	}
}

// fail ends a delivery whose send failed, unless a result or the receive
// loop's failure got there first.
func (s *Session) fail(o outgoing) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pending[o.id]; ok { // ids are never reused
		delete(s.pending, o.id)
		close(p.ch)
	}
}

// Deliver sends the event (its bus payload, which must not be modified
// afterwards: it goes out without a copy) and waits for its result until
// the deadline. The error is ErrTimeout or ErrBroken, or says the delivery
// could not be encoded. ctx carries the trace to continue; it does not cut
// the wait short.
func (s *Session) Deliver(ctx context.Context, attempt int, payload []byte) (*pluginv1.Result, error) {
	start := time.Now()
	deadline := start.Add(s.deadline)
	// The manifest's max_in_flight bounds what the instance holds at once;
	// waiting for a slot counts against the deadline.
	select {
	case s.slots <- struct{}{}:
	default:
		if err := s.waitSlot(deadline); err != nil {
			return nil, err
		}
	}
	defer func() { <-s.slots }()
	id := s.name + "-" + strconv.FormatUint(seq.Add(1), 36)
	var tc map[string]string
	if trace.SpanContextFromContext(ctx).IsValid() {
		tc = telemetry.Inject(ctx, nil)
	}
	// The event goes out as the bus stored it (see wire.go).
	wire, err := encodeDelivery(id, uint32(attempt), deadline, tc, payload)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.pending == nil {
		s.mu.Unlock()
		return nil, ErrBroken
	}
	ch := resultChans.Get().(chan *pluginv1.Result)
	s.pending[id] = pendingResult{ch: ch, deadline: deadline}
	s.mu.Unlock()
	s.inFlight.Inc()
	defer s.inFlight.Dec()
	s.enqueue(outgoing{id: id, wire: wire})
	r, ok := <-ch // answered by the result, the expiry loop or the stream's end
	if !ok {
		return nil, ErrBroken
	}
	resultChans.Put(ch)
	if r == nil {
		return nil, ErrTimeout
	}
	s.latency.Observe(time.Since(start).Seconds())
	return r, nil
}

// resultChans recycles Deliver's result channels. A channel goes back only
// once its one answer was received (a closed one never does), so a reused
// channel is always empty; a fresh one per delivery was a tenth of
// deliver's CPU with its garbage.
var resultChans = sync.Pool{New: func() any { return make(chan *pluginv1.Result, 1) }}

// waitSlot waits for a free slot until deadline.
func (s *Session) waitSlot(deadline time.Time) error {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case s.slots <- struct{}{}:
		return nil
	case <-s.broken:
		return ErrBroken
	case <-timer.C:
		return ErrTimeout
	}
}

// Ack tells the plugin which of a result's actions were refused. The
// contract sends one only when some were, best effort (a stream already
// closed loses it): plugins never wait for an ack.
func (s *Session) Ack(id string, refused []*pluginv1.RefusedAction) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	_ = s.stream.Send(&pluginv1.HandleRequest{Kind: &pluginv1.HandleRequest_ResultAck{ResultAck: &pluginv1.ResultAck{DeliveryId: id, Refused: refused}}})
}
