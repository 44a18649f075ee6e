package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/larkway/larkway/sdk/go/larkway"
	"github.com/larkway/larkway/sdk/go/larkwaytest"
)

// reply runs one message through the plugin and returns its one text reply.
func reply(t *testing.T, p *larkway.Plugin, text string) string {
	t.Helper()
	out := larkwaytest.Run(t, p, larkwaytest.Message(text))
	larkwaytest.RequireReplyText(t, out, "")
	return larkwaytest.Texts(out)[0]
}

func TestHelpListsEveryCommand(t *testing.T) {
	p := newPlugin()
	got := reply(t, p, "/help")
	for _, c := range p.Commands() {
		if !strings.Contains(got, c) {
			t.Errorf("/help does not mention %s:\n%s", c, got)
		}
	}
	if len(p.Commands()) != len(help) {
		t.Errorf("%d commands registered, %d described", len(p.Commands()), len(help))
	}
}

func TestPing(t *testing.T) {
	for _, text := range []string{"/ping", "@Bot /ping", "/PING extra words"} {
		if got := reply(t, newPlugin(), text); got != "pong" {
			t.Errorf("%q → %q, want pong", text, got)
		}
	}
}

var rollLine = regexp.MustCompile(`^🎲 (\d+)d(\d+)([+-]\d+)? → ([\d +]+?)(?: \(([+-]\d+)\))?(?: = (-?\d+))?$`)

// checkRoll verifies one "🎲 NdM → a + b = s" line: the right number of
// faces, each within the die, and the sum.
func checkRoll(t *testing.T, line string, want spec) {
	t.Helper()
	m := rollLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("roll line %q has an unexpected shape", line)
	}
	if m[1] != strconv.Itoa(want.Count) || m[2] != strconv.Itoa(want.Sides) {
		t.Fatalf("roll line %q, want %s", line, want)
	}
	faces := strings.Split(m[4], " + ")
	if len(faces) != want.Count {
		t.Fatalf("%q: %d faces, want %d", line, len(faces), want.Count)
	}
	sum := want.Mod
	for _, f := range faces {
		v, _ := strconv.Atoi(f)
		if v < 1 || v > want.Sides {
			t.Fatalf("%q: face %d outside 1..%d", line, v, want.Sides)
		}
		sum += v
	}
	if m[6] != "" && m[6] != strconv.Itoa(sum) {
		t.Fatalf("%q: sum %s, want %d", line, m[6], sum)
	}
}

func TestRoll(t *testing.T) {
	tests := map[string][]spec{
		"/roll":             {{1, 6, 0}},
		"/roll 2d6":         {{2, 6, 0}},
		"/roll d20":         {{1, 20, 0}},
		"/roll 3D6+2":       {{3, 6, 2}},
		"/roll 1d8-1":       {{1, 8, -1}},
		"@Bot /roll 2d6 d4": {{2, 6, 0}, {1, 4, 0}},
		"/roll 100d1000":    {{100, 1000, 0}},
	}
	for text, specs := range tests {
		t.Run(text, func(t *testing.T) {
			for range 20 { // random rolls: check the shape many times
				lines := strings.Split(reply(t, newPlugin(), text), "\n")
				for i, s := range specs {
					checkRoll(t, lines[i], s)
				}
				if len(specs) > 1 && !strings.HasPrefix(lines[len(specs)], "total = ") {
					t.Fatalf("no total line in %q", lines)
				}
			}
		})
	}
}

func TestRollWithSeedIsDeterministic(t *testing.T) {
	first := reply(t, newPlugin(), "/roll d20 --seed 42")
	for _, text := range []string{"/roll d20 --seed 42", "/roll --seed=42 d20", "@Bot /roll D20 --seed 42"} {
		if got := reply(t, newPlugin(), text); got != first {
			t.Errorf("%q rolled %q, the first roll was %q", text, got, first)
		}
	}
	if !strings.HasSuffix(first, "(seed 42)") {
		t.Errorf("seeded roll %q does not name its seed", first)
	}
	checkRoll(t, strings.Split(first, "\n")[0], spec{1, 20, 0})
	// Different seeds roll different sequences (over enough dice).
	a := reply(t, newPlugin(), "/roll 20d1000 --seed 1")
	b := reply(t, newPlugin(), "/roll 20d1000 --seed 2")
	if strings.Split(a, "\n")[0] == strings.Split(b, "\n")[0] {
		t.Errorf("seeds 1 and 2 rolled the same: %q", a)
	}
}

