package stream

import (
	"fmt"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// The bus payload already is the Event's protobuf encoding. Decoding it and
// encoding it again for every delivery was a fifth of the dispatcher's CPU,
// so deliveries are assembled from the payload bytes with protowire (the
// protobuf module's own wire-format package) and sent pre-encoded through
// wireCodec. Fields may appear in any order on the wire, and unknown fields
// written by a newer core pass through untouched.

// Field numbers from plugin.proto.
const (
	fieldRequestDelivery   protowire.Number = 1 // HandleRequest.delivery
	fieldRequestDeliveries protowire.Number = 3 // HandleRequest.deliveries
	fieldBatchDeliveries   protowire.Number = 1 // DeliveryBatch.deliveries
	fieldDeliveryID        protowire.Number = 1 // Delivery.delivery_id
	fieldDeliveryEvent     protowire.Number = 2 // Delivery.event
	fieldDeliveryAttempt   protowire.Number = 3 // Delivery.attempt
	fieldDeliveryDeadline  protowire.Number = 4 // Delivery.deadline
	fieldDeliveryTrace     protowire.Number = 5 // Delivery.trace_context
)

// maxBatchBytes bounds one DeliveryBatch message, well under gRPC's 4 MiB
// default receive limit; a larger delivery goes alone.
const maxBatchBytes = 1 << 20

// preEncoded is a HandleRequest already in wire form: small headers the
// dispatcher wrote, and the events' bus payloads themselves, not copied
// (gRPC copies them once, into its frames).
type preEncoded mem.BufferSlice

// wireCodec sends preEncoded as is and everything else as protobuf.
type wireCodec struct{ proto encoding.CodecV2 }

var handleCodec = grpc.ForceCodecV2(wireCodec{proto: encoding.GetCodecV2(grpcproto.Name)})

func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(preEncoded); ok {
		return mem.BufferSlice(p), nil
	}
	return c.proto.Marshal(v)
}

func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (c wireCodec) Name() string { return c.proto.Name() }

// wireDelivery is a Delivery in wire form: every field but the event, and
// the event's encoding. The event is the bus payload itself, which
// bus.Delivery promises is never reused.
type wireDelivery struct{ fields, event []byte }

// size is the encoded Delivery's length.
func (w wireDelivery) size() int {
	return len(w.fields) + protowire.SizeTag(fieldDeliveryEvent) + protowire.SizeBytes(len(w.event))
}

// encodeDelivery puts a Delivery's fields but its event in wire form beside
// event, the event's encoding. It writes them with protowire rather than
// building a Delivery and a Timestamp for proto.Marshal, which was a fifth
// of deliver's CPU; TestEncodeDeliveryMatchesMarshal holds the two equal.
// Like proto.Marshal it refuses strings that are not UTF-8, which would
// make the plugin refuse the whole message.
func encodeDelivery(id string, attempt uint32, deadline time.Time, tc map[string]string, event []byte) (wireDelivery, error) {
	size := 64 + len(id)
	for k, v := range tc {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return wireDelivery{}, fmt.Errorf("encoding delivery %s: trace context %q is not UTF-8", id, k)
		}
		size += 16 + len(k) + len(v)
	}
	if !utf8.ValidString(id) {
		return wireDelivery{}, fmt.Errorf("encoding delivery %q: id is not UTF-8", id)
	}
	b := make([]byte, 0, size)
	if id != "" {
		b = protowire.AppendTag(b, fieldDeliveryID, protowire.BytesType)
		b = protowire.AppendString(b, id)
	}
	if attempt != 0 {
		b = protowire.AppendTag(b, fieldDeliveryAttempt, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(attempt))
	}
	// google.protobuf.Timestamp: seconds = 1, nanos = 2, zeros omitted.
	secs, nanos := uint64(deadline.Unix()), uint64(deadline.Nanosecond())
	tsLen := 0
	if secs != 0 {
		tsLen += protowire.SizeTag(1) + protowire.SizeVarint(secs)
	}
	if nanos != 0 {
		tsLen += protowire.SizeTag(2) + protowire.SizeVarint(nanos)
	}
	b = protowire.AppendTag(b, fieldDeliveryDeadline, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(tsLen))
	if secs != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, secs)
	}
	if nanos != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, nanos)
	}
	for k, v := range tc { // map entries: key = 1, value = 2
		n := protowire.SizeTag(1) + protowire.SizeBytes(len(k)) + protowire.SizeTag(2) + protowire.SizeBytes(len(v))
		b = protowire.AppendTag(b, fieldDeliveryTrace, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, k)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, v)
	}
	return wireDelivery{fields: b, event: event}, nil
}

// appendDelivery appends, under tag num, everything of w but its event's
// bytes, which follow it on the wire.
func appendDelivery(b []byte, num protowire.Number, w wireDelivery) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(w.size()))
	b = append(b, w.fields...)
	b = protowire.AppendTag(b, fieldDeliveryEvent, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(len(w.event)))
}

// request wraps deliveries as a HandleRequest: one as its delivery, more
// as a DeliveryBatch.
func request(ds []wireDelivery) preEncoded {
	inner, heads := 0, 16
	for _, d := range ds {
		inner += protowire.SizeTag(fieldBatchDeliveries) + protowire.SizeBytes(d.size())
		heads += 2*protowire.SizeTag(1) + 2*protowire.SizeVarint(uint64(d.size())) + len(d.fields)
	}
	// One allocation for every header; the buffers below are slices of it,
	// so it must not grow (heads bounds it).
	b := make([]byte, 0, heads)
	out := make(preEncoded, 0, 2*len(ds))
	if len(ds) == 1 {
		b = appendDelivery(b, fieldRequestDelivery, ds[0])
		return append(out, mem.SliceBuffer(b), mem.SliceBuffer(ds[0].event))
	}
	b = protowire.AppendTag(b, fieldRequestDeliveries, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(inner))
	from := 0
	for _, d := range ds {
		b = appendDelivery(b, fieldBatchDeliveries, d)
		out = append(out, mem.SliceBuffer(b[from:len(b):len(b)]), mem.SliceBuffer(d.event))
		from = len(b)
	}
	return out
}
