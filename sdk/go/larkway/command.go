package larkway

import (
	"strings"

	"github.com/larkway/larkway/sdk/go/contract"
)

// Command is a parsed message command: "/deploy prod --force --region=eu"
// gives Name "/deploy", Args ["prod"], Flags {"force": "true", "region": "eu"}.
type Command struct {
	Name  string
	Args  []string
	Flags map[string]string
	// Rest is the text after the command name, unparsed.
	Rest string
}

// Flag returns a flag's value and whether it was given.
func (c Command) Flag(name string) (string, bool) {
	v, ok := c.Flags[name]
	return v, ok
}

// ParseCommand parses text starting with "/" (after leading mentions, which
// the core has already replaced by names, e.g. "@bot /help"). Double quotes
// group words: /say "hello world".
func ParseCommand(text string) (Command, bool) {
	name, rest, ok := contract.CommandName(text)
	if !ok {
		return Command{}, false
	}
	cmd := Command{Name: name, Rest: rest, Flags: map[string]string{}}
	for _, w := range splitWords(rest) {
		if k, found := strings.CutPrefix(w, "--"); found && k != "" {
			k, v, hasValue := strings.Cut(k, "=")
			if !hasValue {
				v = "true"
			}
			cmd.Flags[k] = v
			continue
		}
		cmd.Args = append(cmd.Args, w)
	}
	return cmd, true
}

func splitWords(s string) []string {
	var out []string
	var b strings.Builder
	inQuote, has := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote, has = !inQuote, true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if has {
				out = append(out, b.String())
				b.Reset()
				has = false
			}
		default:
			b.WriteRune(r)
			has = true
		}
	}
	if has {
		out = append(out, b.String())
	}
	return out
}
