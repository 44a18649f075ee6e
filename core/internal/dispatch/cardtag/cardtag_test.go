package cardtag

import (
	"strings"
	"testing"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

func TestTagCard(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"elements":[{"tag":"action","actions":[{"tag":"button","value":{"k":"v"}}]}]}`,
			`{"elements":[{"actions":[{"tag":"button","value":{"_larkway_plugin":"p","k":"v"}}],"tag":"action"}]}`},
		{`{"body":{"elements":[{"tag":"button","behaviors":[{"type":"callback","value":{"a":1}}]}]}}`,
			`{"body":{"elements":[{"behaviors":[{"type":"callback","value":{"_larkway_plugin":"p","a":1}}],"tag":"button"}]}}`},
		{`{"elements":[{"tag":"div","text":{"content":"no buttons"}}]}`, `{"elements":[{"tag":"div","text":{"content":"no buttons"}}]}`},
		{`not json`, `not json`},
		{`{"value":{"id":9007199254740993,"f":1.5e300}}`, `{"value":{"_larkway_plugin":"p","f":1.5e300,"id":9007199254740993}}`},
		{`{"value":"a string value is left alone"}`, `{"value":"a string value is left alone"}`},
	}
	for _, tt := range tests {
		if got := Card(tt.in, "p"); got != tt.want {
			t.Errorf("Card(%s)\n got %s\nwant %s", tt.in, got, tt.want)
		}
	}
}

func TestTagCardsDoesNotAlias(t *testing.T) {
	orig := []*pluginv1.Action{{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MsgType: "interactive", ContentJson: `{"value":{}}`}}}}
	out := Actions(orig, "p")
	if orig[0].GetReply().GetContentJson() != `{"value":{}}` || !strings.Contains(out[0].GetReply().GetContentJson(), "_larkway_plugin") {
		t.Fatalf("orig %v out %v", orig, out)
	}
}

// Owner reads back what Card wrote, and nothing from untagged or broken values.
func TestOwner(t *testing.T) {
	tests := []struct{ name, value, want string }{
		{"tagged", `{"_larkway_plugin":"approval","x":1}`, "approval"},
		{"untagged", `{"x":1}`, ""},
		{"empty", ``, ""},
		{"not JSON", `{"_larkway_plugin":`, ""},
		{"not a string", `{"_larkway_plugin":7}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Owner(tt.value); got != tt.want {
				t.Fatalf("Owner(%s) = %q, want %q", tt.value, got, tt.want)
			}
		})
	}
}

func FuzzTagCard(f *testing.F) {
	f.Add(`{"elements":[{"value":{"a":1}}]}`)
	f.Fuzz(func(t *testing.T, s string) {
		out := Card(s, "p")
		if out != s && !strings.Contains(out, Key) {
			t.Fatalf("changed without tagging: %q -> %q", s, out)
		}
	})
}
