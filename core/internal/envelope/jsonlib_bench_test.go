package envelope

// The envelope decode (Normalize) with encoding/json beside goccy/go-json
// and bytedance/sonic, on the golden payloads: Normalize itself runs with
// each library swapped in (withLib) as its one decode of the body, and
// beside them as shipped (the hand-written scanner, scan.go).
// TestJSONLibsGolden reports which libraries reproduce the golden files;
// the shipped decoder must (TestNormalizeGolden).

import (
	"bytes"
	stdjson "encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bytedance/sonic"
	gojson "github.com/goccy/go-json"
	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

type unmarshalFunc func([]byte, any) error

var jsonLibs = []struct {
	name string
	u    unmarshalFunc
}{
	{"encoding_json", stdjson.Unmarshal},
	{"goccy_go-json", gojson.Unmarshal},
	{"sonic_default", sonic.ConfigDefault.Unmarshal},
	{"sonic_std", sonic.ConfigStd.Unmarshal},
}

// withLib runs f with Normalize decoding through u alone: the union in
// one decode, contents by u too (the hand-written scanner off).
func withLib(u unmarshalFunc, f func()) {
	prevU, prevF, prevC := unmarshal, decodeFast, decodeContent
	unmarshal = u
	decodeFast = func(raw []byte, b *bodyJSON) bool { return u(raw, b) == nil }
	decodeContent = func(string, *contentJSON) bool { return false }
	defer func() { unmarshal, decodeFast, decodeContent = prevU, prevF, prevC }()
	f()
}

// goldenInputs are the golden schema 1.0/2.0 inputs (legacy cards have
// their own normalizer and are not part of the envelope decode compared).
func goldenInputs(tb testing.TB) map[string][]byte {
	tb.Helper()
	out := map[string][]byte{}
	for _, p := range goldenPaths() {
		name := strings.TrimSuffix(filepath.Base(p), ".json")
		if strings.HasPrefix(name, "card_action_legacy") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		out[name] = b
	}
	return out
}

// TestJSONLibsGolden compares each library's output with the golden files
// and with what Normalize gives as shipped.
func TestJSONLibsGolden(t *testing.T) {
	for name, raw := range goldenInputs(t) {
		want, err := Normalize("cli_golden", raw)
		if err != nil {
			t.Fatal(err)
		}
		golden, err := os.ReadFile("testdata/" + name + ".golden.json")
		if err != nil {
			t.Fatal(err)
		}
		for _, lib := range jsonLibs {
			var got *pluginv1.Event
			withLib(lib.u, func() { got, err = Normalize("cli_golden", raw) })
			switch {
			case err != nil:
				t.Logf("%s: %s fails: %v", lib.name, name, err)
			case lib.name == "encoding_json" && !proto.Equal(got, want):
				t.Errorf("%s: encoding/json and the shipped decoder disagree", name)
			case !bytes.Equal(canonical(t, got), golden):
				t.Logf("%s: %s differs from the golden file", lib.name, name)
			}
		}
	}
	// Malformed inputs must still be refused by each library.
	for _, lib := range jsonLibs {
		for _, bad := range []string{`{`, `[]`, `{"schema":"2.0","header":[]}`, `{"schema":"2.0","header":{"event_id":"e","event_type":"im.message.receive_v1"},"event":{"message":"x"}}`} {
			var err error
			withLib(lib.u, func() { _, err = Normalize("cli_golden", []byte(bad)) })
			if err == nil {
				t.Logf("%s accepts malformed %s", lib.name, bad)
			}
		}
	}
}

// BenchmarkNormalizeJSON decodes every golden 1.0/2.0 input per op.
func BenchmarkNormalizeJSON(b *testing.B) {
	inputs := goldenInputs(b)
	b.Run("shipped_scanner", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, raw := range inputs {
				if _, err := Normalize("cli_golden", raw); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	for _, lib := range jsonLibs {
		b.Run(lib.name, func(b *testing.B) {
			b.ReportAllocs()
			withLib(lib.u, func() {
				for b.Loop() {
					for _, raw := range inputs {
						if _, err := Normalize("cli_golden", raw); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		})
	}
}
