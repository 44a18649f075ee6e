// Package envelope turns Lark's event JSON (schema 1.0 and 2.0) into the
// contract's normalized Event, and carries Events over the bus.
package envelope

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/larkway/larkway/core/internal/bus"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// ErrUnknownSchema classes JSON that is neither a 1.0 nor a 2.0 event.
var ErrUnknownSchema = errors.New("unknown event schema")

// ErrMalformed classes an event whose fields do not have Lark's shapes.
var ErrMalformed = errors.New("malformed event")

// Topic is the bus topic holding one app's events.
func Topic(appID string) string { return "larkway-events-" + appID }

// Property names on bus messages.
const (
	PropEventType = "larkway-event-type"
	PropEventID   = "larkway-event-id"
	PropDedupKey  = "larkway-dedup-key"
)

// Encode wraps an Event as a bus message keyed by its partition key (chat id,
// else the sender's open id, else the event id) so one chat stays in order.
func Encode(ev *pluginv1.Event) (bus.Message, error) { return EncodeTo(nil, ev) }

// EncodeTo is Encode with the payload appended to buf[:0], so a caller may
// reuse its buffer once the bus no longer holds the message.
func EncodeTo(buf []byte, ev *pluginv1.Event) (bus.Message, error) {
	b, err := proto.MarshalOptions{}.MarshalAppend(buf[:0], ev)
	if err != nil {
		return bus.Message{}, fmt.Errorf("encoding event %s: %w", ev.GetEventId(), err)
	}
	return bus.Message{
		Key:     PartitionKey(ev),
		Payload: b,
		Properties: map[string]string{
			PropEventType: ev.GetEventType(),
			PropEventID:   ev.GetEventId(),
			PropDedupKey:  ev.GetDedupKey(),
		},
	}, nil
}

// Decode reads an Event from a bus message payload, in either stored form
// (see EncodeRaw).
func Decode(payload []byte) (*pluginv1.Event, error) {
	if isRaw(payload) {
		return decodeRaw(payload)
	}
	ev := &pluginv1.Event{}
	if err := proto.Unmarshal(payload, ev); err != nil {
		return nil, fmt.Errorf("decoding event: %w", err)
	}
	return ev, nil
}

// PartitionKey is the chat id, else the sender's open id, else the event id.
func PartitionKey(ev *pluginv1.Event) string {
	switch {
	case ev.GetChatId() != "":
		return ev.GetChatId()
	case ev.GetSender().GetOpenId() != "":
		return ev.GetSender().GetOpenId()
	default:
		return ev.GetEventId()
	}
}

// Probe is the part of any Lark body needed to route it before normalizing:
// url_verification, the verification token (1.0 top-level, 2.0 header), and
// the encrypted wrapper.
type Probe struct {
	Encrypt   string `json:"encrypt"`
	Type      string `json:"type"`
	Challenge string `json:"challenge"`
	Token     string `json:"token"`
	Schema    string `json:"schema"`
	Header    *struct {
		Token string `json:"token"`
	} `json:"header"`
}

// VerificationToken returns the token the body carries (2.0 header.token,
// else 1.0 top-level token).
func (p *Probe) VerificationToken() string {
	if p.Header != nil {
		return p.Header.Token
	}
	return p.Token
}

// IsChallenge reports a url_verification request.
func (p *Probe) IsChallenge() bool { return p.Type == "url_verification" }