func TestRollErrorsAreExplained(t *testing.T) {
	tests := map[string]string{
		"/roll 2x6":                          `can't roll "2x6": want dice like 2d6`,
		"/roll d1":                           "at least 2 sides",
		"/roll 0d6":                          "at least one die",
		"/roll 101d6":                        "at most 100 dice",
		"/roll 99999999999d6":                "at most 100 dice",
		"/roll d1001":                        "at most 1000 sides",
		"/roll d6+1001":                      "within ±1000",
		"/roll d20 --seed":                   "--seed needs a number",
		"/roll d20 --seed abc":               `--seed needs a whole number, not "abc"`,
		"/roll d20 --fast":                   `unknown option "--fast"`,
		"/roll " + strings.Repeat("d6 ", 11): "at most 10 dice expressions",
	}
	for text, want := range tests {
		t.Run(text, func(t *testing.T) {
			got := reply(t, newPlugin(), text)
			if !strings.HasPrefix(got, "🎲 ") || !strings.Contains(got, want) {
				t.Errorf("%q → %q, want it to contain %q", text, got, want)
			}
		})
	}
}

func TestUnknownCommandsGetASuggestion(t *testing.T) {
	tests := map[string]string{
		"/pnig":          "Unknown command /pnig. Did you mean /ping?",
		"/hlep":          "Did you mean /help?",
		"/rol 2d6":       "Did you mean /roll?",
		"@Bot /r":        "Did you mean /roll?",
		"/ROLLL":         "Did you mean /roll?",
		"/weather paris": "Unknown command /weather. Send /help for the list.",
		"/p":             "Unknown command /p. Did you mean /ping?",
	}
	for text, want := range tests {
		t.Run(text, func(t *testing.T) {
			if got := reply(t, newPlugin(), text); !strings.Contains(got, want) {
				t.Errorf("%q → %q, want %q", text, got, want)
			}
		})
	}
}

func TestIgnoredCommandsAndPlainMessagesGetNothing(t *testing.T) {
	p := newPlugin("/approve-request", " /Deploy ")
	for _, text := range []string{"/approve-request buy a laptop", "/deploy prod", "hello there", "@Bot thanks"} {
		out := larkwaytest.Run(t, p, larkwaytest.Message(text))
		larkwaytest.RequireDone(t, out)
		if len(out.Actions) != 0 {
			t.Errorf("%q → %+v, want no reply", text, larkwaytest.Summaries(out))
		}
	}
}

// The core delivers only messages matching the manifest's pattern: every
// command (after mentions), nothing else.
func TestCommandPatternMatchesCommandsOnly(t *testing.T) {
	re := regexp.MustCompile(commandPattern)
	for text, want := range map[string]bool{
		"/help": true, "  /roll 2d6": true, "@Bot /x": true, "@Bot @Other /ping": true,
		"hello": false, "@Bot hello /ping": false, "/": false, "a/b": false, "": false,
	} {
		_, _, isCmd := parseCommandName(text)
		if got := re.MatchString(text); got != want || got != isCmd {
			t.Errorf("%q: pattern %v, command %v, want %v", text, got, isCmd, want)
		}
	}
}

func parseCommandName(text string) (string, string, bool) {
	c, ok := larkway.ParseCommand(text)
	return c.Name, c.Rest, ok
}

func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"ping", "ping", 0}, {"pnig", "ping", 1}, {"rol", "roll", 1}, {"help", "hlep", 1}, {"weather", "help", 6}, {"é", "e", 1}} {
		if got := editDistance(tt.a, tt.b); got != tt.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.d)
		}
	}
}

func FuzzParseRoll(f *testing.F) {
	for _, s := range []string{"2d6", "d20 --seed 42", "3d6+2 d4-1", "--seed=-7", "99999999999999999999d6", "d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		req, err := parseRoll(s)
		if err != nil {
			return
		}
		if len(req.specs) == 0 || len(req.specs) > maxSpecs {
			t.Fatalf("%q: %d specs", s, len(req.specs))
		}
		for _, sp := range req.specs {
			if sp.Count < 1 || sp.Count > maxDice || sp.Sides < 2 || sp.Sides > maxSides || sp.Mod < -maxMod || sp.Mod > maxMod {
				t.Fatalf("%q: spec %+v out of bounds", s, sp)
			}
		}
		_ = req.roll()
	})
}
