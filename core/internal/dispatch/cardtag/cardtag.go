// Package cardtag marks the cards a plugin sends with the plugin's name, so
// that a click on one is routed back to that plugin alone, and reads the
// mark back from a click.
package cardtag

import (
	"encoding/json"
	"strings"

	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Key is the key the core adds to the values of cards a plugin sends.
const Key = "_larkway_plugin"

// Owner reads the plugin's name from a clicked component's value ("" when
// untagged or not JSON).
func Owner(valueJSON string) string {
	if !strings.Contains(valueJSON, Key) {
		return ""
	}
	var v map[string]any
	if json.Unmarshal([]byte(valueJSON), &v) != nil {
		return ""
	}
	owner, _ := v[Key].(string)
	return owner
}

// Actions adds the plugin's Key to the value of every interactive
// component in the cards these actions send, so a click on them is routed
// back to this plugin alone. Cards whose JSON does not parse are left as
// they are (the executor reports them). The result does not alias actions.
func Actions(actions []*pluginv1.Action, plugin string) []*pluginv1.Action {
	out := make([]*pluginv1.Action, len(actions))
	for i, a := range actions {
		a = proto.Clone(a).(*pluginv1.Action)
		switch k := a.GetKind().(type) {
		case *pluginv1.Action_Send:
			if k.Send.GetMsgType() == "interactive" {
				k.Send.ContentJson = Card(k.Send.GetContentJson(), plugin)
			}
		case *pluginv1.Action_Reply:
			if k.Reply.GetMsgType() == "interactive" {
				k.Reply.ContentJson = Card(k.Reply.GetContentJson(), plugin)
			}
		case *pluginv1.Action_UpdateCard:
			k.UpdateCard.CardJson = Card(k.UpdateCard.GetCardJson(), plugin)
		case *pluginv1.Action_DelayedCardUpdate:
			k.DelayedCardUpdate.CardJson = Card(k.DelayedCardUpdate.GetCardJson(), plugin)
		}
		out[i] = a
	}
	return out
}

// Card sets Key in every object-valued "value" of a card's JSON.
func Card(card, plugin string) string {
	// UseNumber: numbers survive the round trip exactly (no float64).
	dec := json.NewDecoder(strings.NewReader(card))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil || dec.More() {
		return card
	}
	if !walkTag(v, plugin) {
		return card
	}
	b, err := json.Marshal(v)
	if err != nil {
		return card
	}
	return string(b)
}

func walkTag(v any, plugin string) bool {
	changed := false
	switch x := v.(type) {
	case map[string]any:
		if val, ok := x["value"].(map[string]any); ok {
			val[Key] = plugin
			changed = true
		}
		for _, c := range x {
			changed = walkTag(c, plugin) || changed
		}
	case []any:
		for _, c := range x {
			changed = walkTag(c, plugin) || changed
		}
	}
	return changed
}
