package dispatch

import (
	"google.golang.org/grpc/mem"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Pre-encoded requests decode to exactly the messages proto.Marshal would
// have produced, single and batched.
func TestPreEncodedRequests(t *testing.T) {
	ev := &pluginv1.Event{EventId: "ev1", EventType: "im.message.receive_v1", ChatId: "oc_1", RawJson: []byte(`{"a":1}`),
		Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: "om_1", Text: "hi"}}}
	payload, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(id string) *pluginv1.Delivery {
		return &pluginv1.Delivery{DeliveryId: id, Attempt: 2, Deadline: timestamppb.New(timestamppb.Now().AsTime()),
			TraceContext: map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
	}
	enc := func(d *pluginv1.Delivery) wireDelivery {
		b, err := encodeDelivery(d, payload)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	withEvent := func(d *pluginv1.Delivery) *pluginv1.Delivery {
		d = proto.Clone(d).(*pluginv1.Delivery)
		d.Event = ev
		return d
	}
	d1, d2 := mk("a"), mk("b")
	tests := []struct {
		name string
		got  preEncoded
		want *pluginv1.HandleRequest
	}{
		{"single", request([]wireDelivery{enc(d1)}), &pluginv1.HandleRequest{Kind: &pluginv1.HandleRequest_Delivery{Delivery: withEvent(d1)}}},
		{"batch", request([]wireDelivery{enc(d1), enc(d2), enc(d1)}), &pluginv1.HandleRequest{Kind: &pluginv1.HandleRequest_Deliveries{
			Deliveries: &pluginv1.DeliveryBatch{Deliveries: []*pluginv1.Delivery{withEvent(d1), withEvent(d2), withEvent(d1)}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := &pluginv1.HandleRequest{}
			if err := proto.Unmarshal(mem.BufferSlice(tt.got).Materialize(), got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(tt.want, got) {
				t.Fatalf("decoded request\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}
