package dispatch

import (
	"encoding/json"
	"strings"

	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// tagCards adds the plugin's CardTag to the value of every interactive
// component in the cards these actions send, so a click on them is routed
// back to this plugin alone. Cards whose JSON does not parse are left as
// they are (the executor reports them). The result does not alias actions.
func tagCards(actions []*pluginv1.Action, plugin string) []*pluginv1.Action {
	out := make([]*pluginv1.Action, len(actions))
	for i, a := range actions {
		a = proto.Clone(a).(*pluginv1.Action)
		switch k := a.GetKind().(type) {
		case *pluginv1.Action_Send:
			if k.Send.GetMsgType() == "interactive" {
				k.Send.ContentJson = tagCard(k.Send.GetContentJson(), plugin)
			}
		case *pluginv1.Action_Reply:
			if k.Reply.GetMsgType() == "interactive" {
				k.Reply.ContentJson = tagCard(k.Reply.GetContentJson(), plugin)
			}
		case *pluginv1.Action_UpdateCard:
			k.UpdateCard.CardJson = tagCard(k.UpdateCard.GetCardJson(), plugin)
		case *pluginv1.Action_DelayedCardUpdate:
			k.DelayedCardUpdate.CardJson = tagCard(k.DelayedCardUpdate.GetCardJson(), plugin)
		}
		out[i] = a
	}
	return out
}

// tagCard sets CardTag in every object-valued "value" of a card's JSON.
func tagCard(card, plugin string) string {
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
			val[CardTag] = plugin
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
