package envelope

import (
	"bytes"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/larkway/larkway/core/internal/bus"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// A bus payload comes in one of two forms:
//
//   - the Event's protobuf (Encode): what cores before the raw form stored,
//     and what is still stored for events not normalized from a Lark body
//     by Normalize (card callbacks, hand-built events);
//   - the raw form (EncodeRaw): rawMagic, rawFormNormalize, the app id
//     (varint length, bytes), then Lark's decrypted JSON verbatim. Decode
//     normalizes it again. The Event's protobuf repeats most of the body
//     (text, ids, the raw JSON itself): 1.8× the body where the raw form is
//     the body plus ~25 bytes.
//
// rawMagic cannot begin a protobuf message: a tag with field number 0 is
// invalid, so proto.Unmarshal refuses every payload the raw form produces,
// and the first byte tells the forms apart.
const (
	rawMagic         = 0x00
	rawFormNormalize = 0x01 // Normalize(appID, raw)
)

// EncodeRaw is EncodeTo for an event normalized from a Lark body: ev must
// be what Normalize(appID, raw) returned (Parse's Body.Event is the same).
// It stores raw alone and Decode normalizes it again, so the plugin
// receives the same Event either way (TestRawFormDecodesAsNormalized).
func EncodeRaw(buf []byte, appID string, raw []byte, ev *pluginv1.Event) bus.Message {
	b := append(buf[:0], rawMagic, rawFormNormalize)
	b = protowire.AppendString(b, appID)
	b = append(b, raw...)
	return bus.Message{
		Key:     PartitionKey(ev),
		Payload: b,
		// No dedup key: it is derived from the body, and nothing reads the
		// property (the event id and type are read by the dead-letter tools).
		Properties: map[string]string{
			PropEventType: ev.GetEventType(),
			PropEventID:   ev.GetEventId(),
		},
	}
}

// isRaw reports a payload in the raw form.
func isRaw(payload []byte) bool { return len(payload) > 0 && payload[0] == rawMagic }

// decodeRaw normalizes a raw-form payload.
func decodeRaw(payload []byte) (*pluginv1.Event, error) {
	appID, raw, err := splitRaw(payload)
	if err != nil {
		return nil, err
	}
	// A copy: the Event's RawJson is raw, and the delivery's payload may
	// be reused once it is acknowledged (proto.Unmarshal copies too).
	ev, err := Normalize(appID, bytes.Clone(raw))
	if err != nil {
		return nil, fmt.Errorf("decoding event: %w", err)
	}
	return ev, nil
}

// splitRaw returns a raw-form payload's app id and body; raw aliases payload.
func splitRaw(payload []byte) (appID string, raw []byte, err error) {
	if len(payload) < 2 || payload[1] != rawFormNormalize {
		return "", nil, fmt.Errorf("decoding event: %w: unknown stored form", ErrMalformed)
	}
	id, n := protowire.ConsumeBytes(payload[2:])
	if n < 0 {
		return "", nil, fmt.Errorf("decoding event: %w: truncated app id", ErrMalformed)
	}
	return string(id), payload[2+n:], nil
}

// headOfEvent is the Head of a decoded Event.
func headOfEvent(ev *pluginv1.Event) Head {
	return Head{EventID: ev.GetEventId(), EventType: ev.GetEventType(), DedupKey: ev.GetDedupKey(), ChatID: ev.GetChatId(),
		Text: ev.GetMessage().GetText(), Card: ev.GetCardAction() != nil, CardValueJSON: ev.GetCardAction().GetValueJson()}
}

// DecodeWire is DecodeHead that also returns the Event's protobuf, which
// the dispatcher sends to plugins as is: payload itself in the protobuf
// form, the re-normalized Event marshaled in the raw form (one JSON decode
// serves both).
func DecodeWire(payload []byte) (Head, []byte, error) {
	if !isRaw(payload) {
		h, err := DecodeHead(payload)
		return h, payload, err
	}
	appID, raw, err := splitRaw(payload)
	if err != nil {
		return Head{}, nil, err
	}
	// Neither a copy of raw nor fresh decode storage: the Event lives only
	// until it is marshaled, which copies raw into wire, and Parse's pooled
	// Body holds the decoded structs (together a third of DecodeWire's
	// bytes allocated, BenchmarkDecodeWire).
	p, err := Parse(appID, raw)
	if err != nil {
		return Head{}, nil, fmt.Errorf("decoding event: %w: %w", ErrMalformed, err)
	}
	defer p.Release()
	ev, err := p.Event()
	if err != nil {
		return Head{}, nil, fmt.Errorf("decoding event: %w", err)
	}
	wire, err := proto.Marshal(ev)
	if err != nil {
		return Head{}, nil, fmt.Errorf("encoding event %s: %w", ev.GetEventId(), err)
	}
	return headOfEvent(ev), wire, nil
}

// Wire is the Event's protobuf for a payload in either form (see DecodeWire).
func Wire(payload []byte) ([]byte, error) {
	if !isRaw(payload) {
		return payload, nil
	}
	_, wire, err := DecodeWire(payload)
	return wire, err
}
