package envelope

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// goldenPayloads are the golden events as the bus stores them.
func goldenPayloads(tb testing.TB) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, in := range goldenPaths() {
		ev, _ := normalizeGolden(tb, in)
		m, err := Encode(ev)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, m.Payload)
	}
	return out
}

// headOf is the Head a fully decoded event gives.
func headOf(ev *pluginv1.Event) Head {
	return Head{EventID: ev.GetEventId(), EventType: ev.GetEventType(), DedupKey: ev.GetDedupKey(), ChatID: ev.GetChatId(),
		Text: ev.GetMessage().GetText(), Card: ev.GetCardAction() != nil, CardValueJSON: ev.GetCardAction().GetValueJson()}
}

// checkHead holds DecodeHead to Decode: the same payloads accepted, the same
// fields read.
func checkHead(t *testing.T, b []byte) {
	t.Helper()
	h, herr := DecodeHead(b)
	ev, err := Decode(b)
	if (herr == nil) != (err == nil) {
		t.Fatalf("DecodeHead error %v, Decode error %v, for %x", herr, err, b)
	}
	if err == nil && h != headOf(ev) {
		t.Fatalf("DecodeHead = %+v, Decode gives %+v, for %x", h, headOf(ev), b)
	}
	// DecodeWire, the dispatcher's entry point, agrees with both.
	hw, wire, werr := DecodeWire(b)
	if (werr == nil) != (err == nil) {
		t.Fatalf("DecodeWire error %v, Decode error %v, for %x", werr, err, b)
	}
	if err == nil {
		got := &pluginv1.Event{}
		if uerr := proto.Unmarshal(wire, got); uerr != nil || !proto.Equal(got, ev) || hw != h {
			t.Fatalf("DecodeWire's event %v (%v), head %+v; Decode gives %v, for %x", got, uerr, hw, ev, b)
		}
	}
}

func TestDecodeHead(t *testing.T) {
	for _, p := range goldenPayloads(t) {
		checkHead(t, p)
	}
	msg := func(b ...[]byte) []byte {
		var out []byte
		for _, x := range b {
			out = append(out, x...)
		}
		return out
	}
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
	}
	sub := func(num protowire.Number, b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), b)
	}
	cases := map[string][]byte{
		"empty":                    nil,
		"repeated scalar: last":    msg(str(fEventID, "a"), str(fEventID, "b")),
		"message merges":           msg(sub(fMessage, str(fMsgText, "t")), sub(fMessage, str(1, "m"))),
		"card replaces message":    msg(sub(fMessage, str(fMsgText, "t")), sub(fCardAction, str(fCardValue, "{}"))),
		"message replaces card":    msg(sub(fCardAction, str(fCardValue, "{}")), sub(fMessage, nil)),
		"invalid UTF-8 in text":    msg(sub(fMessage, str(fMsgText, "\xff"))),
		"invalid UTF-8 elsewhere":  msg(sub(fMessage, str(8, "\xc3"))),
		"invalid UTF-8 in unknown": msg(str(99, "\xff")),
		"wrong wire type":          msg(protowire.AppendVarint(protowire.AppendTag(nil, fEventID, protowire.VarintType), 7)),
		"truncated":                str(fEventID, "abc")[:3],
		"field zero":               {0x02, 0x00},
		"bad group":                {0x0b, 0x0c},
		"timestamp":                msg(sub(5, protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1700000000))),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) { checkHead(t, b) })
	}
}

func FuzzDecodeHead(f *testing.F) {
	for _, p := range goldenPayloads(f) {
		f.Add(p)
	}
	_, raw := rawPayloads(f)
	for _, p := range raw {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkHead(t, b) })
}

func BenchmarkDecode(b *testing.B) {
	p := goldenPayloads(b)[6]
	b.Run("full", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := proto.Unmarshal(p, &pluginv1.Event{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("head", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeHead(p); err != nil {
				b.Fatal(err)
			}
		}
	})
}
