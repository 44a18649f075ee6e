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
		{"version", []string{"version"}, 0, "larkway dev", ""},
		{"help", []string{"help"}, 0, "Usage:", ""},
		{"serve without config", []string{"serve"}, 2, "", "--config is required"},
		{"serve unknown flag", []string{"serve", "--nope"}, 2, "", "flag provided but not defined"},
		{"serve stray arg", []string{"serve", "--config", "x", "extra"}, 2, "", `unexpected argument "extra"`},
		{"serve missing file", []string{"serve", "--config", "/nonexistent/larkway.yaml"}, 1, "", "reading config"},
		{"serve check ok", []string{"serve", "--check", "--config", "VALID"}, 0, "ok (1 apps, 0 plugins, bus embedded)", ""},
		{"serve unknown key", []string{"serve", "--check", "--config", "UNKNOWN"}, 1, "", `unknown key "listn" (did you mean "listen"?)`},
		{"serve invalid", []string{"serve", "--check", "--config", "INVALID"}, 1, "", "bus.kind"},
		{"serve help", []string{"serve", "-h"}, 0, "", "-config"},
		{"emulator bad flag", []string{"emulator", "--port", "1"}, 2, "", "flag provided but not defined"},
		{"send bad url", []string{"send", "--url", "::not a url"}, 2, "", "--url"},
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
		})
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
