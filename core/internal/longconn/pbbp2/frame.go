// Package pbbp2 encodes and decodes the frames of Lark's long-connection
// (WebSocket) protocol: one proto2 message per binary WebSocket message
// (docs/lark-facts.md#pbbp2-frames):
//
//	message Header { required string key = 1; required string value = 2; }
//	message Frame {
//	  required uint64 SeqID = 1;   required uint64 LogID = 2;
//	  required int32  service = 3; required int32  method = 4;
//	  repeated Header headers = 5;
//	  optional string payload_encoding = 6; optional string payload_type = 7;
//	  optional bytes  payload = 8;          optional string LogIDNew = 9; }
//
// The codec is written by hand on protowire: the schema is tiny and frozen,
// and no generated code (nor the gogo runtime Lark's SDK uses) is needed.
// Encode writes the bytes Lark's gogo-generated code writes — every field in
// number order, required fields and the optional strings always, payload
// only when non-nil — so a frame round-trips byte for byte. Decode is as
// strict as that code: required fields must be present, a known field with
// the wrong wire type is an error, unknown fields are skipped.
//
// Both the client (core/internal/longconn) and the Lark emulator
// (core/larkemu) use this package; its tests check it against the official
// protobuf runtime (dynamicpb) so the two cannot share a silent mistake.
package pbbp2

