package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/larkway/larkway/core/internal/testenv"
)

// serve --check hashes every enabled plugin's executable and pinned files
// as a launch would, and names the plugins[i] key of each problem.
func TestServeCheckPluginFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) (path, sum string) {
		path = filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o700); err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256([]byte(body))
		return path, hex.EncodeToString(s[:])
	}
	exe, exeSum := write("plugin", "#!/bin/sh\n")
	script, scriptSum := write("main.py", "print('hi')\n")
	_, otherSum := write("other", "other bytes")
	missing := filepath.Join(dir, "missing")
	// A bare name is looked up in $PATH, as the launcher does.
	t.Setenv("PATH", dir)

	plugin := func(name, path, sum string, files ...string) string {
		s := fmt.Sprintf("  - name: %s\n    path: %s\n", name, path)
		if sum != "" {
			s += "    sha256: " + sum + "\n"
		}
		if len(files) > 0 {
			s += "    files:\n"
			for i := 0; i < len(files); i += 2 {
				s += fmt.Sprintf("      - {path: %s, sha256: %s}\n", files[i], files[i+1])
			}
		}
		return s
	}
	pki := testenv.NewPKI(t)
	coreCert, coreKey := pki.Issue(t, testenv.Cert{})
	remote := func(name, ca, cert, key string) string {
		return fmt.Sprintf("  - name: %s\n    remote: {address: '127.0.0.1:1', tls: {ca_file: %s, cert_file: %s, key_file: %s}}\n", name, ca, cert, key)
	}
	tests := []struct {
		name     string
		plugins  string
		wantCode int
		want     []string // substrings of stderr (all must appear)
	}{
		{"pinned and matching", plugin("a", exe, exeSum, script, scriptSum), 0, nil},
		{"unpinned but present", plugin("a", exe, ""), 0, nil},
		{"found in PATH", plugin("a", "plugin", exeSum), 0, nil},
		{"disabled is not checked", plugin("a", missing, exeSum) + "    disabled: true\n", 0, nil},
		{"missing executable", plugin("a", exe, exeSum) + plugin("b", missing, exeSum), 1,
			[]string{"plugins[1].path:", missing, "no such file"}},
		{"not in PATH", plugin("a", "no-such-plugin", ""), 1, []string{"plugins[0].path:", "no-such-plugin"}},
		{"executable changed", plugin("a", exe, otherSum), 1,
			[]string{"plugins[0].path: plugin checksum mismatch: file " + exe, "expected sha256 " + otherSum, "actual " + exeSum}},
		{"pinned file changed", plugin("a", exe, exeSum, script, otherSum), 1,
			[]string{"plugins[0].files[0]: plugin checksum mismatch: file " + script}},
		{"pinned file missing", plugin("a", exe, exeSum, script, scriptSum, missing, scriptSum), 1,
			[]string{"plugins[0].files[1]:", missing}},
		{"a directory", plugin("a", dir, ""), 1, []string{"plugins[0].path:", "is a directory"}},
		{"every problem reported", plugin("a", missing, "") + plugin("b", exe, otherSum), 1,
			[]string{"plugins[0].path:", "plugins[1].path:"}},
		{"remote TLS files load", remote("r", pki.CAFile, coreCert, coreKey), 0, nil},
		{"remote key missing", plugin("a", exe, exeSum) + remote("r", pki.CAFile, coreCert, missing), 1,
			[]string{"plugins[1].remote.tls:", missing}},
		{"remote CA not PEM", remote("r", exe, coreCert, coreKey), 1, []string{"plugins[0].remote.tls:", "no PEM certificate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := writeConfig(t, validConfig+"plugins:\n"+tt.plugins)
			code, out, errOut := runCLI(t, "serve", "--check", "--config", cfg)
			if code != tt.wantCode {
				t.Fatalf("code %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, out, errOut)
			}
			if tt.wantCode == 0 && !strings.Contains(out, ": ok (") {
				t.Fatalf("stdout %q", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Fatalf("stderr lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
}
