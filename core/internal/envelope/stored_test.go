package envelope

import (
	"bytes"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// rawPayloads are the golden events ingest stores in the raw form (all but
// legacy card callbacks, which keep the protobuf form).
func rawPayloads(tb testing.TB) (names []string, payloads [][]byte) {
	tb.Helper()
	for _, in := range goldenPaths() {
		if strings.HasPrefix(filepath.Base(in), "card_action_legacy") {
			continue
		}
		ev, raw := normalizeGolden(tb, in)
		names = append(names, filepath.Base(in))
		payloads = append(payloads, EncodeRaw(nil, "cli_golden", raw, ev).Payload)
	}
	return names, payloads
}

// TestRawFormDecodesAsNormalized: an event stored as its body decodes to the
// Event ingest normalized (raw_json included), with the same key and head,
// in at most 1.1× the body; the protobuf form an older core stored still
// decodes to the same Event.
func TestRawFormDecodesAsNormalized(t *testing.T) {
	for _, in := range goldenPaths() {
		if strings.HasPrefix(filepath.Base(in), "card_action_legacy") {
			continue
		}
		t.Run(filepath.Base(in), func(t *testing.T) {
			want, raw := normalizeGolden(t, in)
			buf := make([]byte, 0, 16) // reused buffers must not matter
			m := EncodeRaw(buf, "cli_golden", raw, want)
			if m.Key != PartitionKey(want) {
				t.Errorf("key %q, want %q", m.Key, PartitionKey(want))
			}
			if m.Properties[PropEventID] != want.GetEventId() || m.Properties[PropEventType] != want.GetEventType() {
				t.Errorf("properties %v", m.Properties)
			}
			if limit := len(raw) * 11 / 10; len(m.Payload) > limit {
				t.Errorf("stored %d bytes for a %d-byte body (limit %d)", len(m.Payload), len(raw), limit)
			}
			old, err := Encode(want)
			if err != nil {
				t.Fatal(err)
			}
			for form, p := range map[string][]byte{"raw": m.Payload, "protobuf": old.Payload} {
				got, err := Decode(p)
				if err != nil {
					t.Fatalf("%s form: %v", form, err)
				}
				if !proto.Equal(want, got) {
					t.Errorf("%s form decodes to\n%s\nwant\n%s", form, prototext.Format(got), prototext.Format(want))
				}
				h, err := DecodeHead(p)
				if err != nil {
					t.Fatalf("%s form head: %v", form, err)
				}
				if h != headOf(want) {
					t.Errorf("%s form head %+v, want %+v", form, h, headOf(want))
				}
			}
			for form, p := range map[string][]byte{"raw": m.Payload, "protobuf": old.Payload} {
				h, wire, err := DecodeWire(p)
				if err != nil {
					t.Fatalf("%s form wire: %v", form, err)
				}
				got := &pluginv1.Event{}
				if err := proto.Unmarshal(wire, got); err != nil || !proto.Equal(got, want) || h != headOf(want) {
					t.Errorf("%s form: wire decodes to %v (%v), head %+v", form, got, err, h)
				}
			}
			// The Event must not alias the payload, which the bus may reuse.
			got, _ := Decode(m.Payload)
			clear(m.Payload)
			if !proto.Equal(got, want) {
				t.Error("the decoded Event shares the payload's memory")
			}
		})
	}
}

// DecodeWire decodes raw payloads with pooled storage and without copying
// the body: concurrent decodes of different events stay apart, and the wire
// bytes share no memory with the payload, which the bus may reuse once the
// delivery is acknowledged.
func TestDecodeWirePooledAndUnaliased(t *testing.T) {
	names, payloads := rawPayloads(t)
	want := make([][]byte, len(payloads))
	for i, p := range payloads {
		ev, err := Decode(p)
		if err != nil {
			t.Fatalf("%s: %v", names[i], err)
		}
		if want[i], err = proto.Marshal(ev); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for round := range 50 {
				i := (g + round) % len(payloads)
				p := bytes.Clone(payloads[i])
				_, wire, err := DecodeWire(p)
				if err != nil {
					t.Errorf("%s: %v", names[i], err)
					return
				}
				clear(p)
				got, wantEv := &pluginv1.Event{}, &pluginv1.Event{}
				if err := proto.Unmarshal(wire, got); err != nil || proto.Unmarshal(want[i], wantEv) != nil || !proto.Equal(got, wantEv) {
					t.Errorf("%s: wire after clearing the payload decodes to %v (%v)", names[i], got, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestRawFormRejects(t *testing.T) {
	_, ps := rawPayloads(t)
	good := ps[0]
	cases := map[string][]byte{
		"magic only":        {rawMagic},
		"unknown form":      {rawMagic, 0x7f, 0x00, '{', '}'},
		"truncated app id":  {rawMagic, rawFormNormalize, 0x09, 'c'},
		"not JSON":          append([]byte{rawMagic, rawFormNormalize, 0x01, 'c'}, "nope"...),
		"unknown schema":    append([]byte{rawMagic, rawFormNormalize, 0x01, 'c'}, `{"schema":"9.9"}`...),
		"truncated body":    good[:len(good)/2],
		"invalid UTF-8 raw": append([]byte{rawMagic, rawFormNormalize, 0x01, 'c'}, "{\"schema\":\"2.0\",\"x\":\"\xff\"}"...),
	}
	for name, p := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Decode(p); err == nil {
				t.Fatal("Decode accepted it")
			}
			checkHead(t, p)
			if _, _, err := DecodeWire(p); err == nil {
				t.Fatal("DecodeWire accepted it")
			}
		})
	}
}

// BenchmarkDecodeWire: what the dispatcher spends per delivery, per stored
// form (the raw form normalizes the body again).
func BenchmarkDecodeWire(b *testing.B) {
	_, raw := rawPayloads(b)
	old := goldenPayloads(b)
	for name, p := range map[string][]byte{"raw": raw[len(raw)-3], "protobuf": old[len(old)-3]} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := DecodeWire(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