import (
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// Frame methods.
const (
	MethodControl int32 = 0 // ping, pong
	MethodData    int32 = 1 // event, card, and their acks
)

// Header keys (Lark SDK ws/const.go).
const (
	HeaderType       = "type"        // event, card, ping, pong
	HeaderMessageID  = "message_id"  // shared by a message's fragments
	HeaderSum        = "sum"         // number of fragments (1 when unsplit)
	HeaderSeq        = "seq"         // fragment index, from 0
	HeaderTraceID    = "trace_id"    // Lark's trace id
	HeaderTimestamp  = "timestamp"   // send time, Unix ms
	HeaderInstanceID = "instance_id" // Lark instance that sent the frame
	HeaderBizRT      = "biz_rt"      // handling time in ms, added to acks
)

// Values of the type header.
const (
	TypeEvent = "event"
	TypeCard  = "card"
	TypePing  = "ping"
	TypePong  = "pong"
)

// ErrMalformed classes bytes that are not a valid frame.
var ErrMalformed = errors.New("malformed pbbp2 frame")

// Header is one key/value pair of a frame.
type Header struct {
	Key   string
	Value string
}

// Frame is one protocol message.
type Frame struct {
	SeqID           uint64
	LogID           uint64
	Service         int32
	Method          int32
	Headers         []Header
	PayloadEncoding string
	PayloadType     string
	// Payload is nil when the field is absent. Decode makes it alias the
	// input: do not reuse the input buffer while the frame is in use.
	Payload  []byte
	LogIDNew string
}

// Header returns the value of the first header named key, or "".
func (f *Frame) Header(key string) string {
	for _, h := range f.Headers {
		if h.Key == key {
			return h.Value
		}
	}
	return ""
}

// HeaderInt returns the first header named key as a decimal int, and
// whether it was present and well-formed.
func (f *Frame) HeaderInt(key string) (int, bool) {
	for _, h := range f.Headers {
		if h.Key == key {
			n, err := strconv.Atoi(h.Value)
			return n, err == nil
		}
	}
	return 0, false
}

// AddHeader appends a header.
func (f *Frame) AddHeader(key, value string) {
	f.Headers = append(f.Headers, Header{Key: key, Value: value})
}

// Field numbers.
const (
	fieldSeqID           = 1
	fieldLogID           = 2
	fieldService         = 3
	fieldMethod          = 4
	fieldHeaders         = 5
	fieldPayloadEncoding = 6
	fieldPayloadType     = 7
	fieldPayload         = 8
	fieldLogIDNew        = 9

	fieldHeaderKey   = 1
	fieldHeaderValue = 2
)

// Size returns the length of f's encoding.
func (f *Frame) Size() int {
	n := 4 + protowire.SizeVarint(f.SeqID) + protowire.SizeVarint(f.LogID) +
		protowire.SizeVarint(uint64(f.Service)) + protowire.SizeVarint(uint64(f.Method))
	for _, h := range f.Headers {
		n += 1 + protowire.SizeBytes(h.size())
	}
	n += 1 + protowire.SizeBytes(len(f.PayloadEncoding))
	n += 1 + protowire.SizeBytes(len(f.PayloadType))
	if f.Payload != nil {
		n += 1 + protowire.SizeBytes(len(f.Payload))
	}
	n += 1 + protowire.SizeBytes(len(f.LogIDNew))
	return n
}

func (h Header) size() int {
	return 2 + protowire.SizeBytes(len(h.Key)) + protowire.SizeBytes(len(h.Value))
}

// Encode returns f's wire encoding.
func Encode(f *Frame) []byte { return Append(make([]byte, 0, f.Size()), f) }

// Append appends f's wire encoding to b. int32 fields are sign-extended to
// ten bytes when negative, as proto2 requires.
func Append(b []byte, f *Frame) []byte {
	b = protowire.AppendTag(b, fieldSeqID, protowire.VarintType)
	b = protowire.AppendVarint(b, f.SeqID)
	b = protowire.AppendTag(b, fieldLogID, protowire.VarintType)
	b = protowire.AppendVarint(b, f.LogID)
	b = protowire.AppendTag(b, fieldService, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(f.Service))
	b = protowire.AppendTag(b, fieldMethod, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(f.Method))
	for _, h := range f.Headers {
		b = protowire.AppendTag(b, fieldHeaders, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(h.size()))
		b = protowire.AppendTag(b, fieldHeaderKey, protowire.BytesType)
		b = protowire.AppendString(b, h.Key)
		b = protowire.AppendTag(b, fieldHeaderValue, protowire.BytesType)
		b = protowire.AppendString(b, h.Value)
	}
	b = protowire.AppendTag(b, fieldPayloadEncoding, protowire.BytesType)
	b = protowire.AppendString(b, f.PayloadEncoding)
	b = protowire.AppendTag(b, fieldPayloadType, protowire.BytesType)
	b = protowire.AppendString(b, f.PayloadType)
	if f.Payload != nil {
		b = protowire.AppendTag(b, fieldPayload, protowire.BytesType)
		b = protowire.AppendBytes(b, f.Payload)
	}
	b = protowire.AppendTag(b, fieldLogIDNew, protowire.BytesType)
	b = protowire.AppendString(b, f.LogIDNew)
	return b
}

// Decode parses one frame. Errors wrap ErrMalformed and say what is wrong
// and at which offset. Payload aliases b.
func Decode(b []byte) (*Frame, error) {
	f := &Frame{}
	if err := f.decode(b); err != nil {
		return nil, err
	}
	return f, nil
}

func malformed(off int, format string, args ...any) error {
	return fmt.Errorf("%w: offset %d: %s", ErrMalformed, off, fmt.Sprintf(format, args...))
}

func (f *Frame) decode(b []byte) error {
	var seen uint8
	off := 0
	for off < len(b) {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return malformed(off, "bad tag: %v", protowire.ParseError(n))
		}
		at := off
		off += n
		switch num {
		case fieldSeqID, fieldLogID, fieldService, fieldMethod:
			if typ != protowire.VarintType {
				return malformed(at, "field %d has wire type %d, want varint", num, typ)
			}
			v, n := protowire.ConsumeVarint(b[off:])
			if n < 0 {
				return malformed(off, "field %d: %v", num, protowire.ParseError(n))
			}
			off += n
			seen |= 1 << (num - 1)
			switch num {
			case fieldSeqID:
				f.SeqID = v
			case fieldLogID:
				f.LogID = v
			case fieldService:
				f.Service = int32(v)
			case fieldMethod:
				f.Method = int32(v)
			}
		case fieldHeaders, fieldPayloadEncoding, fieldPayloadType, fieldPayload, fieldLogIDNew:
			if typ != protowire.BytesType {
				return malformed(at, "field %d has wire type %d, want bytes", num, typ)
			}
			v, n := protowire.ConsumeBytes(b[off:])
			if n < 0 {
				return malformed(off, "field %d: %v", num, protowire.ParseError(n))
			}
			switch num {
			case fieldHeaders:
				h, err := decodeHeader(v)
				if err != nil {
					return malformed(off, "header %d: %v", len(f.Headers), err)
				}
				if f.Headers == nil {
					f.Headers = make([]Header, 0, 8) // Lark sends 5–8
				}
				f.Headers = append(f.Headers, h)
			case fieldPayloadEncoding:
				f.PayloadEncoding = string(v)
			case fieldPayloadType:
				f.PayloadType = string(v)
			case fieldPayload:
				f.Payload = v[:len(v):len(v)]
			case fieldLogIDNew:
				f.LogIDNew = string(v)
			}
			off += n
		default:
			n := protowire.ConsumeFieldValue(num, typ, b[off:])
			if n < 0 {
				return malformed(off, "unknown field %d: %v", num, protowire.ParseError(n))
			}
			off += n
		}
	}
	for i, name := range [...]string{"SeqID", "LogID", "service", "method"} {
		if seen&(1<<i) == 0 {
			return fmt.Errorf("%w: required field %s missing", ErrMalformed, name)
		}
	}
	return nil
}

func decodeHeader(b []byte) (Header, error) {
	var h Header
	var seen uint8
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return h, fmt.Errorf("bad tag: %v", protowire.ParseError(n))
		}
		off += n
		if (num == fieldHeaderKey || num == fieldHeaderValue) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b[off:])
			if n < 0 {
				return h, fmt.Errorf("field %d: %v", num, protowire.ParseError(n))
			}
			off += n
			if num == fieldHeaderKey {
				h.Key = string(v)
			} else {
				h.Value = string(v)
			}
			seen |= 1 << (num - 1)
			continue
		}
		if num == fieldHeaderKey || num == fieldHeaderValue {
			return h, fmt.Errorf("field %d has wire type %d, want bytes", num, typ)
		}
		n = protowire.ConsumeFieldValue(num, typ, b[off:])
		if n < 0 {
			return h, fmt.Errorf("unknown field %d: %v", num, protowire.ParseError(n))
		}
		off += n
	}
	if seen&1 == 0 {
		return h, errors.New("required field key missing")
	}
	if seen&2 == 0 {
		return h, errors.New("required field value missing")
	}
	return h, nil
}
