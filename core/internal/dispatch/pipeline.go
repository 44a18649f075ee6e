package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/dedup"
	"github.com/larkway/larkway/core/internal/dispatch/cardtag"
	"github.com/larkway/larkway/core/internal/dispatch/stream"
	"github.com/larkway/larkway/core/internal/dlq"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/telemetry"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// process takes one bus delivery through the pipeline
//
//	admit → claim → deliver → answer card → execute → settle
//
// Admit and claim settle what they stop themselves (not for this plugin,
// already handled, busy elsewhere); from deliver on, every step yields an
// Outcome and settle acts on it. Exactly one of ack, nack or dead-letter
// happens. What it reports is for a shadow's comparison.
func (s *Session) process(ctx context.Context, del *bus.Delivery) (res processed) {
	d := s.d
	// Routing needs a few fields; the whole event is decoded only if the
	// result has a use for it (DecodeHead accepts exactly what Decode does).
	// wire is the Event's protobuf for the plugin: the payload itself, or,
	// for an event stored as its Lark body, the body normalized again.
	head, wire, err := envelope.DecodeWire(del.Payload)
	if err != nil {
		s.deadLetter(del, "undecodable event: "+err.Error())
		return res
	}
	if !s.admit(del, &head) {
		return res
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
	lease, ok := s.claim(ctx, del, &head)
	if !ok {
		return res
	}
	start := time.Now()
	result, via, out := s.deliverWire(ctx, del, wire)
	latency := time.Since(start)
	var actions []*pluginv1.Action
	if out == OutcomeDone {
		var ev *pluginv1.Event
		if ev, actions, err = s.answerCard(ctx, del, &head, result); err != nil {
			out = OutcomeFailed
		} else if err = s.execute(ctx, del, via, head.EventID, ev, result, actions); err != nil {
			out = OutcomeActionRetry
		}
	}
	s.observe(out, latency)
	s.settle(del, lease, span, out, result, err)
	return processed{delivered: true, out: out, actions: actions, version: s.Version()}
}

// processed is what a delivery came to, as a shadow compares it.
type processed struct {
	delivered bool // it reached the plugin (not skipped or deduplicated)
	out       Outcome
	actions   []*pluginv1.Action // performed, when out is done
	version   string
}

// admit reports whether the delivery is for this plugin and the session can
// take it; it acks an event that is not for the plugin (another's card, a
// replay for another plugin, no matching subscription) and nacks one the
// broken stream cannot take.
func (s *Session) admit(del *bus.Delivery, head *envelope.Head) bool {
	if only := del.Properties[dlq.PropOnlyPlugin]; (only != "" && only != s.name) || !s.matcher.Match(head) {
		_ = del.Ack()
		return false
	}
	select {
	case <-s.st.Broken():
		_ = del.Nack()
		return false
	default:
		return true
	}
}

// claim claims the event so neither a Lark re-push nor our own redelivery
// produces a second result. The lease covers the delivery and its actions;
// a holder that dies releases the event when it expires. It settles the
// delivery itself and reports false when the event is not to be delivered
// now. No context timeout here or in settle: the stores bound their own
// calls (Redis client read/write timeouts), and a timer per call was a
// measurable share of the dispatcher's CPU.
func (s *Session) claim(ctx context.Context, del *bus.Delivery, head *envelope.Head) (dedup.Lease, bool) {
	d := s.d
	state, lease, err := d.cfg.Dedup.Claim(context.WithoutCancel(ctx), s.name, dedupKey(head), d.cfg.Deadline+d.cfg.ActionTimeout+time.Second)
	switch {
	case err != nil:
		s.logFor(del).Warn("dedup store unavailable; will redeliver", "err", err)
		_ = del.Nack()
		return lease, false
	case state == dedup.AlreadyDone:
		s.r.m.dedupDone.Inc()
		_ = del.Ack()
		return lease, false
	case state == dedup.Busy:
		s.r.m.dedupBusy.Inc()
		_ = del.Nack()
		return lease, false
	}
	return lease, true
}

// dedupKey is the event's dedup key, or its id for events without one.
func dedupKey(ev *envelope.Head) string {
	if k := ev.DedupKey; k != "" {
		return k
	}
	return ev.EventID
}

// deliver sends the event to an instance (the chat's, when several serve)
// and classes what came back: the result's own outcome, or the stream's
// failure. It returns the instance stream that answered.
func (s *Session) deliver(ctx context.Context, del *bus.Delivery) (*pluginv1.Result, *stream.Session, Outcome) {
	wire, err := envelope.Wire(del.Payload)
	if err != nil { // the caller's DecodeHead accepted it: not expected
		return nil, nil, OutcomeStreamError
	}
	return s.deliverWire(ctx, del, wire)
}

// deliverWire is deliver with the Event's protobuf already at hand.
func (s *Session) deliverWire(ctx context.Context, del *bus.Delivery, wire []byte) (*pluginv1.Result, *stream.Session, Outcome) {
	res, via, err := s.st.Deliver(ctx, del.Key, del.Attempt, wire)
	switch {
	case err == nil:
	case errors.Is(err, stream.ErrTimeout):
		return nil, via, OutcomeTimeout
	default: // broken, or the delivery could not be encoded
		return nil, via, OutcomeStreamError
	}
	switch res.GetOutcome() {
	case pluginv1.Outcome_OUTCOME_DONE:
		return res, via, OutcomeDone
	case pluginv1.Outcome_OUTCOME_RETRY:
		return res, via, OutcomeRetry
	default:
		return res, via, OutcomeFailed
	}
}

// answerCard hands a card click's response to the callback still waiting
// for it. If none is (the budget ran out, or the click came again after a
// redelivery), a new card is applied with a delayed card update instead.
// It returns the event (decoded only when the result has a use for it) and
// the actions to perform, cards tagged with the plugin's name; an error
// only if the event does not decode.
func (s *Session) answerCard(ctx context.Context, del *bus.Delivery, head *envelope.Head, res *pluginv1.Result) (*pluginv1.Event, []*pluginv1.Action, error) {
	if cr := res.GetCardResponse(); cr.GetCardJson() != "" {
		cr.CardJson = cardtag.Card(cr.GetCardJson(), s.name)
	}
	var ev *pluginv1.Event
	if len(res.GetActions()) > 0 || (head.Card && res.GetCardResponse() != nil) {
		var err error
		if ev, err = envelope.Decode(del.Payload); err != nil { // DecodeHead accepted it: not expected
			return nil, nil, fmt.Errorf("undecodable event: %w", err)
		}
	}
	actions := res.GetActions()
	if ca, cr := ev.GetCardAction(), res.GetCardResponse(); ca != nil && ca.GetAwaitsResponse() && cr != nil {
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
		if !delivered && cr.GetCardJson() != "" {
			late := &pluginv1.Action{Kind: &pluginv1.Action_DelayedCardUpdate{DelayedCardUpdate: &pluginv1.DelayedCardUpdate{
				Token: ca.GetToken(), CardJson: cr.GetCardJson()}}}
			actions = append(append([]*pluginv1.Action(nil), actions...), late)
		}
	}
	return ev, cardtag.Actions(actions, s.name), nil
}

// execute performs the result's actions and, only if some were refused,
// logs them and tells the plugin with a ResultAck (a result whose actions
// were all performed gets none; plugins must not wait for one). Actions run
// on a context that shutdown does not cut short: the plugin has answered,
// and its reply must not be lost.
func (s *Session) execute(ctx context.Context, del *bus.Delivery, via *stream.Session, eventID string, ev *pluginv1.Event, res *pluginv1.Result, actions []*pluginv1.Action) error {
	d := s.d
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
		EventID: eventID, Event: ev, Actions: actions, Attempts: del.Attempt, FinalAttempt: del.Attempt >= d.cfg.MaxAttempts})
	if err != nil {
		aspan.RecordError(err)
	}
	aspan.End()
	cancel()
	if len(refused) > 0 {
		s.logRefused(del, ev, res.GetDeliveryId(), actions, refused)
		via.Ack(res.GetDeliveryId(), refused)
	}
	return err
}

