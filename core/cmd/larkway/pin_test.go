package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/larkway/larkway/core/internal/config"
)

func sumOf(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// pasted is the pin command's output pasted into a plugin entry, loaded
// as the core loads its config.
func pasted(t *testing.T, out string) config.Plugin {
	t.Helper()
	var entry strings.Builder
	entry.WriteString(validConfig + "plugins:\n  - name: p\n    path: x\n")
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		entry.WriteString("    " + l + "\n")
	}
	c, err := config.Parse(strings.NewReader(entry.String()))
	if err != nil {
		t.Fatalf("the printed pins do not load: %v\n%s", err, entry.String())
	}
	return c.Plugins[0]
}

func TestPluginPin(t *testing.T) {
	dir := t.TempDir()
	interp := filepath.Join(dir, "bin", "interp")
	script := filepath.Join(dir, "main.py")
	module := filepath.Join(dir, "lib #1: yes.py") // needs quoting in YAML
	for p, body := range map[string]string{interp: "#!/bin/sh\n", script: "print('main')\n", module: "X = 1\n"} {
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", filepath.Dir(interp))

	t.Run("executable and scripts", func(t *testing.T) {
		code, out, errOut := runCLI(t, "plugin", "pin", interp, script, module)
		if code != 0 {
			t.Fatalf("code %d: %s", code, errOut)
		}
		p := pasted(t, out)
		if p.SHA256 != sumOf(t, interp) || len(p.Files) != 2 ||
			p.Files[0] != (config.PluginFile{Path: script, SHA256: sumOf(t, script)}) ||
			p.Files[1] != (config.PluginFile{Path: module, SHA256: sumOf(t, module)}) {
			t.Fatalf("pins %+v from\n%s", p, out)
		}
	})
	t.Run("executable found in PATH", func(t *testing.T) {
		code, out, errOut := runCLI(t, "plugin", "pin", "interp")
		if code != 0 || !strings.Contains(out, "# "+interp) {
			t.Fatalf("code %d: %s %s", code, out, errOut)
		}
		if p := pasted(t, out); p.SHA256 != sumOf(t, interp) || len(p.Files) != 0 {
			t.Fatalf("pins %+v", p)
		}
	})
	t.Run("files only", func(t *testing.T) {
		code, out, errOut := runCLI(t, "plugin", "pin", script, "--files-only")
		if code != 0 {
			t.Fatalf("code %d: %s", code, errOut)
		}
		if p := pasted(t, out); p.SHA256 != "" || len(p.Files) != 1 || p.Files[0].SHA256 != sumOf(t, script) {
			t.Fatalf("pins %+v", p)
		}
	})

	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"no path", nil, 2, "missing argument EXECUTABLE"},
		{"unknown flag", []string{interp, "--sha"}, 2, "unknown flag: --sha"},
		// The admin API flags are plugin's, but pin runs locally.
		{"admin flag", []string{interp, "--admin", "http://127.0.0.1:8092"}, 2, "--admin: plugin pin runs locally"},
		{"missing executable", []string{filepath.Join(dir, "nope")}, 1, filepath.Join(dir, "nope") + ": no such file"},
		{"not in PATH", []string{"no-such-interpreter"}, 1, "no-such-interpreter"},
		{"missing script", []string{interp, filepath.Join(dir, "gone.py")}, 1, filepath.Join(dir, "gone.py") + ": no such file"},
		{"directory", []string{interp, dir}, 1, dir + " is a directory"},
		{"fifo", []string{interp, fifo}, 1, fifo + " is not a regular file"},
		// Root reads any file whatever its mode; this one fails to read
		// for everyone.
		{"unreadable", []string{interp, "/proc/self/mem"}, 1, "read /proc/self/mem: input/output error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, append([]string{"plugin", "pin"}, tt.args...)...)
			if code != tt.code || !strings.Contains(errOut, tt.err) {
				t.Fatalf("code %d (want %d)\nstdout %s\nstderr %s", code, tt.code, out, errOut)
			}
			if out != "" {
				t.Fatalf("printed pins despite the error:\n%s", out)
			}
		})
	}
}

// An admin swap carries the new version's pinned files; the core checks
// them before anything runs.
func TestSwapCarriesPinnedFiles(t *testing.T) {
	url, echo := startCore(t)
	c, err := newAdminClient(url, adminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Pinned files, like the executable, must be in the plugin's directory.
	outside := filepath.Join(t.TempDir(), "data.txt")
	if err := os.WriteFile(outside, []byte("v2 data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = c.call(context.Background(), http.MethodPost, "/v1/plugins/echo/swap", map[string]any{"path": echo, "sha256": sumOf(t, echo),
		"files": []map[string]string{{"path": outside, "sha256": sumOf(t, outside)}}}, nil)
	if err == nil || !strings.Contains(err.Error(), "path_not_allowed") {
		t.Fatalf("swap pinning a file outside the plugin directory: %v", err)
	}
	data := filepath.Join(filepath.Dir(echo), "data.txt")
	if err := os.WriteFile(data, []byte("v2 data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	swap := func(fileSum string) error {
		return c.call(context.Background(), http.MethodPost, "/v1/plugins/echo/swap", map[string]any{"path": echo, "sha256": sumOf(t, echo),
			"files": []map[string]string{{"path": data, "sha256": fileSum}}}, nil)
	}
	wrong := strings.Repeat("0", 64)
	err = swap(wrong)
	if err == nil || !strings.Contains(err.Error(), "rolled_back") || !strings.Contains(err.Error(), data) ||
		!strings.Contains(err.Error(), fmt.Sprintf("expected sha256 %s, actual %s", wrong, sumOf(t, data))) {
		t.Fatalf("swap with a wrong file pin: %v", err)
	}
	if err := swap(sumOf(t, data)); err != nil {
		t.Fatalf("swap: %v", err)
	}
	code, out, _ := runCLI(t, "plugin", "describe", "echo", "--admin", url, "--token", adminToken)
	if code != 0 || !strings.Contains(out, `"path": "`+data+`"`) {
		t.Fatalf("describe after the swap does not show the pinned file: %s", out)
	}
}
