package dispatch

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
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
	fieldDeliveryEvent     protowire.Number = 2 // Delivery.event
)

// maxBatchBytes bounds one DeliveryBatch message, well under gRPC's 4 MiB
// default receive limit; a larger delivery goes alone.
const maxBatchBytes = 1 << 20

// preEncoded is a HandleRequest already in wire form.
type preEncoded []byte

// wireCodec sends preEncoded as is and everything else as protobuf.
type wireCodec struct{ proto encoding.CodecV2 }

var handleCodec = grpc.ForceCodecV2(wireCodec{proto: encoding.GetCodecV2(grpcproto.Name)})

func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(preEncoded); ok {
		return mem.BufferSlice{mem.SliceBuffer(p)}, nil
	}
	return c.proto.Marshal(v)
}

func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (c wireCodec) Name() string { return c.proto.Name() }

// encodeDelivery returns a Delivery message's encoding with event as its
// (already encoded) Event.
func encodeDelivery(d *pluginv1.Delivery, event []byte) ([]byte, error) {
	b, err := proto.MarshalOptions{}.MarshalAppend(make([]byte, 0, 96+len(event)), d)
	if err != nil {
		return nil, fmt.Errorf("encoding delivery %s: %w", d.GetDeliveryId(), err)
	}
	b = protowire.AppendTag(b, fieldDeliveryEvent, protowire.BytesType)
	return protowire.AppendBytes(b, event), nil
}

// singleRequest wraps one encoded Delivery as a HandleRequest.
func singleRequest(delivery []byte) preEncoded {
	b := make([]byte, 0, len(delivery)+8)
	b = protowire.AppendTag(b, fieldRequestDelivery, protowire.BytesType)
	return protowire.AppendBytes(b, delivery)
}

// batchRequest wraps encoded Deliveries as one HandleRequest carrying a
// DeliveryBatch.
func batchRequest(deliveries [][]byte) preEncoded {
	inner := 0
	for _, d := range deliveries {
		inner += protowire.SizeTag(fieldBatchDeliveries) + protowire.SizeBytes(len(d))
	}
	b := make([]byte, 0, inner+8)
	b = protowire.AppendTag(b, fieldRequestDeliveries, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(inner))
	for _, d := range deliveries {
		b = protowire.AppendTag(b, fieldBatchDeliveries, protowire.BytesType)
		b = protowire.AppendBytes(b, d)
	}
	return b
}
