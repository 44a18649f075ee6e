package envelope

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Head is what the dispatcher needs of a stored event to route it: whether
// a plugin's subscriptions match, and the key it is deduplicated on.
type Head struct {
	EventID, EventType, DedupKey, ChatID string
	// Text is the message's text (message events).
	Text string
	// Card is set for card callbacks; CardValueJSON is the clicked value.
	Card          bool
	CardValueJSON string
}

// Field numbers of the Event fields Head reads (plugin.proto).
const (
	fEventID    = 1
	fEventType  = 2
	fDedupKey   = 7
	fChatID     = 8
	fMessage    = 10
	fCardAction = 11
	fMsgText    = 9 // Message.text
	fCardValue  = 5 // CardAction.value_json
)

// eventSchema is Event's schema as walk reads it.
var eventSchema = newSchema((&pluginv1.Event{}).ProtoReflect().Descriptor(), map[protoreflect.FullName]*schema{})

// schema is a message's fields indexed by number, with what walk needs of
// each worked out once: asking the descriptors per field (ByNumber, Kind,
// IsPacked) was half of DecodeHead's CPU.
type schema struct {
	fields []fieldInfo // by number; known is false for numbers not declared
}

type fieldInfo struct {
	known bool
	wire  protowire.Type
	kind  protoreflect.Kind
	msg   *schema // for message fields
}

func newSchema(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*schema) *schema {
	if sc, ok := seen[md.FullName()]; ok {
		return sc
	}
	sc := &schema{}
	seen[md.FullName()] = sc // before the fields: a message may nest itself
	fds := md.Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		num := int(fd.Number())
		if num >= len(sc.fields) {
			sc.fields = append(sc.fields, make([]fieldInfo, num+1-len(sc.fields))...)
		}
		fi := fieldInfo{known: true, wire: wireType(fd), kind: fd.Kind()}
		if fd.Kind() == protoreflect.MessageKind {
			fi.msg = newSchema(fd.Message(), seen)
		}
		sc.fields[num] = fi
	}
	return sc
}

var errHead = errors.New("malformed event")

// DecodeHead reads an event's Head from a bus payload. It accepts exactly
// the payloads Decode accepts (it validates the whole message: wire format,
// and UTF-8 of every string field, walking the schema), but allocates only
// Head's strings: a full decode builds every nested message, and the
// dispatcher needs the whole event only when there are actions to run.
// protobuf-go has no public validate-without-decoding entry point, hence
// this walk; FuzzDecodeHead holds it to proto.Unmarshal.
//
// A payload in the raw form (EncodeRaw) is normalized in full: its Head is
// in the JSON.
func DecodeHead(payload []byte) (Head, error) {
	if isRaw(payload) {
		ev, err := decodeRaw(payload)
		if err != nil {
			return Head{}, err
		}
		return headOfEvent(ev), nil
	}
	var h Head
	if err := h.walk(payload, eventSchema, 0); err != nil {
		return Head{}, fmt.Errorf("decoding event: %w", err)
	}
	return h, nil
}

// Where walk is: the Event itself, or inside its Message or CardAction.
const (
	inEvent = iota
	inMessage
	inCard
	inOther
)

func (h *Head) walk(b []byte, sc *schema, at int) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num > protowire.MaxValidNumber {
			return errHead
		}
		b = b[n:]
		var fi fieldInfo
		if int(num) < len(sc.fields) {
			fi = sc.fields[num]
		}
		if !fi.known || typ != fi.wire {
			// Unknown to the schema, or not in its declared wire type:
			// protobuf keeps it as an unknown field without looking inside.
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return errHead
			}
			b = b[n:]
			continue
		}
		switch typ {
		case protowire.VarintType:
			_, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			_, n = protowire.ConsumeFixed32(b)
		case protowire.Fixed64Type:
			_, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			if n < 0 {
				return errHead
			}
			if err := h.field(&fi, num, v, at); err != nil {
				return err
			}
		default: // groups: Event declares none
			return errHead
		}
		if n < 0 {
			return errHead
		}
		b = b[n:]
	}
	return nil
}

// field checks one length-delimited field and keeps what Head needs.
func (h *Head) field(fi *fieldInfo, num protowire.Number, v []byte, at int) error {
	switch fi.kind {
	case protoreflect.StringKind:
		if !utf8.Valid(v) {
			return errHead
		}
		h.keep(num, v, at)
	case protoreflect.MessageKind:
		next := inOther
		if at == inEvent {
			switch num {
			case fMessage:
				next = inMessage
				if h.Card { // the oneof switches: the card it held is gone
					h.Card, h.CardValueJSON = false, ""
				}
			case fCardAction:
				next = inCard
				if !h.Card { // the oneof switches: the message it held is gone
					h.Text = ""
				}
				h.Card = true
			}
		}
		return h.walk(v, fi.msg, next)
	case protoreflect.BytesKind:
	default:
		// A packed repeated scalar: Event declares none; refuse rather than
		// guess what protobuf would accept.
		return errHead
	}
	return nil
}

// keep stores a string field Head reads; a repeated occurrence replaces the
// earlier one, as in protobuf.
func (h *Head) keep(num protowire.Number, v []byte, at int) {
	switch {
	case at == inEvent && num == fEventID:
		h.EventID = string(v)
	case at == inEvent && num == fEventType:
		h.EventType = string(v)
	case at == inEvent && num == fDedupKey:
		h.DedupKey = string(v)
	case at == inEvent && num == fChatID:
		h.ChatID = string(v)
	case at == inMessage && num == fMsgText:
		h.Text = string(v)
	case at == inCard && num == fCardValue:
		h.CardValueJSON = string(v)
	}
}

// wireType is the wire type a field is encoded in.
func wireType(fd protoreflect.FieldDescriptor) protowire.Type {
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		return protowire.BytesType
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	}
	if fd.IsPacked() {
		return protowire.BytesType
	}
	switch fd.Kind() {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	}
	return protowire.VarintType
}
