package match

import (
	"strings"
	"testing"

	"github.com/larkway/larkway/core/internal/envelope"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

func TestCardClicksGoToTheirOwner(t *testing.T) {
	m, _ := New(&pluginv1.Manifest{Name: "approval", Subscriptions: []*pluginv1.Subscription{{EventTypes: []string{"card.action.trigger"}}}})
	click := func(value string) *envelope.Head {
		return &envelope.Head{EventType: "card.action.trigger", Card: true, CardValueJSON: value}
	}
	if !m.Match(click(`{"_larkway_plugin":"approval","x":1}`)) || !m.Match(click(`{"x":1}`)) || !m.Match(click(``)) {
		t.Fatal("own or untagged click not matched")
	}
	if m.Match(click(`{"_larkway_plugin":"other"}`)) {
		t.Fatal("another plugin's card click matched")
	}
}

// Any subscription may match; within one, every set field must, and a
// field's values are alternatives.
func TestMatch(t *testing.T) {
	msg := func(chat, text string) *envelope.Head {
		return &envelope.Head{EventType: "im.message.receive_v1", ChatID: chat, Text: text}
	}
	tests := []struct {
		name string
		subs []*pluginv1.Subscription
		ev   *envelope.Head
		want bool
	}{
		{"no subscriptions", nil, msg("oc_1", "hi"), false},
		{"event type", []*pluginv1.Subscription{{EventTypes: []string{"im.message.receive_v1"}}}, msg("oc_1", "hi"), true},
		{"other event type", []*pluginv1.Subscription{{EventTypes: []string{"card.action.trigger"}}}, msg("oc_1", "hi"), false},
		{"chat", []*pluginv1.Subscription{{ChatIds: []string{"oc_2", "oc_1"}}}, msg("oc_1", "hi"), true},
		{"other chat", []*pluginv1.Subscription{{ChatIds: []string{"oc_2"}}}, msg("oc_1", "hi"), false},
		{"command", []*pluginv1.Subscription{{Commands: []string{"/todo"}}}, msg("oc_1", "@bot /TODO buy milk"), true},
		{"other command", []*pluginv1.Subscription{{Commands: []string{"/todo"}}}, msg("oc_1", "/done"), false},
		{"not a command", []*pluginv1.Subscription{{Commands: []string{"/todo"}}}, msg("oc_1", "todo"), false},
		{"pattern", []*pluginv1.Subscription{{TextPatterns: []string{`^\d+$`, `hello`}}}, msg("oc_1", "say hello"), true},
		{"no pattern matches", []*pluginv1.Subscription{{TextPatterns: []string{`^\d+$`}}}, msg("oc_1", "12a"), false},
		{"every field must match", []*pluginv1.Subscription{{EventTypes: []string{"im.message.receive_v1"}, ChatIds: []string{"oc_2"}}}, msg("oc_1", "hi"), false},
		{"any subscription", []*pluginv1.Subscription{{ChatIds: []string{"oc_2"}}, {Commands: []string{"/hi"}}}, msg("oc_1", "/hi"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(&pluginv1.Manifest{Name: "p", Subscriptions: tt.subs})
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Match(tt.ev); got != tt.want {
				t.Fatalf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewRejectsBadPatterns(t *testing.T) {
	_, err := New(&pluginv1.Manifest{Name: "p", Subscriptions: []*pluginv1.Subscription{{}, {TextPatterns: []string{"("}}}})
	if err == nil || !strings.Contains(err.Error(), "subscription 1") {
		t.Fatalf("err = %v, want one naming subscription 1", err)
	}
}
