// Package match decides from a plugin's manifest which events concern it.
package match

import (
	"fmt"
	"regexp"
	"slices"

	"github.com/larkway/larkway/core/internal/dispatch/cardtag"
	"github.com/larkway/larkway/core/internal/envelope"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
	"github.com/larkway/larkway/sdk/go/contract"
)

// Matcher decides whether an event concerns a plugin, from its manifest's
// subscriptions: any subscription may match; inside one, every non-empty field
// must match and values within a field are alternatives. A card click goes
// only to the plugin whose card it was (see cardtag), if any.
type Matcher struct {
	name string
	subs []compiledSub
}

type compiledSub struct {
	types, commands, chats []string
	patterns               []*regexp.Regexp
}

// New compiles m's subscriptions.
func New(m *pluginv1.Manifest) (*Matcher, error) {
	out := &Matcher{name: m.GetName()}
	for i, s := range m.GetSubscriptions() {
		cs := compiledSub{types: s.GetEventTypes(), commands: s.GetCommands(), chats: s.GetChatIds()}
		for _, p := range s.GetTextPatterns() {
			re, err := regexp.Compile(p)
			if err != nil {
				return nil, fmt.Errorf("subscription %d: pattern %q: %w", i, p, err)
			}
			cs.patterns = append(cs.patterns, re)
		}
		out.subs = append(out.subs, cs)
	}
	return out, nil
}

// Match reports whether ev concerns the plugin.
func (m *Matcher) Match(ev *envelope.Head) bool {
	if ev.Card && m.name != "" {
		if owner := cardtag.Owner(ev.CardValueJSON); owner != "" && owner != m.name {
			return false
		}
	}
	for _, s := range m.subs {
		if s.match(ev) {
			return true
		}
	}
	return false
}

func (s compiledSub) match(ev *envelope.Head) bool {
	if len(s.types) > 0 && !slices.Contains(s.types, ev.EventType) {
		return false
	}
	if len(s.chats) > 0 && !slices.Contains(s.chats, ev.ChatID) {
		return false
	}
	text := ev.Text
	if len(s.commands) > 0 {
		name, _, ok := contract.CommandName(text)
		if !ok || !slices.Contains(s.commands, name) {
			return false
		}
	}
	if len(s.patterns) > 0 && !slices.ContainsFunc(s.patterns, func(re *regexp.Regexp) bool { return re.MatchString(text) }) {
		return false
	}
	return true
}
