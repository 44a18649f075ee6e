package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/pluginhost"
)

func TestReleaseCommands(t *testing.T) {
	url, echo := startCore(t)
	auth := []string{"--admin", url, "--token", adminToken}
	with := func(args ...string) []string { return append(args, auth...) }
	v2 := filepath.Join(filepath.Dir(echo), "echo-v2")
	b, _ := os.ReadFile(echo)
	if err := os.WriteFile(v2, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sum, _ := pluginhost.FileSHA256(v2)

	if code, _, errOut := runCLI(t, with("plugin", "canary", "echo", "--file", v2, "--sha256", sum)...); code != 2 || !strings.Contains(errOut, "--chats") {
		t.Fatalf("canary without chats: %d %s", code, errOut)
	}
	if code, _, errOut := runCLI(t, with("plugin", "canary", "echo", "--file", v2, "--sha256", sum, "--chats", "150")...); code != 2 {
		t.Fatalf("canary over 100 %%: %d %s", code, errOut)
	}
	code, out, errOut := runCLI(t, with("plugin", "canary", "echo", "--file", v2, "--sha256", sum, "--chats", "10%", "--chat", "oc_vip",
		"--promote-after", "1000", "--max-error-rate", "0.02")...)
	if code != 0 || !strings.Contains(out, "canary echo: started") {
		t.Fatalf("canary: %d %s %s", code, out, errOut)
	}
	code, out, _ = runCLI(t, with("plugin", "list")...)
	if code != 0 || !strings.Contains(out, "canary 1.0.0 (running) on 10% of chats and 1 named chat(s)") {
		t.Fatalf("list: %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, with("plugin", "canary", "status", "echo")...)
	if code != 0 || !strings.Contains(out, "echo: canary of "+v2+" on 10% of chats and 1 named chat(s)") ||
		!strings.Contains(out, "promotion after 1000 deliveries; error budget 0.020") || !strings.Contains(out, "REPLICA") {
		t.Fatalf("status: %d\n%s", code, out)
	}
	if code, out, errOut = runCLI(t, with("plugin", "canary", "promote", "echo")...); code != 0 || !strings.Contains(out, "canary echo: promoted") {
		t.Fatalf("promote: %d %s %s", code, out, errOut)
	}
	code, out, _ = runCLI(t, with("plugin", "canary", "status", "echo")...)
	if code != 0 || !strings.Contains(out, "no canary or shadow running") || !strings.Contains(out, "last canary ("+v2+"): promoted") {
		t.Fatalf("status after promote: %d\n%s", code, out)
	}
	if code, _, errOut = runCLI(t, with("plugin", "canary", "abort", "echo")...); code == 0 || !strings.Contains(errOut, "no_release") {
		t.Fatalf("abort without a canary: %d %s", code, errOut)
	}

	if code, out, errOut = runCLI(t, with("plugin", "shadow", "echo", "--file", echo, "--sha256", mustSum(t, echo))...); code != 0 || !strings.Contains(out, "shadow echo: started") {
		t.Fatalf("shadow: %d %s %s", code, out, errOut)
	}
	if code, out, _ = runCLI(t, with("plugin", "shadow", "report", "echo", "--limit", "5")...); code != 0 || !strings.Contains(out, `"summary"`) {
		t.Fatalf("report: %d %s", code, out)
	}
	// The memory bus keeps no history to replay.
	if code, _, errOut = runCLI(t, with("replay", "--plugin", "echo", "--to-shadow", "--from", "1h")...); code == 0 || !strings.Contains(errOut, "keeps no history (no_history, HTTP 501)") {
		t.Fatalf("replay on the memory bus: %d %s", code, errOut)
	}
	if code, _, errOut = runCLI(t, with("replay", "--plugin", "echo", "--from", "1h")...); code != 2 || !strings.Contains(errOut, "to-shadow") {
		t.Fatalf("replay without --to-shadow: %d %s", code, errOut)
	}
	if code, out, _ = runCLI(t, with("plugin", "shadow", "stop", "echo")...); code != 0 || !strings.Contains(out, "shadow echo: stopped") {
		t.Fatalf("stop: %d %s", code, out)
	}
}

func mustSum(t *testing.T, path string) string {
	t.Helper()
	s, err := pluginhost.FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseReplayTime(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, in string
		want     time.Time
		ok       bool
	}{
		{"now", "now", now, true},
		{"rfc3339", "2026-12-05T10:00:00Z", time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC), true},
		{"duration before now", "24h", now.Add(-24 * time.Hour), true},
		{"negative duration", "-90m", now.Add(-90 * time.Minute), true},
		{"garbage", "yesterday", time.Time{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseReplayTime("from", tc.in, now)
			if (err == nil) != tc.ok || !got.Equal(tc.want) {
				t.Fatalf("got %v, %v", got, err)
			}
		})
	}
}

// A canary or shadow takes a file (launched plugins) or an endpoint
// (remote plugins), never both; the admin API refuses an address for a
// launched plugin.
func TestReleaseByAddressFlags(t *testing.T) {
	url, echo := startCore(t)
	auth := []string{"--admin", url, "--token", adminToken}
	with := func(args ...string) []string { return append(args, auth...) }
	sum := mustSum(t, echo)
	for _, tt := range []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"canary without file or address", with("plugin", "canary", "echo", "--chats", "5"), 2, "at least one of the flags in the group [file address] is required"},
		{"canary file and address", with("plugin", "canary", "echo", "--file", echo, "--sha256", sum, "--address", "a:1", "--chats", "5"), 2, "[address file] were all set"},
		{"canary sha256 and address", with("plugin", "canary", "echo", "--sha256", sum, "--address", "a:1", "--chats", "5"), 2, "missing [file]"},
		{"canary by address without chats", with("plugin", "canary", "echo", "--address", "a:1"), 2, "--chats"},
		{"canary of a launched plugin by address", with("plugin", "canary", "echo", "--address", "127.0.0.1:7443", "--chats", "5"), 1, "address is for remote plugins"},
		{"shadow of a launched plugin by address", with("plugin", "shadow", "echo", "--address", "127.0.0.1:7443"), 1, "address is for remote plugins"},
		{"shadow without file or address", with("plugin", "shadow", "echo"), 2, "at least one of the flags in the group [file address] is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tt.args...)
			if code != tt.code || !strings.Contains(errOut+out, tt.err) {
				t.Fatalf("code %d (want %d)\nstdout %s\nstderr %s", code, tt.code, out, errOut)
			}
		})
	}
}

