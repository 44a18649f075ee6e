package dispatch

import (
	"github.com/larkway/larkway/core/internal/envelope"
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
		if got := tagCard(tt.in, "p"); got != tt.want {
			t.Errorf("tagCard(%s)\n got %s\nwant %s", tt.in, got, tt.want)
		}
	}
}

func TestCardClicksGoToTheirOwner(t *testing.T) {
	m, _ := newMatcher(&pluginv1.Manifest{Name: "approval", Subscriptions: []*pluginv1.Subscription{{EventTypes: []string{"card.action.trigger"}}}})
	click := func(value string) *envelope.Head {
		return &envelope.Head{EventType: "card.action.trigger", Card: true, CardValueJSON: value}
	}
	if !m.match(click(`{"_larkway_plugin":"approval","x":1}`)) || !m.match(click(`{"x":1}`)) || !m.match(click(``)) {
		t.Fatal("own or untagged click not matched")
	}
	if m.match(click(`{"_larkway_plugin":"other"}`)) {
		t.Fatal("another plugin's card click matched")
	}
}

func TestTagCardsDoesNotAlias(t *testing.T) {
	orig := []*pluginv1.Action{{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MsgType: "interactive", ContentJson: `{"value":{}}`}}}}
	out := tagCards(orig, "p")
	if orig[0].GetReply().GetContentJson() != `{"value":{}}` || !strings.Contains(out[0].GetReply().GetContentJson(), "_larkway_plugin") {
		t.Fatalf("orig %v out %v", orig, out)
	}
}

func FuzzTagCard(f *testing.F) {
	f.Add(`{"elements":[{"value":{"a":1}}]}`)
	f.Fuzz(func(t *testing.T, s string) {
		out := tagCard(s, "p")
		if out != s && !strings.Contains(out, CardTag) {
			t.Fatalf("changed without tagging: %q -> %q", s, out)
		}
	})
}
