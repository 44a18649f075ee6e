package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "larkway.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const validConfig = `
apps:
  - id: cli_x
    secret: s
    verification_token: vt
`

func TestCLI(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string // substring of stdout
		wantErr  string // substring of stderr
	}{
		{"no args", nil, 2, "", "Usage:"},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"typo'd command", []string{"plugn"}, 2, "", "Did you mean this?\n\tplugin"},
		{"typo'd subcommand", []string{"plugin", "swp"}, 2, "", "Did you mean this?\n\tswap"},
		{"group without command", []string{"dlq"}, 2, "", "larkway dlq: missing command"},
		{"version", []string{"version"}, 0, "larkway dev", ""},
		{"version flag", []string{"--version"}, 0, "larkway dev", ""},
		{"version stray arg", []string{"version", "x"}, 2, "", `unexpected argument "x"`},
		{"help", []string{"help"}, 0, "Usage:", ""},
		{"help on a command", []string{"help", "plugin", "swap"}, 0, "larkway plugin swap NAME (--file PATH --sha256 HEX | --address ADDR)", ""},
		{"help on an unknown topic", []string{"help", "plugn"}, 2, "", `unknown help topic "plugn"`},
		{"completion bash", []string{"completion", "bash"}, 0, "__start_larkway", ""},
		{"completion zsh", []string{"completion", "zsh"}, 0, "#compdef larkway", ""},
		{"completion fish", []string{"completion", "fish"}, 0, "complete -c larkway", ""},
		{"completion powershell", []string{"completion", "powershell"}, 0, "Register-ArgumentCompleter", ""},
		// The shell scripts call this; its directive goes to stderr.
		{"completion of plugin commands", []string{"__complete", "plugin", "d"}, 0, "describe", "ShellCompDirectiveNoFileComp"},
		{"unknown flag", []string{"plugin", "list", "--prot"}, 2, "", "unknown flag: --prot"},
		{"plugin swap without a name", []string{"plugin", "swap"}, 2, "", "missing argument NAME"},
		{"bad flag value", []string{"plugin", "swap", "echo", "--file", "x", "--sha256", "xyz"}, 2, "", `"--sha256" flag: want 64 hex digits`},
		{"serve without config", []string{"serve"}, 2, "", `required flag(s) "config" not set`},
		{"serve unknown flag", []string{"serve", "--nope"}, 2, "", "unknown flag: --nope"},
		{"serve stray arg", []string{"serve", "--config", "x", "extra"}, 2, "", `unexpected argument "extra"`},
		{"serve missing file", []string{"serve", "--config", "/nonexistent/larkway.yaml"}, 1, "", "reading config"},
		{"serve check ok", []string{"serve", "--check", "--config", "VALID"}, 0, "ok (1 apps, 0 plugins, bus embedded)", ""},
		{"serve unknown key", []string{"serve", "--check", "--config", "UNKNOWN"}, 1, "", `unknown key "listn" (did you mean "listen"?)`},
		{"serve invalid", []string{"serve", "--check", "--config", "INVALID"}, 1, "", "bus.kind"},
		{"serve help", []string{"serve", "-h"}, 0, "--config FILE", ""},
		{"emulator bad flag", []string{"emulator", "--port", "1"}, 2, "", "unknown flag: --port"},
		{"send bad url", []string{"send", "--url", "::not a url"}, 2, "", "--url"},
		{"bench bad scenario", []string{"bench", "--scenarios", "nope"}, 2, "", `--scenarios: unknown scenario "nope"`},
	}
	valid := writeConfig(t, validConfig)
	unknown := writeConfig(t, validConfig+"listn: 1\n")
	invalid := writeConfig(t, validConfig+"bus: {kind: kafka}\n")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = map[string]string{"VALID": valid, "UNKNOWN": unknown, "INVALID": invalid}[a]
				if args[i] == "" {
					args[i] = a
				}
			}
			code, out, errOut := runCLI(t, args...)
			if code != tt.wantCode || !strings.Contains(out, tt.wantOut) || !strings.Contains(errOut, tt.wantErr) {
				t.Fatalf("code %d (want %d)\nstdout: %s\nstderr: %s", code, tt.wantCode, out, errOut)
			}
			// An error is printed once, and help only when asked for.
			if tt.wantErr != "" && strings.Count(errOut, tt.wantErr) != 1 {
				t.Fatalf("stderr says %q %d times:\n%s", tt.wantErr, strings.Count(errOut, tt.wantErr), errOut)
			}
			if tt.wantCode == 0 && tt.wantErr == "" && errOut != "" {
				t.Fatalf("stderr on success:\n%s", errOut)
			}
			if tt.wantCode == 2 && tt.name != "no args" && tt.name != "group without command" && strings.Contains(errOut, "Flags:") {
				t.Fatalf("usage printed after a mistake:\n%s", errOut)
			}
		})
	}
}

// Every command answers -h, --help and `larkway help PATH` with its own
// help on stdout and exit code 0.
func TestHelpEveryCommand(t *testing.T) {
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		paths = append(paths, path)
		for _, sub := range c.Commands() {
			if !sub.Hidden {
				walk(sub, append(append([]string{}, path...), sub.Name()))
			}
		}
	}
	walk(newRootCmd(io.Discard, io.Discard), nil)
	if len(paths) < 25 {
		t.Fatalf("only %d commands: %v", len(paths), paths)
	}
	for _, path := range paths {
		want := "Usage:\n  " + strings.Join(append([]string{"larkway"}, path...), " ")
		for _, how := range [][]string{append(path, "-h"), append(path, "--help"), append([]string{"help"}, path...)} {
			t.Run(strings.Join(how, " "), func(t *testing.T) {
				code, out, errOut := runCLI(t, how...)
				if code != 0 || !strings.Contains(out, want) || errOut != "" {
					t.Fatalf("code %d, want 0 and %q\nstdout: %s\nstderr: %s", code, want, out, errOut)
				}
			})
		}
	}
}

// Help shows the defaults the environment gives, but never the token's.
func TestAdminHelpHidesTheToken(t *testing.T) {
	t.Setenv("LARKWAY_ADMIN_TOKEN", "secret-admin-token-0123456789")
	t.Setenv("LARKWAY_ADMIN_URL", "https://admin.example.test:8092")
	for _, cmd := range [][]string{{"plugin", "--help"}, {"plugin", "swap", "--help"}, {"dlq", "list", "--help"}} {
		code, out, errOut := runCLI(t, cmd...)
		if code != 0 || strings.Contains(out+errOut, "secret-admin-token") || !strings.Contains(out, "https://admin.example.test:8092") {
			t.Fatalf("%v: code %d\nstdout: %s\nstderr: %s", cmd, code, out, errOut)
		}
	}
}

func TestSendPostsAValidEvent(t *testing.T) {
	var got map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &got)
		_, _ = w.Write([]byte(`{"msg":"success"}`))
	}))
	defer srv.Close()
	code, out, errOut := runCLI(t, "send", "--url", srv.URL, "--token", "tk", "--text", "hi", "--app", "cli_y")
	if code != 0 || !strings.Contains(out, "200 OK") {
		t.Fatalf("code %d out %s err %s", code, out, errOut)
	}
	h := got["header"].(map[string]any)
	if got["schema"] != "2.0" || h["token"] != "tk" || h["app_id"] != "cli_y" || h["event_type"] != "im.message.receive_v1" {
		t.Fatalf("event %v", got)
	}
}

func TestSendReportsRejection(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"verification token does not match","reason":"bad_token"}`))
	}))
	defer srv.Close()
	code, out, errOut := runCLI(t, "send", "--url", srv.URL)
	if code != 1 || !strings.Contains(out, "bad_token") || !strings.Contains(errOut, "401") {
		t.Fatalf("code %d out %s err %s", code, out, errOut)
	}
}

