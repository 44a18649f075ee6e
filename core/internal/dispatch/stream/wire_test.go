package stream

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/mem"

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
		b, err := encodeDelivery(d.GetDeliveryId(), d.GetAttempt(), d.GetDeadline().AsTime(), d.GetTraceContext(), payload)
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

// encodeDelivery writes what proto.Marshal writes for the same Delivery
// (map order aside), and refuses what it refuses.
func TestEncodeDeliveryMatchesMarshal(t *testing.T) {
	event := []byte{0x0a, 0x03, 'e', 'v', '1'} // Event{event_id: "ev1"}
	tests := []struct {
		name string
		d    *pluginv1.Delivery
	}{
		{"typical", &pluginv1.Delivery{DeliveryId: "echo-1a", Attempt: 1, Deadline: timestamppb.New(time.Date(2026, 11, 27, 1, 2, 3, 456, time.UTC))}},
		{"whole second, no trace", &pluginv1.Delivery{DeliveryId: "p-2", Attempt: 7, Deadline: timestamppb.New(time.Unix(1_800_000_000, 0))}},
		{"before 1970", &pluginv1.Delivery{DeliveryId: "p-3", Attempt: 1, Deadline: timestamppb.New(time.Unix(-5, 7))}},
		{"the epoch", &pluginv1.Delivery{DeliveryId: "p-4", Attempt: 300, Deadline: timestamppb.New(time.Unix(0, 0))}},
		{"empty id, zero attempt", &pluginv1.Delivery{Deadline: timestamppb.New(time.Unix(1, 1))}},
		{"trace context", &pluginv1.Delivery{DeliveryId: "p-5", Attempt: 2, Deadline: timestamppb.New(time.Unix(1_800_000_000, 999_999_999)),
			TraceContext: map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "", "": "v", "ключ": "значение"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := encodeDelivery(tt.d.GetDeliveryId(), tt.d.GetAttempt(), tt.d.GetDeadline().AsTime(), tt.d.GetTraceContext(), event)
			if err != nil {
				t.Fatal(err)
			}
			want, err := proto.Marshal(tt.d)
			if err != nil {
				t.Fatal(err)
			}
			if len(w.fields) != len(want) {
				t.Fatalf("%d bytes, proto.Marshal writes %d", len(w.fields), len(want))
			}
			got := &pluginv1.Delivery{}
			if err := proto.Unmarshal(w.fields, got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tt.d) {
				t.Fatalf("decoded %v, want %v", got, tt.d)
			}
		})
	}
	for name, d := range map[string]*pluginv1.Delivery{
		"id":          {DeliveryId: "p-\xff"},
		"trace key":   {DeliveryId: "p-1", TraceContext: map[string]string{"\xc3": "v"}},
		"trace value": {DeliveryId: "p-1", TraceContext: map[string]string{"k": "\xed\xa0\x80"}},
	} {
		if _, err := proto.Marshal(d); err == nil {
			t.Fatalf("%s: proto.Marshal accepts it; the case is wrong", name)
		}
		if _, err := encodeDelivery(d.GetDeliveryId(), 1, time.Unix(1, 0), d.GetTraceContext(), event); err == nil {
			t.Errorf("invalid UTF-8 in the %s was encoded", name)
		}
	}
}

// BenchmarkEncodeDelivery is the per-delivery wire encoding.
func BenchmarkEncodeDelivery(b *testing.B) {
	event := make([]byte, 600)
	deadline := time.Now().Add(10 * time.Second)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeDelivery("plugin-1a2b3c", 1, deadline, nil, event); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRequest wraps 16 encoded deliveries as one batched request.
func BenchmarkRequest(b *testing.B) {
	event := make([]byte, 600)
	ws := make([]wireDelivery, 16)
	for i := range ws {
		w, err := encodeDelivery(fmt.Sprintf("plugin-%d", i), 1, time.Now(), nil, event)
		if err != nil {
			b.Fatal(err)
		}
		ws[i] = w
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = request(ws)
	}
}
