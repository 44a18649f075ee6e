package pluginhost

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/larkway/larkway/sdk/go/contract"
)

// secretEnv are variables the core may hold secrets in: those
// config.example.yaml's *_env keys name, and look-alikes.
var secretEnv = map[string]string{
	"LARK_APP_SECRET":         "app-secret-do-not-leak",
	"LARK_VERIFICATION_TOKEN": "verification-token-do-not-leak",
	"LARK_ENCRYPT_KEY":        "encrypt-key-do-not-leak",
	"LARKWAY_APP_SECRET":      "larkway-app-secret-do-not-leak",
	"LARKWAY_ADMIN_TOKEN":     "admin-token-do-not-leak",
	"LARKWAY_REDIS_PASSWORD":  "redis-password-do-not-leak",
	"AWS_SECRET_ACCESS_KEY":   "aws-do-not-leak",
}

// checkEnv fails unless env holds only allow-listed, go-plugin handshake
// and explicitly configured variables, and none of the secrets.
func checkEnv(t *testing.T, where string, env, configured []string) {
	t.Helper()
	handshake := []string{contract.MagicCookieKey, "PLUGIN_MIN_PORT", "PLUGIN_MAX_PORT", "PLUGIN_PROTOCOL_VERSIONS", "PLUGIN_CLIENT_CERT"}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if allowedEnv[k] || strings.HasPrefix(k, "LC_") || slices.Contains(handshake, k) || slices.Contains(configured, k) {
			for name, secret := range secretEnv {
				if strings.Contains(v, secret) {
					t.Errorf("%s: %s carries the value of %s", where, k, name)
				}
			}
			continue
		}
		t.Errorf("%s: variable %s is neither allow-listed nor configured", where, k)
	}
}