// plugin --help shows the default admin URL; a subcommand's help lists its
// own flags apart from the admin API's, which it inherits, and no other
// command's flags.
func TestPluginHelpFlags(t *testing.T) {
	t.Setenv("LARKWAY_ADMIN_URL", "")
	code, out, _ := runCLI(t, "plugin", "--help")
	if code != 0 || !strings.Contains(out, `--admin URL`) || !strings.Contains(out, `(default "http://127.0.0.1:8092")`) {
		t.Fatalf("plugin --help: code %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "plugin", "list", "--help")
	own, inherited, ok := strings.Cut(out, "Flags of every larkway plugin command:")
	if code != 0 || !ok {
		t.Fatalf("plugin list --help: code %d\n%s", code, out)
	}
	_, own, _ = strings.Cut(own, "Flags:\n")
	if strings.TrimSpace(own) != "-h, --help   help for list" {
		t.Fatalf("plugin list's own flags:\n%s", own)
	}
	for _, f := range []string{"--admin URL", "--token TOKEN", "--ca-file", "--cert-file", "--key-file", "--tls-server-name", "--json"} {
		if !strings.Contains(inherited, f) {
			t.Fatalf("plugin list --help lacks inherited %s:\n%s", f, inherited)
		}
	}
	for _, f := range []string{"--file", "--sha256", "--files-only"} {
		if strings.Contains(out, f) {
			t.Fatalf("plugin list --help shows another command's %s:\n%s", f, out)
		}
	}
}
