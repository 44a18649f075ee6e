package dispatch

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/dedup"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/telemetry"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Session is one plugin instance's Handle stream and its pending deliveries.
type Session struct {
	d       *Dispatcher
	plugin  Plugin
	name    string
	matcher *matcher
	stream  pluginv1.PluginService_HandleClient
	cancel  context.CancelFunc
	recv    chan struct{} // closed when the receive loop ends
	swept   chan struct{} // closed when the expiry loop ends

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

	m sessionMetrics

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

// openSession opens the instance's Handle stream. The stream lives until
// Drain or Close, independent of ctx, so in-flight deliveries can finish on
// shutdown.
func (d *Dispatcher) openSession(ctx context.Context, p Plugin) (*Session, error) {
	m := p.Manifest()
	mt, err := newMatcher(m)
	if err != nil {
		return nil, fmt.Errorf("opening session for %s: %w", m.GetName(), err)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stream, err := p.Service().Handle(sctx, handleCodec)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("opening %s stream: %w: %w", m.GetName(), ErrStreamBroken, err)
	}
	s := &Session{d: d, plugin: p, name: m.GetName(), matcher: mt, stream: stream, cancel: cancel,
		recv: make(chan struct{}), swept: make(chan struct{}), pending: map[string]pendingResult{}, broken: make(chan struct{}), idle: make(chan struct{}),
		batches: m.GetAcceptsDeliveryBatches(), slots: make(chan struct{}, maxInFlight(m, d.cfg.MaxInFlight)), kick: make(chan struct{}, 1), answered: make(chan struct{}, 1), done: make(chan struct{}), sent: make(chan struct{}),
		m: d.metrics.forPlugin(m.GetName())}
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
	t := time.NewTicker(min(max(s.d.cfg.Deadline/20, time.Millisecond), 100*time.Millisecond))
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

// maxInFlight is the manifest's max_in_flight, else the core default (at
// least 1).
func maxInFlight(m *pluginv1.Manifest, core int) int {
	if n := int(m.GetMaxInFlight()); n > 0 {
		return n
	}
	return max(core, 1)
}

// Plugin is the instance behind the session.
func (s *Session) Plugin() Plugin { return s.plugin }

// Broken is closed when the stream fails (the process died or hung up).
func (s *Session) Broken() <-chan struct{} { return s.broken }

// Err is why the stream broke.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Active is the number of deliveries in flight on this session.
func (s *Session) Active() int {
	s.activeMu.Lock()
	defer s.activeMu.Unlock()
	return s.active
}

func (s *Session) acquire() bool {
	s.activeMu.Lock()
	defer s.activeMu.Unlock()
	if s.detached {
		return false
	}
	s.active++
	return true
}

func (s *Session) release() {
	s.activeMu.Lock()
	defer s.activeMu.Unlock()
	s.active--
	if s.detached && s.active == 0 {
		closeOnce(s.idle)
	}
}

func (s *Session) detach() {
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

// Drain waits (bounded by ctx) until a detached session's in-flight
// deliveries are finished, then closes the stream. It returns ctx's error if
// deliveries were still in flight; those are nacked by their workers when the
// stream closes, so nothing is lost.
func (s *Session) Drain(ctx context.Context) error {
	s.detach()
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

// Close ends the stream at once; deliveries still waiting are nacked.
// It is idempotent.
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
			s.pending = nil // deliver sees the stream is gone
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
		// A result for nothing we wait for (late after a timeout, or made
		// up): dropped, and counted.
		s.m.unknownResult.Inc()
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

// process handles one bus delivery end to end; exactly one of ack, nack or
// dead-letter happens.
func (s *Session) process(ctx context.Context, del *bus.Delivery) {
	d := s.d
	// Built only when something is logged: slog's With costs on every call.
	log := func() *slog.Logger { return s.logFor(del) }
	// Routing needs a few fields; the whole event is decoded only if the
	// result has a use for it (DecodeHead accepts exactly what Decode does).
	head, err := envelope.DecodeHead(del.Payload)
	if err != nil {
		s.deadLetter(del, "undecodable event: "+err.Error(), log())
		return
	}
	if only := del.Properties[PropOnlyPlugin]; (only != "" && only != s.name) || !s.matcher.match(&head) {
		_ = del.Ack()
		return
	}
	select {
	case <-s.broken:
		_ = del.Nack()
		return
	default:
	}
	// The trace continues from the webhook, through the bus. Without
	// tracing configured nothing is built: span options allocate per call.
	span := telemetry.NoSpan
	if d.tracing {
		ctx, span = d.cfg.Tracer.Start(telemetry.Extract(ctx, del.Properties), "dispatch.deliver",
			trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attribute.String("larkway.plugin", s.name),
				attribute.String("larkway.event_id", head.EventID), attribute.Int("larkway.attempt", del.Attempt)))
		defer span.End()
	}
	// Claim the event so neither a Lark re-push nor our own redelivery
	// produces a second result. The lease covers the delivery and its
	// actions; a holder that dies releases the event when it expires. No
	// context timeout here or in finish: the stores bound their own calls
	// (Redis client read/write timeouts), and a timer per call was a
	// measurable share of the dispatcher's CPU.
	state, lease, err := d.cfg.Dedup.Claim(context.WithoutCancel(ctx), s.name, dedupKey(&head), d.cfg.Deadline+d.cfg.ActionTimeout+time.Second)
	switch {
	case err != nil:
		log().Warn("dedup store unavailable; will redeliver", "err", err)
		_ = del.Nack()
		return
	case state == dedup.AlreadyDone:
		s.m.dedupDone.Inc()
		_ = del.Ack()
		return
	case state == dedup.Busy:
		s.m.dedupBusy.Inc()
		_ = del.Nack()
		return
	}
	res, outcome := s.deliver(ctx, del)
	if span.IsRecording() {
		span.SetAttributes(attribute.String("larkway.outcome", outcome+res.GetOutcome().String()))
	}
	finish := func(f func(context.Context, dedup.Lease) error) {
		if err := f(context.Background(), lease); err != nil {
			log().Warn("dedup store update failed", "err", err)
		}
	}
	release := func() { finish(d.cfg.Dedup.Release) }
	switch outcome {
	case "stream_error":
		release()
		_ = del.Nack()
		return
	case "timeout":
		release()
		s.retry(del, "deadline exceeded", log())
		return
	}
	switch res.GetOutcome() {
	case pluginv1.Outcome_OUTCOME_DONE:
		if cr := res.GetCardResponse(); cr.GetCardJson() != "" {
			cr.CardJson = tagCard(cr.GetCardJson(), s.name)
		}
		var ev *pluginv1.Event
		if len(res.GetActions()) > 0 || (head.Card && res.GetCardResponse() != nil) {
			if ev, err = envelope.Decode(del.Payload); err != nil { // DecodeHead accepted it: not expected
				release()
				s.deadLetter(del, "undecodable event: "+err.Error(), log())
				return
			}
		}
		actions := tagCards(s.answerCard(ctx, ev, res, del), s.name)
		// Actions run on a context that shutdown does not cut short: the
		// plugin has answered, and its reply must not be lost.
		actx, cancel := context.WithoutCancel(ctx), context.CancelFunc(func() {})
		if len(actions) > 0 { // no timer for a result with nothing to do
			actx, cancel = context.WithTimeout(actx, d.cfg.ActionTimeout)
		}
		aspan := telemetry.NoSpan
		if d.tracing {
			actx, aspan = d.cfg.Tracer.Start(actx, "action.execute", trace.WithSpanKind(trace.SpanKindClient),
				trace.WithAttributes(attribute.Int("larkway.actions", len(actions))))
		}
		refused, err := d.exec.Execute(actx, action.Request{Plugin: s.name, Allowed: s.plugin.Manifest().GetAllowedActions(),
			Event: ev, Actions: actions, Attempts: del.Attempt, FinalAttempt: del.Attempt >= d.cfg.MaxAttempts})
		if err != nil {
			aspan.RecordError(err)
		}
		aspan.End()
		cancel()
		if len(refused) > 0 {
			s.sendAck(res.GetDeliveryId(), refused)
		}
		if err != nil {
			release()
			s.m.actionRetry.Inc()
			s.retry(del, err.Error(), log())
			return
		}
		finish(func(c context.Context, l dedup.Lease) error { return d.cfg.Dedup.Done(c, l, d.cfg.DoneTTL) })
		s.m.done.Inc()
		_ = del.Ack()
	case pluginv1.Outcome_OUTCOME_RETRY:
		release()
		s.m.retry.Inc()
		s.retry(del, "plugin asked to retry: "+res.GetError(), log())
	default:
		// Released, not done: a replay from the dead letters must run again.
		release()
		s.m.failed.Inc()
		s.deadLetter(del, "plugin failed: "+res.GetError(), log())
	}
}

// logFor is the logger for one delivery's messages.
func (s *Session) logFor(del *bus.Delivery) *slog.Logger {
	return s.d.logger.With("plugin", s.name, "msg_id", del.ID, "attempt", del.Attempt)
}

// dedupKey is the event's dedup key, or its id for events without one.
func dedupKey(ev *envelope.Head) string {
	if k := ev.DedupKey; k != "" {
		return k
	}
	return ev.EventID
}

// deliver sends the event and waits for its result or the deadline.
// outcome is "" with a result, or "stream_error" / "timeout".
func (s *Session) deliver(ctx context.Context, del *bus.Delivery) (*pluginv1.Result, string) {
	d := s.d
	start := time.Now()
	deadline := start.Add(d.cfg.Deadline)
	// The manifest's max_in_flight bounds what the instance holds at once;
	// waiting for a slot counts against the deadline.
	select {
	case s.slots <- struct{}{}:
	default:
		if outcome := s.waitSlot(deadline); outcome != "" {
			return nil, outcome
		}
	}
	defer func() { <-s.slots }()
	id := s.name + "-" + strconv.FormatUint(d.seq.Add(1), 36)
	var tc map[string]string
	if trace.SpanContextFromContext(ctx).IsValid() {
		tc = telemetry.Inject(ctx, nil)
	}
	// The event goes out as the bus stored it (see wire.go).
	wire, err := encodeDelivery(id, uint32(del.Attempt), deadline, tc, del.Payload)
	if err != nil {
		s.m.streamError.Inc()
		return nil, "stream_error"
	}
	s.mu.Lock()
	if s.pending == nil {
		s.mu.Unlock()
		return nil, "stream_error"
	}
	ch := resultChans.Get().(chan *pluginv1.Result)
	s.pending[id] = pendingResult{ch: ch, deadline: deadline}
	s.mu.Unlock()
	s.m.inFlight.Inc()
	defer s.m.inFlight.Dec()
	s.enqueue(outgoing{id: id, wire: wire})
	r, ok := <-ch // answered by the result, the expiry loop or the stream's end
	if !ok {
		s.m.streamError.Inc()
		return nil, "stream_error"
	}
	resultChans.Put(ch)
	if r == nil {
		s.m.timeout.Inc()
		return nil, "timeout"
	}
	s.m.latency.Observe(time.Since(start).Seconds())
	return r, ""
}

// resultChans recycles deliver's result channels. A channel goes back only
// once its one answer was received (a closed one never does), so a reused
// channel is always empty; a fresh one per delivery was a tenth of
// deliver's CPU with its garbage.
var resultChans = sync.Pool{New: func() any { return make(chan *pluginv1.Result, 1) }}

// waitSlot waits for a free slot until deadline; it returns the outcome
// when none came.
func (s *Session) waitSlot(deadline time.Time) string {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case s.slots <- struct{}{}:
		return ""
	case <-s.broken:
		s.m.streamError.Inc()
		return "stream_error"
	case <-timer.C:
		s.m.timeout.Inc()
		return "timeout"
	}
}

func (s *Session) sendAck(id string, refused []*pluginv1.RefusedAction) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	_ = s.stream.Send(&pluginv1.HandleRequest{Kind: &pluginv1.HandleRequest_ResultAck{ResultAck: &pluginv1.ResultAck{DeliveryId: id, Refused: refused}}})
}

// retry nacks, or dead-letters once the attempts are used up.
func (s *Session) retry(del *bus.Delivery, reason string, log *slog.Logger) {
	if del.Attempt >= s.d.cfg.MaxAttempts {
		s.deadLetter(del, fmt.Sprintf("after %d attempts: %s", del.Attempt, reason), log)
		return
	}
	_ = del.Nack()
}

// deadLetter moves the message to the plugin's dead-letter topic with the
// reason, then acks it. If the dead-letter write fails the message is nacked
// instead, so it is never dropped.
func (s *Session) deadLetter(del *bus.Delivery, reason string, log *slog.Logger) {
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
	s.fallback(ctx, del, log)
}

// fallbackSender is implemented by executors that can send a plugin's
// fallback reply.
type fallbackSender interface {
	SendFallback(ctx context.Context, plugin string, ev *pluginv1.Event, text string) error
}

// fallback sends the manifest's fallback reply for a dead-lettered event,
// so the user hears something; its uuid is stable, so it is sent once.
func (s *Session) fallback(ctx context.Context, del *bus.Delivery, log *slog.Logger) {
	text := s.plugin.Manifest().GetFallbackReplyText()
	fs, ok := s.d.exec.(fallbackSender)
	if text == "" || !ok {
		return
	}
	ev, err := envelope.Decode(del.Payload)
	if err != nil {
		return
	}
	if err := fs.SendFallback(ctx, s.name, ev, text); err != nil {
		log.Warn("fallback reply failed", "err", err)
	}
}

// answerCard hands a card click's response to the callback still waiting
// for it. If none is (the budget ran out, or the click came again after a
// redelivery), a new card is applied with a delayed card update instead.
// It returns the actions to perform.
func (s *Session) answerCard(ctx context.Context, ev *pluginv1.Event, res *pluginv1.Result, del *bus.Delivery) []*pluginv1.Action {
	actions := res.GetActions()
	ca, cr := ev.GetCardAction(), res.GetCardResponse()
	if ca == nil || !ca.GetAwaitsResponse() || cr == nil {
		return actions
	}
	delivered := false
	if hub := s.d.cfg.Callbacks; hub != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		var err error
		delivered, err = hub.Deliver(cctx, ev.GetEventId(), cr)
		cancel()
		if err != nil {
			s.logFor(del).Warn("delivering card response", "err", err)
		}
	}
	if delivered || cr.GetCardJson() == "" {
		return actions
	}
	late := &pluginv1.Action{Kind: &pluginv1.Action_DelayedCardUpdate{DelayedCardUpdate: &pluginv1.DelayedCardUpdate{
		Token: ca.GetToken(), CardJson: cr.GetCardJson()}}}
	return append(append([]*pluginv1.Action(nil), actions...), late)
}