func TestReleaseRequestBody(t *testing.T) {
	sum := sha256Hex(strings.Repeat("ab", 32))
	for _, tc := range []struct {
		name string
		f    releaseFlags
		want string
	}{
		{"file", releaseFlags{file: "/p/echo2", sum: sum, chats: "10%"}, `{"path":"/p/echo2","percent":10,"sha256":"` + string(sum) + `"}`},
		{"endpoint", releaseFlags{address: "dns:///triage-v2:7443", chats: "10", chat: []string{"oc_vip"}}, `{"address":"dns:///triage-v2:7443","chats":["oc_vip"],"percent":10}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.f.body()
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(b)
			if string(got) != tc.want {
				t.Fatalf("body %s, want %s", got, tc.want)
			}
		})
	}
}

// A remote plugin's release is shown by its candidate's endpoint.
func TestPrintRemoteRelease(t *testing.T) {
	var v releaseView
	if err := json.Unmarshal([]byte(`{"plugin":"triage","release":{"mode":"canary","percent":10,"spec":{"name":"triage","path":"","remote":{"address":"10.0.0.2:7443"}}},
		"last":{"mode":"shadow","result":"aborted","spec":{"remote":{"address":"10.0.0.3:7443"}}}}`), &v); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	printRelease(&out, v)
	for _, want := range []string{"triage: canary of 10.0.0.2:7443 on 10% of chats", "last shadow (10.0.0.3:7443): aborted"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("no %q in\n%s", want, out.String())
		}
	}
}
