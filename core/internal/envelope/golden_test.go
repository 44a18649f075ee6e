package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// goldenPaths are the raw Lark payloads in testdata.
func goldenPaths() []string {
	all, _ := filepath.Glob("testdata/*.json")
	var out []string
	for _, p := range all {
		if !strings.HasSuffix(p, ".golden.json") {
			out = append(out, p)
		}
	}
	return out
}

// normalizeGolden reads a golden input and normalizes it as ingest would
// (legacy card callbacks by their own path).
func normalizeGolden(tb testing.TB, path string) (*pluginv1.Event, []byte) {
	tb.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var ev *pluginv1.Event
	if strings.HasPrefix(filepath.Base(path), "card_action_legacy") {
		ev, err = NormalizeLegacyCard("cli_golden", raw)
	} else {
		ev, err = Normalize("cli_golden", raw)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return ev, raw
}

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

// Golden files: raw Lark payloads in testdata/NAME.json, the normalized
// envelope beside them in testdata/NAME.golden.json (raw_json omitted there;
// it is checked to be the input verbatim).
func TestNormalizeGolden(t *testing.T) {
	inputs := goldenPaths()
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".json")
		t.Run(name, func(t *testing.T) {
			ev, raw := normalizeGolden(t, in)
			if !bytes.Equal(ev.GetRawJson(), raw) {
				t.Fatal("raw_json is not the input verbatim")
			}
			got := canonical(t, ev)
			golden := strings.TrimSuffix(in, ".json") + ".golden.json"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("normalized envelope differs from %s:\n got: %s\nwant: %s", golden, got, want)
			}
			// The bus encoding round-trips.
			msg, err := Encode(ev)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Decode(msg.Payload)
			if err != nil || !proto.Equal(back, ev) {
				t.Fatalf("bus round trip: %v", err)
			}
			if msg.Key != PartitionKey(ev) || msg.Key == "" {
				t.Errorf("key %q", msg.Key)
			}
		})
	}
	if n := len(inputs); n < 10 {
		t.Fatalf("only %d golden inputs", n)
	}
}

// canonical renders ev without raw_json as indented JSON with sorted keys
// (protojson's own output is deliberately unstable).
func canonical(t *testing.T, ev *pluginv1.Event) []byte {
	t.Helper()
	c := proto.Clone(ev).(*pluginv1.Event)
	c.RawJson = nil
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	return append(out, '\n')
}

func TestNormalizeErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		want error
	}{
		{"not json", `{`, ErrMalformed},
		{"array", `[]`, ErrMalformed},
		{"no schema", `{"a":1}`, ErrUnknownSchema},
		{"schema 3", `{"schema":"3.0","header":{}}`, ErrUnknownSchema},
		{"missing event id", `{"schema":"2.0","header":{"event_type":"x"}}`, ErrMalformed},
		{"other app", `{"schema":"2.0","header":{"event_id":"e","event_type":"x","app_id":"cli_other"}}`, ErrMalformed},
		{"message without id", `{"schema":"2.0","header":{"event_id":"e","event_type":"im.message.receive_v1"},"event":{"message":{}}}`, ErrMalformed},
		{"text content not json", `{"schema":"2.0","header":{"event_id":"e","event_type":"im.message.receive_v1"},"event":{"message":{"message_id":"om","message_type":"text","content":"{"}}}`, ErrMalformed},
		{"event wrong type", `{"schema":"2.0","header":{"event_id":"e","event_type":"im.message.receive_v1"},"event":{"message":"x"}}`, ErrMalformed},
		{"v1 without uuid", `{"type":"event_callback","event":{"type":"message"}}`, ErrMalformed},
		{"header wrong type", `{"schema":"2.0","header":[]}`, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Normalize("cli_golden", []byte(tt.body))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := NormalizeLegacyCard("a", []byte(`{"action":{}}`)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("legacy card without message id: %v", err)
	}
}

func FuzzNormalize(f *testing.F) {
	inputs, _ := filepath.Glob("testdata/*.json")
	for _, in := range inputs {
		if b, err := os.ReadFile(in); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, norm := range []func(string, []byte) (*pluginv1.Event, error){Normalize, NormalizeLegacyCard} {
			ev, err := norm("cli_golden", raw)
			if err != nil {
				if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownSchema) {
					t.Fatalf("unclassed error: %v", err)
				}
				continue
			}
			if ev.GetEventId() == "" || ev.GetEventType() == "" || ev.GetDedupKey() == "" {
				t.Fatalf("accepted event without id, type or dedup key: %v", ev)
			}
			if _, err := Encode(ev); err != nil {
				t.Fatal(err)
			}
		}
	})
}