func TestPluginEnvironmentIsAllowListed(t *testing.T) {
	path := hostilePlugin(t)
	for k, v := range secretEnv {
		t.Setenv(k, v)
	}
	t.Setenv("TZ", "Asia/Shanghai")
	t.Setenv("LC_ALL", "C.UTF-8")
	t.Setenv("PASSED_THROUGH", "listed-by-the-plugin-config")
	report := filepath.Join(t.TempDir(), "env.json")
	inst, err := Launch(context.Background(), Config{Path: path, Env: []string{"HOSTILE_MODE=report-env", "HOSTILE_REPORT=" + report,
		"PASSED_THROUGH", "NOT_SET_ANYWHERE_1234"}}, discard())
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	defer inst.Close()
	configured := []string{"HOSTILE_MODE", "HOSTILE_REPORT", "PASSED_THROUGH"}

	// What the plugin itself sees.
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		PID     int      `json:"pid"`
		Environ []string `json:"environ"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	seen := rep.Environ
	if rep.PID != inst.PID() {
		t.Fatalf("report from pid %d, plugin is %d", rep.PID, inst.PID())
	}
	checkEnv(t, "plugin's os.Environ", seen, configured)
	for _, want := range []string{"TZ=Asia/Shanghai", "LC_ALL=C.UTF-8", "PASSED_THROUGH=listed-by-the-plugin-config", "PATH=" + os.Getenv("PATH"),
		contract.MagicCookieKey + "=" + contract.MagicCookieValue} {
		if !slices.Contains(seen, want) {
			t.Errorf("plugin environment lacks %s", want)
		}
	}
	if slices.ContainsFunc(seen, func(kv string) bool { return strings.HasPrefix(kv, "NOT_SET_ANYWHERE_1234") }) {
		t.Error("a configured name the core does not have was passed anyway")
	}

	// What the kernel holds for the process.
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", inst.PID()))
	if err != nil {
		t.Fatal(err)
	}
	procEnv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	checkEnv(t, "/proc/PID/environ", procEnv, configured)
	for _, secret := range secretEnv {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("/proc/%d/environ contains %q", inst.PID(), secret)
		}
	}

	// A plugin runs as the core's user, who could otherwise read the
	// core's own /proc/PID/environ (the secrets above) from the plugin.
	const prGetDumpable = 3
	if d, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prGetDumpable, 0, 0); errno != 0 || d != 0 {
		t.Errorf("core still dumpable after a launch: %d %v", d, errno)
	}
}

// copyFile copies a file (mode kept), as a "new version" of it.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(src)
	if err := os.WriteFile(dst, b, fi.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
}

func mustSum(t *testing.T, path string) string {
	t.Helper()
	s, err := FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// privateDirs lists the launches' private copy directories under dir.
func privateDirs(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "larkway-plugin-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPinnedExecutableRunsFromVerifiedCopy(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	path := filepath.Join(t.TempDir(), "plugin")
	copyFile(t, echoPlugin(t), path)
	sum := mustSum(t, path)
	inst, err := Launch(context.Background(), Config{Path: path, SHA256: sum}, discard())
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	defer inst.Close()
	dirs := privateDirs(t, tmp)
	if len(dirs) != 1 {
		t.Fatalf("private dirs %v", dirs)
	}
	if fi, err := os.Stat(dirs[0]); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("private dir %v %v: want mode 0700", fi.Mode(), err)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", inst.PID()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(exe, dirs[0]+"/") {
		t.Fatalf("plugin runs %s, not a copy in %s", exe, dirs[0])
	}
	if got := mustSum(t, fmt.Sprintf("/proc/%d/exe", inst.PID())); got != sum {
		t.Fatalf("running executable hashes to %s, pinned %s", got, sum)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", inst.PID()))
	if argv0, _, _ := strings.Cut(string(cmdline), "\x00"); argv0 != path {
		t.Fatalf("argv[0] = %q, want the configured path %q", argv0, path)
	}
	// Replacing the original cannot reach the running copy.
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := inst.Ping(context.Background()); err != nil {
		t.Fatalf("ping after the original changed: %v", err)
	}
	inst.Close()
	if d := privateDirs(t, tmp); len(d) != 0 {
		t.Fatalf("private copies left after Close: %v", d)
	}
}

// A script pinned in Files is what the interpreter reads: its argument is
// rewritten to the verified copy, and a changed script is refused.
func TestPinnedScriptRunsFromVerifiedCopy(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	hostile := hostilePlugin(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "plugin.sh")
	if err := os.WriteFile(script, []byte("printf %s \"$0\" > \"$SCRIPT_REPORT\"\nexec \"$HOSTILE_BIN\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(dir, "argv0")
	cfg := Config{Path: "sh", SHA256: mustSum(t, sh), Args: []string{script},
		Files: []File{{Path: script, SHA256: strings.ToUpper(mustSum(t, script))}},
		Env:   []string{"HOSTILE_BIN=" + hostile, "SCRIPT_REPORT=" + report}}
	inst, err := Launch(context.Background(), cfg, discard())
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	read, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	dirs := privateDirs(t, tmp)
	if len(dirs) != 1 || !strings.HasPrefix(string(read), dirs[0]+"/") || !strings.HasSuffix(string(read), script) {
		t.Fatalf("the interpreter read %q, not the verified copy of %s in %v", read, script, dirs)
	}
	inst.Close()
	if d := privateDirs(t, tmp); len(d) != 0 {
		t.Fatalf("private copies left after Close: %v", d)
	}

	// The script changes on disk: the next launch is refused, naming it.
	pinned := strings.ToLower(cfg.Files[0].SHA256)
	if err := os.WriteFile(script, []byte("exec /bin/false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	inst, err = Launch(context.Background(), cfg, discard())
	if err == nil {
		inst.Close()
		t.Fatal("launched a changed script")
	}
	actual := mustSum(t, script)
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), script) || !strings.Contains(err.Error(), "expected sha256 "+pinned) ||
		!strings.Contains(err.Error(), "actual "+actual) {
		t.Fatalf("err = %v; want ErrChecksum naming %s, expected %s and actual %s", err, script, pinned, actual)
	}
	if d := privateDirs(t, tmp); len(d) != 0 {
		t.Fatalf("private copies left after a refusal: %v", d)
	}
}

func TestPinRefusals(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	path := echoPlugin(t)
	sum := mustSum(t, path)
	dir := t.TempDir()
	script := filepath.Join(dir, "main.py")
	if err := os.WriteFile(script, []byte("print()\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ssum := mustSum(t, script)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		files []File
		want  string
	}{
		{"script mismatch", []File{{script, strings.Repeat("0", 64)}}, "expected sha256 " + strings.Repeat("0", 64) + ", actual " + ssum},
		{"malformed file sha", []File{{script, "abc"}}, "not 64 hex digits"},
		{"file without path", []File{{"", ssum}}, "no path"},
		{"missing file", []File{{filepath.Join(dir, "nope.py"), ssum}}, "nope.py"},
		{"directory", []File{{dir, ssum}}, "is a directory"},
		{"fifo does not block", []File{{fifo, ssum}}, "not a regular file"},
		{"pinned twice", []File{{script, ssum}, {filepath.Join(dir, ".", "main.py"), ssum}}, "pinned twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst, err := Launch(context.Background(), Config{Path: path, SHA256: sum, Files: tt.files, StartTimeout: 5 * time.Second}, discard())
			if err == nil {
				inst.Close()
				t.Fatal("launched")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
			if d := privateDirs(t, tmp); len(d) != 0 {
				t.Fatalf("private copies left after a refusal: %v", d)
			}
		})
	}
}

func TestPluginEnv(t *testing.T) {
	t.Setenv("LARK_APP_SECRET", "s")
	t.Setenv("HOME", "/home/core")
	t.Setenv("LC_TIME", "C")
	t.Setenv("FORWARDED", "f")
	env := pluginEnv([]string{"A=1", "FORWARDED", "ABSENT_VAR_XYZ", "HOME=/home/plugin"})
	for _, want := range []string{"A=1", "FORWARDED=f", "LC_TIME=C", "HOME=/home/plugin"} {
		if !slices.Contains(env, want) {
			t.Errorf("env %v lacks %s", env, want)
		}
	}
	// The configured HOME comes last, so it wins (exec keeps the last of
	// duplicate keys).
	if i, j := slices.Index(env, "HOME=/home/core"), slices.Index(env, "HOME=/home/plugin"); i > j {
		t.Errorf("configured HOME does not override the core's: %v", env)
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "LARK_APP_SECRET=") || strings.HasPrefix(kv, "ABSENT_VAR_XYZ") {
			t.Errorf("env has %s", kv)
		}
	}
}