// settle ends a delivery by its outcome: counts it, finishes its dedup
// claim (done, or released so a redelivery or a replay runs again) and
// acks, redelivers or dead-letters the event. err is the step's that
// failed, if any.
func (s *Session) settle(del *bus.Delivery, lease dedup.Lease, span trace.Span, out Outcome, res *pluginv1.Result, err error) {
	d := s.d
	s.r.m.outcomes[out].Inc()
	if span.IsRecording() {
		span.SetAttributes(attribute.String("larkway.outcome", out.String()))
	}
	if out == OutcomeDone {
		s.finishClaim(del, d.cfg.Dedup.Done(context.Background(), lease, d.cfg.DoneTTL))
		_ = del.Ack()
		return
	}
	s.finishClaim(del, d.cfg.Dedup.Release(context.Background(), lease))
	switch out {
	case OutcomeStreamError: // the next instance takes it at once
		_ = del.Nack()
	case OutcomeFailed:
		s.deadLetter(del, reason(out, res, err))
	default:
		s.retry(del, reason(out, res, err), s.retryWait(out, res, del.Attempt))
	}
}

func (s *Session) finishClaim(del *bus.Delivery, err error) {
	if err != nil {
		s.logFor(del).Warn("dedup store update failed", "err", err)
	}
}

