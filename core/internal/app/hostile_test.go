package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/larkway/larkway/core/internal/app"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
)

// Hostile plugins are contained: one floods results for unknown deliveries,
// one returns forbidden actions, one crashes on every delivery — and the
// echo plugin beside them answers every event exactly once.
func TestHostilePluginsAreContained(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	emu := larkemu.New(larkemu.Options{Apps: map[string]string{"cli_hostile": "secret"}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = emu.Serve(ctx, ln) }()
	dir := t.TempDir()
	echo := testenv.BuildPlugin(t, "./plugins/echo", dir)
	hostile := testenv.BuildPlugin(t, "./core/internal/pluginhost/testdata/hostile", dir)
	cfg, err := config.Parse(strings.NewReader(fmt.Sprintf(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
apps:
  - {id: cli_hostile, secret: secret, verification_token: vt, base_url: "http://%s"}
plugins:
  - {name: echo, path: %s}
  - {name: flood, path: %s, env: [HOSTILE_MODE=flood, HOSTILE_NAME=flood]}
  - {name: forbidden, path: %s, env: [HOSTILE_MODE=forbidden, HOSTILE_NAME=forbidden]}
  - {name: crasher, path: %s, env: [HOSTILE_MODE=crash, HOSTILE_NAME=crasher]}
dispatch:
  retry_backoff: 50ms
  deadline: 2s
supervision:
  restart_backoff: 20ms
  restart_backoff_max: 100ms
  quarantine_after: 3
`, ln.Addr(), echo, hostile, hostile, hostile)))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a, err := app.Build(context.Background(), cfg, app.Deps{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})), Registry: reg, Version: "test"})
	if err != nil {
		t.Fatalf("building the core: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	addr := a.Addr()
	testenv.Eventually(t, 30*time.Second, "core not ready", a.Ready)
	const n = 20
	for i := range n {
		body := messageEvent("cli_hostile", fmt.Sprintf("ev-%d", i), fmt.Sprintf("om_h_%d", i), fmt.Sprintf("oc_%d", i%4), fmt.Sprintf("msg %d", i))
		resp, err := http.Post("http://"+addr+"/lark/events", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("event %d: %d", i, resp.StatusCode)
		}
	}
	count := func(substr string) map[string]int {
		out := map[string]int{}
		for _, m := range emu.Messages() {
			if strings.Contains(m.Content, substr) {
				out[m.ParentID]++
			}
		}
		return out
	}
	testenv.Eventually(t, 60*time.Second, "echo and flood did not answer every event", func() bool {
		return len(count("echo: msg")) == n && len(count("hostile")) == n
	})
	for id, c := range count("echo: msg") {
		if c != 1 {
			t.Errorf("echo answered %s %d times", id, c)
		}
	}
	testenv.Eventually(t, 30*time.Second, "crasher not quarantined", func() bool {
		return gauge(t, reg, "larkway_plugin_state", map[string]string{"plugin": "crasher", "state": "quarantined"}) == 1
	})
	if refused := counter(t, reg, "larkway_action_executions_total", map[string]string{"plugin": "forbidden", "outcome": "refused"}); refused != n {
		t.Errorf("refused %v forbidden actions, want %d", refused, n)
	}
	if got := counter(t, reg, "larkway_dispatch_results_total", map[string]string{"plugin": "flood", "outcome": "unknown_result"}); got < 1000 {
		t.Errorf("unknown results counted: %v", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// metricValue sums get over the series of name whose labels include want.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string, get func(*dto.Metric) float64) float64 {
	t.Helper()
	var labels []string
	for k, v := range want {
		labels = append(labels, k, v)
	}
	sum := 0.0
	for _, m := range testenv.Series(t, reg, name, labels...) {
		sum += get(m)
	}
	return sum
}

func counter(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	return metricValue(t, reg, name, want, func(m *dto.Metric) float64 { return m.GetCounter().GetValue() })
}

func gauge(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	return metricValue(t, reg, name, want, func(m *dto.Metric) float64 { return m.GetGauge().GetValue() })
}
