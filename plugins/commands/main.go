// Command commands is a larkway plugin with a few chat commands: /help lists
// them, /ping answers pong, /roll rolls dice ("/roll 2d6", "/roll d20
// --seed 42"), and an unknown command gets a reply suggesting the closest
// known one.
//
// It subscribes to every message that starts with a command (after leading
// @mentions), not only its own, so it can answer unknown ones. When other
// plugins in the same core own commands too, list them in the plugin's
// environment so it leaves them alone:
//
//	plugins:
//	  - name: commands
//	    path: bin/plugins/commands
//	    env: [COMMANDS_IGNORE=/approve-request,/deploy]
package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/larkway/larkway/sdk/go/larkway"
)

// commandPattern is an RE2 pattern for texts that start with a command,
// after leading @mentions — the same rule the core and SDK use to find a
// command name (mentions are words starting with "@").
const commandPattern = `^\s*(?:@\S*\s+)*/\S`

// help describes each command, in the order /help lists them.
var help = []struct{ name, usage, text string }{
	{"/help", "/help", "list the commands"},
	{"/ping", "/ping", "check that the bot is alive"},
	{"/roll", "/roll [NdM[+K] ...] [--seed N]", "roll dice, e.g. /roll 2d6 or /roll d20 --seed 42 (default 1d6)"},
}

// newPlugin builds the plugin; ignore lists commands other plugins own,
// which get no "unknown command" reply.
func newPlugin(ignore ...string) *larkway.Plugin {
	p := larkway.New("commands", "1.0.0",
		larkway.WithDescription("/help, /ping and /roll, with suggestions for unknown commands"),
		larkway.WithActions(larkway.ActionReply))
	p.OnCommand("/help", func(context.Context, *larkway.Event, larkway.Command) ([]larkway.Action, error) {
		var b strings.Builder
		b.WriteString("Commands:")
		for _, h := range help {
			fmt.Fprintf(&b, "\n%s — %s", h.usage, h.text)
		}
		return []larkway.Action{larkway.ReplyText(b.String())}, nil
	})
	p.OnCommand("/ping", func(context.Context, *larkway.Event, larkway.Command) ([]larkway.Action, error) {
		return []larkway.Action{larkway.ReplyText("pong")}, nil
	})
	p.OnCommand("/roll", func(_ context.Context, _ *larkway.Event, cmd larkway.Command) ([]larkway.Action, error) {
		req, err := parseRoll(cmd.Rest)
		if err != nil {
			return []larkway.Action{larkway.ReplyText("🎲 " + err.Error())}, nil
		}
		return []larkway.Action{larkway.ReplyText(req.roll())}, nil
	})
	ignored := map[string]bool{}
	for _, c := range ignore {
		if c = strings.ToLower(strings.TrimSpace(c)); c != "" {
			ignored[c] = true
		}
	}
	// Known commands reach their handlers first; what is left here is a
	// command nobody in this plugin handles.
	p.OnMessageMatching(func(_ context.Context, ev *larkway.Event) ([]larkway.Action, error) {
		cmd, ok := larkway.ParseCommand(ev.Message.Text)
		if !ok || ignored[cmd.Name] {
			return nil, nil
		}
		return []larkway.Action{larkway.ReplyText(unknownReply(cmd.Name, p.Commands()))}, nil
	}, commandPattern)
	return p
}

// unknownReply answers an unknown command, suggesting the closest known one
// when there is a plausible one.
func unknownReply(name string, known []string) string {
	if s := suggest(name, known); s != "" {
		return fmt.Sprintf("Unknown command %s. Did you mean %s? Send /help for the list.", name, s)
	}
	return fmt.Sprintf("Unknown command %s. Send /help for the list.", name)
}

// suggest returns the known command closest to name, or "" when none is
// close: a unique known command name starts with it, or it is at most two
// edits away (and fewer edits than its own length).
func suggest(name string, known []string) string {
	word := strings.TrimPrefix(name, "/")
	var prefixed []string
	for _, k := range known {
		if strings.HasPrefix(strings.TrimPrefix(k, "/"), word) && word != "" {
			prefixed = append(prefixed, k)
		}
	}
	if len(prefixed) == 1 {
		return prefixed[0]
	}
	best, bestDist := "", 3
	for _, k := range known {
		d := editDistance(word, strings.TrimPrefix(k, "/"))
		if d < bestDist && d < len([]rune(word)) {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, with adjacent
// transpositions counting as one edit ("pnig" → "ping").
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

// ignoredFromEnv reads COMMANDS_IGNORE: commands (comma-separated) that
// other plugins in the same core handle.
func ignoredFromEnv() []string {
	return slices.DeleteFunc(strings.Split(os.Getenv("COMMANDS_IGNORE"), ","), func(s string) bool {
		return strings.TrimSpace(s) == ""
	})
}

func main() { newPlugin(ignoredFromEnv()...).Main() }