// reason says why a delivery that did not end done is retried or
// dead-lettered.
func reason(out Outcome, res *pluginv1.Result, err error) string {
	switch {
	case err != nil:
		return err.Error()
	case out == OutcomeTimeout:
		return "deadline exceeded"
	case out == OutcomeRetry:
		return "plugin asked to retry: " + res.GetError()
	default:
		return "plugin failed: " + res.GetError()
	}
}

// logFor is the logger for one delivery's messages. It is built only when
// something is logged: slog's With costs on every call.
func (s *Session) logFor(del *bus.Delivery) *slog.Logger {
	return s.d.logger.With("plugin", s.name, "msg_id", del.ID, "attempt", del.Attempt)
}

// retry redelivers the event wait after the bus's backoff, or dead-letters
// it once the attempts are used up.
func (s *Session) retry(del *bus.Delivery, reason string, wait time.Duration) {
	if del.Attempt >= s.d.cfg.MaxAttempts {
		s.deadLetter(del, fmt.Sprintf("after %d attempts: %s", del.Attempt, reason))
		return
	}
	s.r.holds.nackAfter(del, wait)
}

// deadLetter moves the message to the plugin's dead-letter topic with the
// reason, then acks it and sends the fallback reply. If the dead-letter
// write fails the message is nacked instead, so it is never dropped.
func (s *Session) deadLetter(del *bus.Delivery, reason string) {
	log := s.logFor(del)
	props := make(map[string]string, len(del.Properties)+1)
	for k, v := range del.Properties {
		props[k] = v
	}
	props[dlq.PropReason] = reason
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.d.bus.Publish(ctx, DeadLetterTopic(del.Topic, s.name), bus.Message{Key: del.Key, Payload: del.Payload, Properties: props}); err != nil {
		log.Error("dead-lettering failed; will redeliver", "err", err)
		_ = del.Nack()
		return
	}
	s.r.m.dead.Inc()
	s.vm.Load().dead.Inc()
	s.stats.dead.Add(1)
	log.Warn("event dead-lettered", "reason", reason)
	_ = del.Ack()
	s.fallback(ctx, del, log)
}

// fallback sends the manifest's fallback reply for a dead-lettered event,
// so the user hears something; its uuid is stable, so it is sent once.
func (s *Session) fallback(ctx context.Context, del *bus.Delivery, log *slog.Logger) {
	text := s.plugin.Manifest().GetFallbackReplyText()
	if text == "" {
		return
	}
	ev, err := envelope.Decode(del.Payload)
	if err != nil {
		return
	}
	if err := s.d.exec.SendFallback(ctx, s.name, ev, text); err != nil {
		log.Warn("fallback reply failed", "err", err)
	}
}
