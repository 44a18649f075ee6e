package envelope

import (
	stdjson "encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
)

// The golden inputs take the fast path: the scanner does not decline them.
func TestScanAcceptsGolden(t *testing.T) {
	for name, raw := range goldenInputs(t) {
		var b bodyJSON
		if !scanBody(raw, &b) {
			t.Errorf("%s: scanner declined", name)
			continue
		}
		if m := b.Event; m != nil && m.Message.Content != "" {
			var c contentJSON
			if !scanContent(m.Message.Content, &c) {
				t.Errorf("%s: scanner declined the content", name)
			}
		}
	}
}

func TestScanDeclines(t *testing.T) {
	for _, in := range []string{
		`{"Token":"vt"}`,                                           // encoding/json matches keys case-insensitively
		`{"token":"a","token":"b"}`,                                // repeated known key
		`{"to\u006ben":"vt"}`,                                      // escaped key
		`{"token":5}`,                                              // wrong type
		`{"x":01}`, `{"x":[1,]}`, `{"x":"\q"}`, "{\"x\":\"\x01\"}", // not JSON
		`{"a":1} x`, `[]`, `null`,
	} {
		var b bodyJSON
		if scanBody([]byte(in), &b) {
			t.Errorf("scanner accepted %s", in)
		}
	}
}

func FuzzScan(f *testing.F) {
	paths, _ := filepath.Glob("testdata/*.json")
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{`{"text":"a\ud800\u0041 \ud83d\ude00 \/"}`, `{"title":"t","content":[[{"tag":"at","user_name":"A"}],null,[]]}`,
		`{"schema":"2.0","header":null,"event":{"operator":{"operator_id":{"open_id":"o"}},"action":{"value":[1,{"a":null}],"form_value":null}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !utf8.Valid(raw) {
			return
		}
		var got bodyJSON
		if scanBody(raw, &got) {
			// Whatever the scanner accepts, encoding/json reads the same way,
			var want bodyJSON
			if err := stdjson.Unmarshal(raw, &want); err != nil {
				t.Fatalf("scanner accepted what encoding/json refuses: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("scanner and encoding/json disagree:\n%+v\n%+v", got, want)
			}
			// and normalizes as the multi-pass path does.
			ev, err := got.normalize("cli_golden", raw)
			slow, serr := normalizeSlow("cli_golden", raw)
			if (err == nil) != (serr == nil) || !proto.Equal(ev, slow) {
				t.Fatalf("fast and slow paths disagree: %v / %v\n%v\n%v", err, serr, ev, slow)
			}
		}
		var c contentJSON
		if scanContent(string(raw), &c) {
			var want contentJSON
			if err := stdjson.Unmarshal(raw, &want); err != nil {
				t.Fatalf("scanner accepted content encoding/json refuses: %v", err)
			}
			if !reflect.DeepEqual(c, want) {
				t.Fatalf("content: scanner and encoding/json disagree:\n%+v\n%+v", c, want)
			}
		}
	})
}
