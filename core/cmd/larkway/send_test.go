package main

import (
	"strings"
	"testing"

	"github.com/larkway/larkway/core/internal/apptest"
	"github.com/larkway/larkway/core/internal/config"
)

// send --encrypt-key posts what Lark posts to an app with an Encrypt Key,
// which a real core's ingest stores; without the key, or with a wrong one,
// the core refuses it.
func TestSendEncryptedToARealCore(t *testing.T) {
	cfg, err := config.Parse(strings.NewReader(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
apps:
  - {id: cli_enc, secret: s, verification_token: vt-enc, encrypt_key: ek-enc, base_url: "http://127.0.0.1:1"}
`))
	if err != nil {
		t.Fatal(err)
	}
	core := apptest.Start(t, cfg, nil)
	url := "http://" + core.Addr() + "/lark/events"

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"encrypted and signed", []string{"--encrypt-key", "ek-enc"}, 0, "200 OK"},
		{"again, fresh ids and nonce", []string{"--encrypt-key", "ek-enc", "--text", "second"}, 0, "200 OK"},
		{"wrong key", []string{"--encrypt-key", "ek-wrong"}, 1, "bad_signature"},
		{"plain to an encrypting app", nil, 1, "401"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"send", "--url", url, "--app", "cli_enc", "--token", "vt-enc"}, tt.args...)
			code, out, errOut := runCLI(t, args...)
			if code != tt.wantCode || !strings.Contains(out, tt.wantOut) {
				t.Fatalf("code %d (want %d)\nstdout: %s\nstderr: %s", code, tt.wantCode, out, errOut)
			}
		})
	}
}
