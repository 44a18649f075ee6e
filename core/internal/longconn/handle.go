package longconn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/longconn/pbbp2"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Ack status codes (HTTP-like, as the SDK sends them).
const (
	ackOK    = 200
	ackRetry = 500
)

// job is one complete data message waiting for a worker.
type job struct {
	cc       *conn
	frame    *pbbp2.Frame // the frame to ack (the last fragment, for a fragmented message)
	payload  []byte
	typ      string
	received time.Time
}

// ackPayload is the JSON carried by an ack frame. Data is base64 in JSON
// ([]byte) and null when absent: {"code":200,"headers":null,"data":null}.
type ackPayload struct {
	Code    int               `json:"code"`
	Headers map[string]string `json:"headers"`
	Data    []byte            `json:"data"`
}

// emptyCardResponse leaves the card unchanged and shows nothing.
var emptyCardResponse = []byte("{}")

// handle processes one job on a worker and acks it. It never panics.
func (c *Client) handle(ctx context.Context, j *job) {
	defer j.cc.inflight.Done()
	log := j.cc.log.With("type", j.typ, "message_id", j.frame.Header(pbbp2.HeaderMessageID),
		"trace_id", j.frame.Header(pbbp2.HeaderTraceID))
	if ctx.Err() != nil || j.cc.dead.Load() {
		log.Debug("connection gone before the frame was handled: leaving it for redelivery")
		return
	}
	code, data := c.process(ctx, log, j)
	c.ack(j, code, data)
}

// process turns a message into an ack code and data, recovering panics.
func (c *Client) process(ctx context.Context, log *slog.Logger, j *job) (code int, data []byte) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("panic while handling a frame; acking 500", "panic", r, "stack", string(debug.Stack()))
			code, data = ackRetry, nil
		}
	}()
	// Work already started finishes after ctx ends (bounded by its own
	// timeout), so it can be acked instead of redelivered.
	ctx = context.WithoutCancel(ctx)

	ev, err := c.normalize(j)
	if err != nil {
		log.Warn("cannot normalize the payload; acking 500", "bytes", len(j.payload), "err", err)
		return ackRetry, nil
	}
	log = log.With("event_id", ev.GetEventId(), "event_type", ev.GetEventType())
	isCard := j.typ == pbbp2.TypeCard || ev.GetEventType() == envelope.TypeCardAction ||
		ev.GetEventType() == envelope.TypeCardActionLegacy
	if isCard && c.cards != nil {
		return c.respondCard(ctx, log, ev)
	}
	if err := c.publish(ctx, ev); err != nil {
		log.Warn("event not stored; acking 500 so Lark redelivers", "err", err)
		return ackRetry, nil
	}
	if isCard {
		return ackOK, emptyCardResponse
	}
	return ackOK, nil
}

// normalize reads the payload as Lark event JSON; a type=card frame may also
// carry a legacy card callback body.
func (c *Client) normalize(j *job) (*pluginv1.Event, error) {
	ev, err := envelope.Normalize(c.cfg.AppID, j.payload)
	if err != nil && j.typ == pbbp2.TypeCard && errors.Is(err, envelope.ErrUnknownSchema) {
		return envelope.NormalizeLegacyCard(c.cfg.AppID, j.payload)
	}
	return ev, err
}

func (c *Client) publish(ctx context.Context, ev *pluginv1.Event) error {
	msg, err := envelope.Encode(ev)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.PublishTimeout)
	defer cancel()
	if err := c.pub.Publish(ctx, envelope.Topic(c.cfg.AppID), msg); err != nil {
		return fmt.Errorf("publishing event %s: %w", ev.GetEventId(), err)
	}
	return nil
}

func (c *Client) respondCard(ctx context.Context, log *slog.Logger, ev *pluginv1.Event) (int, []byte) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CardTimeout)
	defer cancel()
	resp, err := c.cards.Respond(ctx, ev)
	if err != nil {
		log.Warn("card responder failed; acking 500", "err", err)
		return ackRetry, nil
	}
	if len(resp) == 0 {
		return ackOK, emptyCardResponse
	}
	if !json.Valid(resp) {
		log.Error("card responder returned invalid JSON; acking 500", "bytes", len(resp))
		return ackRetry, nil
	}
	return ackOK, resp
}

// ack writes the frame back with biz_rt and the response payload, keeping
// SeqID, LogID, service, method and headers.
func (c *Client) ack(j *job, code int, data []byte) {
	payload, err := json.Marshal(ackPayload{Code: code, Data: data})
	if err != nil { // cannot happen: only ints and bytes
		j.cc.log.Error("encoding an ack", "err", err)
		return
	}
	f := *j.frame
	f.Headers = append(make([]pbbp2.Header, 0, len(j.frame.Headers)+1), j.frame.Headers...)
	f.AddHeader(pbbp2.HeaderBizRT, strconv.FormatInt(time.Since(j.received).Milliseconds(), 10))
	f.Payload = payload
	if err := j.cc.write(&f); err != nil {
		j.cc.log.Warn("ack not sent; Lark will redeliver", "code", code,
			"message_id", j.frame.Header(pbbp2.HeaderMessageID), "err", err)
	}
}
