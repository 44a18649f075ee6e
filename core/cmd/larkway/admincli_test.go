package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/apptest"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/pluginhost"
	"github.com/larkway/larkway/core/internal/testenv"
)

const adminToken = "test-admin-token-0123456789"

// startCore runs a core in-process (memory bus, real echo plugin process,
// admin API on) and returns the admin URL.
func startCore(t *testing.T) (adminURL, echoPath string) {
	t.Helper()
	return startCoreWith(t, "http://127.0.0.1:1", "")
}

// startCoreWith is startCore with the app's Lark base URL and extra
// top-level YAML (e.g. a redis section).
func startCoreWith(t *testing.T, larkURL, extra string) (adminURL, echoPath string) {
	t.Helper()
	dir := t.TempDir()
	echoPath = testenv.BuildPlugin(t, "./plugins/echo", dir)
	sum, _ := pluginhost.FileSHA256(echoPath)
	cfg, err := config.Parse(strings.NewReader(fmt.Sprintf(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
apps:
  - {id: cli_admin, secret: s, verification_token: vt, base_url: %q}
plugins:
  - {name: echo, path: %s, sha256: %s}
admin:
  listen: 127.0.0.1:0
  token: %s
supervision:
  probation_window: 200ms
%s
`, larkURL, echoPath, sum, adminToken, extra)))
	if err != nil {
		t.Fatal(err)
	}
	a := apptest.Start(t, cfg, nil)
	addr := a.AdminAddr()
	testenv.Eventually(t, 30*time.Second, "core not ready", func() bool { return a.Ready() && a.PluginsServing() })
	return "http://" + addr, echoPath
}

func TestPluginAndDLQCommands(t *testing.T) {
	url, echo := startCore(t)
	auth := []string{"--admin", url, "--token", adminToken}
	with := func(args ...string) []string { return append(args, auth...) }

	code, out, errOut := runCLI(t, with("plugin", "list")...)
	if code != 0 || !strings.Contains(out, "echo") || !strings.Contains(out, "serving") || !strings.Contains(out, "1.0.0") {
		t.Fatalf("list: %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, with("plugin", "describe", "echo")...)
	if code != 0 || !strings.Contains(out, `"allowed_actions"`) {
		t.Fatalf("describe: %d %s", code, out)
	}
	// Swap to a copy of the binary at another path (a "new version"); it
	// must be in the plugin's directory: a copy elsewhere is refused.
	v2 := filepath.Join(filepath.Dir(echo), "echo-v2")
	b, _ := os.ReadFile(echo)
	if err := os.WriteFile(v2, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sum, _ := pluginhost.FileSHA256(v2)
	elsewhere := filepath.Join(t.TempDir(), "echo-v2")
	if err := os.WriteFile(elsewhere, b, 0o755); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCLI(t, with("plugin", "swap", "echo", "--file", elsewhere, "--sha256", sum)...)
	if code != 1 || !strings.Contains(errOut, "path_not_allowed") {
		t.Fatalf("swap from outside the plugin directory: %d %s", code, errOut)
	}
	code, out, errOut = runCLI(t, with("plugin", "swap", "echo", "--file", v2, "--sha256", sum)...)
	if code != 0 || !strings.Contains(out, "swap echo: ok") {
		t.Fatalf("swap: %d %s %s", code, out, errOut)
	}
	code, out, _ = runCLI(t, with("plugin", "list", "--json")...)
	if code != 0 || !strings.Contains(out, v2) {
		t.Fatalf("list after swap: %s", out)
	}
	// A wrong checksum is refused before exec, and the old version stays.
	code, _, errOut = runCLI(t, with("plugin", "swap", "echo", "--file", v2, "--sha256", strings.Repeat("0", 64))...)
	if code != 1 || !strings.Contains(errOut, "rolled_back") {
		t.Fatalf("bad checksum swap: %d %s", code, errOut)
	}
	code, out, _ = runCLI(t, with("plugin", "rollback", "echo")...)
	if code != 0 {
		t.Fatalf("rollback: %s", out)
	}
	for _, sub := range []string{"disable", "enable"} {
		if code, out, errOut := runCLI(t, with("plugin", sub, "echo")...); code != 0 {
			t.Fatalf("%s: %s %s", sub, out, errOut)
		}
	}
	code, out, _ = runCLI(t, with("dlq", "list", "echo")...)
	if code != 0 || !strings.Contains(out, "0 dead letter(s)") {
		t.Fatalf("dlq list: %s", out)
	}
	code, _, errOut = runCLI(t, with("dlq", "show", "echo", "nope")...)
	if code != 1 || !strings.Contains(errOut, "not_found") {
		t.Fatalf("dlq show missing: %d %s", code, errOut)
	}

	tests := []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"wrong token", []string{"plugin", "list", "--admin", url, "--token", "wrong"}, 1, "unauthorized"},
		{"no token", []string{"plugin", "list", "--admin", url, "--token", ""}, 2, "admin token is required"},
		{"bad url", []string{"plugin", "list", "--admin", "ftp://x", "--token", "t"}, 2, "--admin"},
		{"unknown plugin", with("plugin", "disable", "nope"), 1, "unknown_plugin"},
		{"bad plugin name", with("plugin", "disable", "Bad/Name"), 1, "bad_name"},
		{"missing name", with("plugin", "describe"), 2, "missing argument NAME"},
		{"extra argument", with("plugin", "describe", "echo", "more"), 2, `unexpected argument "more"`},
		{"flag of another subcommand", with("plugin", "describe", "echo", "--file", "x"), 2, "unknown flag: --file"},
		{"unknown sub", with("plugin", "explode", "echo"), 2, `unknown command "explode" for "larkway plugin"`},
		{"swap without file", with("plugin", "swap", "echo"), 2, `at least one of the flags in the group [file address] is required`},
		{"swap file without sum", with("plugin", "swap", "echo", "--file", "x"), 2, `they must all be set; missing [sha256]`},
		{"swap file and address", with("plugin", "swap", "echo", "--file", "x", "--sha256", strings.Repeat("0", 64), "--address", "a:1"), 2, `[address file] were all set`},
		{"swap a launched plugin by address", with("plugin", "swap", "echo", "--address", "127.0.0.1:7443"), 1, "bad_request"},
		{"swap with a bad checksum", with("plugin", "swap", "echo", "--file", "x", "--sha256", "abc"), 2, `invalid argument "abc" for "--sha256" flag: want 64 hex digits`},
		{"dlq without plugin", with("dlq", "list"), 2, "missing argument PLUGIN"},
		{"dlq show without id", with("dlq", "show", "echo"), 2, "missing argument ID"},
		{"dlq replay ids and all", with("dlq", "replay", "echo", "1-0", "--all"), 2, "ids or --all"},
		{"dlq replay nothing", with("dlq", "replay", "echo"), 2, "ids or --all"},
		{"dlq unknown sub", with("dlq", "eat", "echo"), 2, `unknown command "eat" for "larkway dlq"`},
		{"unreachable", []string{"plugin", "list", "--admin", "http://127.0.0.1:1", "--token", "t"}, 1, "calling the admin API"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tt.args...)
			if code != tt.code || !strings.Contains(errOut+out, tt.err) {
				t.Fatalf("code %d (want %d)\nstdout %s\nstderr %s", code, tt.code, out, errOut)
			}
		})
	}
}
