package pbbp2_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/larkway/larkway/core/internal/longconn/pbbp2"
)

func sampleFrame() *pbbp2.Frame {
	return &pbbp2.Frame{
		SeqID: 7, LogID: 1 << 40, Service: 33, Method: pbbp2.MethodData,
		Headers: []pbbp2.Header{
			{Key: pbbp2.HeaderType, Value: pbbp2.TypeEvent},
			{Key: pbbp2.HeaderMessageID, Value: "msg-1"},
			{Key: pbbp2.HeaderSum, Value: "1"},
			{Key: pbbp2.HeaderSeq, Value: "0"},
			{Key: pbbp2.HeaderTraceID, Value: "trace"},
		},
		PayloadEncoding: "", PayloadType: "",
		Payload:  []byte(`{"schema":"2.0","header":{"event_id":"e1","event_type":"im.message.receive_v1"}}`),
		LogIDNew: "log-new",
	}
}

// TestGoldenBytes pins the encoding to the bytes Lark's gogo-generated
// marshaller writes (every field in order; optional strings always; payload
// only when non-nil; negative int32 sign-extended).
func TestGoldenBytes(t *testing.T) {
	tests := []struct {
		name  string
		frame pbbp2.Frame
		want  []byte
	}{
		{
			name: "data frame",
			frame: pbbp2.Frame{SeqID: 1, LogID: 2, Service: 3, Method: 1,
				Headers: []pbbp2.Header{{Key: "type", Value: "event"}}, Payload: []byte("{}")},
			want: []byte{0x08, 0x01, 0x10, 0x02, 0x18, 0x03, 0x20, 0x01,
				0x2a, 0x0d, 0x0a, 0x04, 't', 'y', 'p', 'e', 0x12, 0x05, 'e', 'v', 'e', 'n', 't',
				0x32, 0x00, 0x3a, 0x00, 0x42, 0x02, '{', '}', 0x4a, 0x00},
		},
		{
			name:  "ping without payload, negative service",
			frame: pbbp2.Frame{Service: -1, Headers: []pbbp2.Header{{Key: "type", Value: "ping"}}},
			want: []byte{0x08, 0x00, 0x10, 0x00, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x20, 0x00,
				0x2a, 0x0c, 0x0a, 0x04, 't', 'y', 'p', 'e', 0x12, 0x04, 'p', 'i', 'n', 'g',
				0x32, 0x00, 0x3a, 0x00, 0x4a, 0x00},
		},
		{
			name:  "empty non-nil payload is written",
			frame: pbbp2.Frame{Payload: []byte{}},
			want:  []byte{0x08, 0x00, 0x10, 0x00, 0x18, 0x00, 0x20, 0x00, 0x32, 0x00, 0x3a, 0x00, 0x42, 0x00, 0x4a, 0x00},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := pbbp2.Encode(&tt.frame)
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("Encode:\n got % x\nwant % x", got, tt.want)
			}
			if n := tt.frame.Size(); n != len(got) {
				t.Errorf("Size = %d, encoding has %d bytes", n, len(got))
			}
			back, err := pbbp2.Decode(got)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*back, tt.frame) {
				t.Errorf("Decode(Encode(f)) = %+v, want %+v", *back, tt.frame)
			}
		})
	}
}

