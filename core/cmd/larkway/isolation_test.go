package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/app"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/testenv"
)

// The secrets the core reads from its environment (every *_env key of the
// config) never reach a plugin it runs.
func TestCoreSecretsStayOutOfPlugins(t *testing.T) {
	secrets := map[string]string{
		"LARK_APP_SECRET":         "app-secret-must-not-leak",
		"LARK_VERIFICATION_TOKEN": "verification-token-must-not-leak",
		"LARK_ENCRYPT_KEY":        "encrypt-key-must-not-leak",
		"LARKWAY_ADMIN_TOKEN":     "admin-token-must-not-leak-0123456789",
		"LARKWAY_REDIS_PASSWORD":  "redis-password-must-not-leak",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	dir := t.TempDir()
	hostile := testenv.BuildPlugin(t, "./core/internal/pluginhost/testdata/hostile", dir)
	report := filepath.Join(dir, "env.json")
	cfg, err := config.Parse(strings.NewReader(fmt.Sprintf(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
apps:
  - id: cli_iso
    secret_env: LARK_APP_SECRET
    verification_token_env: LARK_VERIFICATION_TOKEN
    encrypt_key_env: LARK_ENCRYPT_KEY
    base_url: "http://127.0.0.1:1"
redis:
  password_env: LARKWAY_REDIS_PASSWORD
admin:
  listen: 127.0.0.1:0
  token_env: LARKWAY_ADMIN_TOKEN
plugins:
  - {name: hostile, path: %s, env: [HOSTILE_MODE=report-env, HOSTILE_REPORT=%s]}
`, hostile, report)))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Apps[0].Secret != secrets["LARK_APP_SECRET"] || cfg.Admin.Token != secrets["LARKWAY_ADMIN_TOKEN"] {
		t.Fatalf("secrets not read from the environment: %+v", cfg.Apps[0])
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.Build(ctx, cfg, app.Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: prometheus.NewRegistry(), Version: "test"})
	if err != nil {
		t.Fatalf("building the core: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("core: %v", err)
		}
	}()
	testenv.Eventually(t, 30*time.Second, "plugin not serving", a.PluginsServing)

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
	procEnv, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", rep.PID))
	if err != nil {
		t.Fatal(err)
	}
	for name, secret := range secrets {
		if strings.Contains(strings.Join(rep.Environ, "\n"), secret) {
			t.Errorf("the plugin sees %s's value in its environment", name)
		}
		if bytes.Contains(procEnv, []byte(secret)) {
			t.Errorf("/proc/%d/environ holds %s's value", rep.PID, name)
		}
		for _, kv := range rep.Environ {
			if strings.HasPrefix(kv, name+"=") {
				t.Errorf("the plugin has %s set", name)
			}
		}
	}
}