// frameDescriptor builds pbbp2.proto for the official protobuf runtime.
func frameDescriptor(t testing.TB) protoreflect.MessageDescriptor {
	t.Helper()
	req := descriptorpb.FieldDescriptorProto_LABEL_REQUIRED.Enum()
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	rep := descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	field := func(name string, num int32, label *descriptorpb.FieldDescriptorProto_Label, typ descriptorpb.FieldDescriptorProto_Type, msg string) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Label: label, Type: typ.Enum()}
		if msg != "" {
			f.TypeName = proto.String(msg)
		}
		return f
	}
	const (
		u64 = descriptorpb.FieldDescriptorProto_TYPE_UINT64
		i32 = descriptorpb.FieldDescriptorProto_TYPE_INT32
		str = descriptorpb.FieldDescriptorProto_TYPE_STRING
		byt = descriptorpb.FieldDescriptorProto_TYPE_BYTES
		msg = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
	)
	fdp := &descriptorpb.FileDescriptorProto{
		Name: proto.String("pbbp2.proto"), Package: proto.String("pbbp2"), Syntax: proto.String("proto2"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Header"), Field: []*descriptorpb.FieldDescriptorProto{
				field("key", 1, req, str, ""), field("value", 2, req, str, ""),
			}},
			{Name: proto.String("Frame"), Field: []*descriptorpb.FieldDescriptorProto{
				field("SeqID", 1, req, u64, ""), field("LogID", 2, req, u64, ""),
				field("service", 3, req, i32, ""), field("method", 4, req, i32, ""),
				field("headers", 5, rep, msg, ".pbbp2.Header"),
				field("payload_encoding", 6, opt, str, ""), field("payload_type", 7, opt, str, ""),
				field("payload", 8, opt, byt, ""), field("LogIDNew", 9, opt, str, ""),
			}},
		},
	}
	fd, err := protodesc.NewFile(fdp, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().ByName("Frame")
}

// TestAgainstProtobufRuntime checks the hand-written codec against the
// official runtime in both directions, so the client and the emulator
// (which share this codec) cannot agree on a wrong encoding.
func TestAgainstProtobufRuntime(t *testing.T) {
	md := frameDescriptor(t)
	fields := md.Fields()
	want := sampleFrame()
	want.Service = -5

	// Ours → official.
	dyn := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(pbbp2.Encode(want), dyn); err != nil {
		t.Fatalf("official runtime rejects our encoding: %v", err)
	}
	get := func(name protoreflect.Name) protoreflect.Value { return dyn.Get(fields.ByName(name)) }
	if get("SeqID").Uint() != want.SeqID || get("LogID").Uint() != want.LogID ||
		get("service").Int() != int64(want.Service) || get("method").Int() != int64(want.Method) ||
		get("LogIDNew").String() != want.LogIDNew || !bytes.Equal(get("payload").Bytes(), want.Payload) {
		t.Errorf("official runtime decoded %v", dyn)
	}
	hs := get("headers").List()
	if hs.Len() != len(want.Headers) {
		t.Fatalf("official runtime decoded %d headers, want %d", hs.Len(), len(want.Headers))
	}
	hmd := fields.ByName("headers").Message()
	for i := range hs.Len() {
		h := hs.Get(i).Message()
		if k, v := h.Get(hmd.Fields().ByName("key")).String(), h.Get(hmd.Fields().ByName("value")).String(); k != want.Headers[i].Key || v != want.Headers[i].Value {
			t.Errorf("header %d = %s:%s, want %+v", i, k, v, want.Headers[i])
		}
	}

	// Official → ours (it writes only the fields that are set).
	b, err := proto.Marshal(dyn)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pbbp2.Decode(b)
	if err != nil {
		t.Fatalf("Decode(official encoding): %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Decode(official) = %+v\nwant %+v", got, want)
	}

	// A frame with required fields missing is rejected by both.
	partial := dynamicpb.NewMessage(md)
	partial.Set(fields.ByName("SeqID"), protoreflect.ValueOfUint64(1))
	b, err = proto.MarshalOptions{AllowPartial: true}.Marshal(partial)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pbbp2.Decode(b); !errors.Is(err, pbbp2.ErrMalformed) {
		t.Errorf("Decode(frame without LogID/service/method) error = %v, want ErrMalformed", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	valid := pbbp2.Encode(sampleFrame())
	var (
		tag = func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
		cat = func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	)
	required := cat(tag(1, 0), []byte{1}, tag(2, 0), []byte{2}, tag(3, 0), []byte{3}, tag(4, 0), []byte{1})
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "required field SeqID missing"},
		{"garbage", []byte("hello, this is not protobuf"), ""},
		{"truncated", valid[:len(valid)-3], ""},
		{"truncated varint", []byte{0x08, 0x80}, "field 1"},
		{"field number zero", []byte{0x00, 0x01}, "bad tag"},
		{"end group at top level", cat(required, tag(20, protowire.EndGroupType)), "unknown field 20"},
		{"SeqID as bytes", cat(tag(1, protowire.BytesType), []byte{0}), "want varint"},
		{"payload as varint", cat(required, tag(8, protowire.VarintType), []byte{1}), "want bytes"},
		{"payload length beyond end", cat(required, tag(8, protowire.BytesType), []byte{0x10, 'x'}), "field 8"},
		{"huge payload length", cat(required, tag(8, protowire.BytesType), protowire.AppendVarint(nil, 1<<62)), "field 8"},
		{"header without value", cat(required, tag(5, protowire.BytesType), []byte{3}, tag(1, protowire.BytesType), []byte{1, 'k'}), "required field value missing"},
		{"header key as varint", cat(required, tag(5, protowire.BytesType), []byte{2}, tag(1, protowire.VarintType), []byte{1}), "want bytes"},
		{"header garbage", cat(required, tag(5, protowire.BytesType), []byte{2, 0xff, 0xff}), "header 0"},
		{"missing method", cat(tag(1, 0), []byte{1}, tag(2, 0), []byte{2}, tag(3, 0), []byte{3}), "required field method missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := pbbp2.Decode(tt.in)
			if err == nil {
				t.Fatalf("Decode(% x) = %+v, want an error", tt.in, f)
			}
			if !errors.Is(err, pbbp2.ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestDecodeSkipsUnknownFields(t *testing.T) {
	want := sampleFrame()
	b := pbbp2.Encode(want)
	b = protowire.AppendTag(b, 15, protowire.VarintType)
	b = protowire.AppendVarint(b, 99)
	b = protowire.AppendTag(b, 16, protowire.BytesType)
	b = protowire.AppendString(b, "future")
	b = protowire.AppendTag(b, 17, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 1)
	got, err := pbbp2.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestHeaders(t *testing.T) {
	f := sampleFrame()
	if got := f.Header(pbbp2.HeaderMessageID); got != "msg-1" {
		t.Errorf("Header(message_id) = %q", got)
	}
	if got := f.Header("absent"); got != "" {
		t.Errorf("Header(absent) = %q", got)
	}
	if n, ok := f.HeaderInt(pbbp2.HeaderSum); n != 1 || !ok {
		t.Errorf("HeaderInt(sum) = %d, %v", n, ok)
	}
	if _, ok := f.HeaderInt(pbbp2.HeaderType); ok {
		t.Error("HeaderInt(type) is ok for a non-number")
	}
	if _, ok := f.HeaderInt("absent"); ok {
		t.Error("HeaderInt(absent) is ok")
	}
	f.AddHeader(pbbp2.HeaderBizRT, "12")
	if got := f.Header(pbbp2.HeaderBizRT); got != "12" {
		t.Errorf("after AddHeader: %q", got)
	}
}

// FuzzDecodeFrame: Decode never panics, and what it accepts re-encodes to
// a frame that decodes to the same value.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(pbbp2.Encode(sampleFrame()))
	f.Add(pbbp2.Encode(&pbbp2.Frame{Service: -1, Headers: []pbbp2.Header{{Key: "type", Value: "ping"}}}))
	f.Add(pbbp2.Encode(&pbbp2.Frame{Payload: []byte{}}))
	f.Add([]byte{})
	f.Add([]byte("garbage"))
	f.Add([]byte{0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := pbbp2.Decode(b)
		if err != nil {
			if !errors.Is(err, pbbp2.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		enc := pbbp2.Encode(fr)
		if len(enc) != fr.Size() {
			t.Fatalf("Size %d, encoding %d bytes", fr.Size(), len(enc))
		}
		again, err := pbbp2.Decode(enc)
		if err != nil {
			t.Fatalf("re-encoding of an accepted frame is rejected: %v", err)
		}
		if !reflect.DeepEqual(fr, again) {
			t.Fatalf("round trip changed the frame:\n%+v\n%+v", fr, again)
		}
	})
}

func BenchmarkFrameDecode(b *testing.B) {
	in := pbbp2.Encode(sampleFrame())
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pbbp2.Decode(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFrameEncode(b *testing.B) {
	f := sampleFrame()
	buf := make([]byte, 0, f.Size())
	b.SetBytes(int64(f.Size()))
	b.ReportAllocs()
	for b.Loop() {
		buf = pbbp2.Append(buf[:0], f)
	}
}
