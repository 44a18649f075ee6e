package app_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/larkway/larkway/core/internal/apptest"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/testenv"
)

// documentedMetrics reads the metric names from docs/operations.md.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(testenv.ModuleRoot(t), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	re := regexp.MustCompile("^\\| `(larkway_[a-z_]+)` \\|")
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			names = append(names, m[1])
		}
	}
	if len(names) < 15 {
		t.Fatalf("only %d metrics documented", len(names))
	}
	return names
}

// After an end-to-end run on Pulsar and Redis, /metrics has every documented
// metric, with plausible values.
func TestMetricsAfterEndToEnd(t *testing.T) {
	t.Parallel()
	appID := uniqueApp(t, "metrics")
	emu, emuAddr := emulator(t, appID)
	echo := testenv.BuildPlugin(t, "./plugins/echo", t.TempDir())
	c := runCore(t, clusterYAML(t, appID, emuAddr, appID+":", "r0", fmt.Sprintf("  - {name: echo, path: %s}", echo)))
	body := messageEvent(appID, "ev_m1", "om_m1", "oc_m", "metrics")
	for range 2 { // the second is a Lark re-push: a dedup hit
		if code, err := c.post(body); err != nil || code != 200 {
			t.Fatalf("post %d %v", code, err)
		}
	}
	if code, _ := c.post(`{"schema":"2.0","header":{"token":"forged"}}`); code != 401 {
		t.Fatalf("forged event: %d", code)
	}
	testenv.Eventually(t, 30*time.Second, "no reply", func() bool { return len(emu.Messages()) == 1 })
	// Whoever reaches the webhook learns nothing from metric labels: the
	// Lark-facing listener has no /metrics, the metrics listener has.
	for _, path := range []string{"/metrics", "/metrics/", "/Metrics"} {
		resp, err := http.Get("http://" + c.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || strings.Contains(string(b), "larkway_") {
			t.Errorf("GET %s on the webhook listener: %d %q, want 404 and no metrics", path, resp.StatusCode, b)
		}
	}
	var families map[string]*dto.MetricFamily
	testenv.Eventually(t, 30*time.Second, "dedup hit not counted", func() bool {
		families = scrape(t, c.metrics)
		return sum(families["larkway_dispatch_dedup_hits_total"], "state", "done") >= 1
	})
	// Series of a feature this core does not configure; each is checked
	// where the feature runs.
	elsewhere := map[string]string{
		"larkway_plugin_remote_instances": "TestRemotePluginsOverMTLS",
	}
	for _, name := range documentedMetrics(t) {
		if _, ok := elsewhere[name]; ok {
			continue
		}
		if families[name] == nil {
			t.Errorf("documented metric %s is not exported", name)
		}
	}
	checks := []struct {
		what string
		ok   bool
	}{
		{"one stored event per post", sum(families["larkway_ingest_requests_total"], "outcome", "stored") == 2},
		{"the forged event rejected", sum(families["larkway_ingest_rejections_total"], "reason", "unauthenticated") == 1},
		{"publish latency observed", histCount(families["larkway_ingest_publish_duration_seconds"]) == 2},
		{"one delivery done", sum(families["larkway_dispatch_results_total"], "outcome", "done") == 1},
		{"plugin latency observed", histCount(families["larkway_dispatch_plugin_duration_seconds"]) >= 1},
		{"echo serving", sum(families["larkway_plugin_state"], "state", "serving") == 1},
		{"one reply executed", sum(families["larkway_action_executions_total"], "outcome", "done") == 1},
		{"a token fetched", sum(families["larkway_lark_token_fetches_total"], "", "") >= 1},
		{"nothing dead-lettered", sum(families["larkway_dispatch_dead_letters_total"], "", "") == 0},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("implausible metrics: %s", c.what)
		}
	}
	// Acks reach the broker's stats shortly after the reply.
	testenv.Eventually(t, 30*time.Second, "backlog never drained to 0", func() bool {
		f := scrape(t, c.metrics)["larkway_dispatch_backlog_messages"]
		return f != nil && sum(f, "", "") == 0 && sum(scrape(t, c.metrics)["larkway_dispatch_backlog_scrape_errors"], "", "") == 0
	})
}

func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// sum adds the samples whose label equals value ("" label: all samples).
func sum(mf *dto.MetricFamily, label, value string) float64 {
	total := 0.0
	for _, m := range mf.GetMetric() {
		if label != "" {
			match := false
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					match = true
				}
			}
			if !match {
				continue
			}
		}
		total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return total
}

func histCount(mf *dto.MetricFamily) uint64 {
	var n uint64
	for _, m := range mf.GetMetric() {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

// Right after the core starts, before any event, the action counters the
// dashboards query exist at 0 for every configured app and plugin, so
// their panels read 0 rather than "No data".
func TestActionCountersExistAtZero(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse(strings.NewReader(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
apps:
  - {id: cli_zero_a, secret: s, verification_token: vt, base_url: "http://127.0.0.1:1"}
  - {id: cli_zero_b, secret: s, verification_token: vt, base_url: "http://127.0.0.1:1", event_path: /lark/b}
plugins:
  - {name: quiet, path: /nonexistent/quiet, disabled: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	a := apptest.Start(t, cfg, nil)
	fams := scrape(t, a.MetricsAddr())
	for _, c := range []struct{ family, label, value string }{
		{"larkway_action_retries_total", "app_id", "cli_zero_a"},
		{"larkway_action_retries_total", "app_id", "cli_zero_b"},
		{"larkway_action_ratelimit_throttled_total", "app_id", "cli_zero_a"},
		{"larkway_action_ratelimit_throttled_total", "app_id", "cli_zero_b"},
		{"larkway_action_executions_total", "plugin", "quiet"},
		{"larkway_action_failed_total", "plugin", "quiet"},
		{"larkway_action_fallback_replies_total", "plugin", "quiet"},
	} {
		n := 0
		for _, m := range fams[c.family].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == c.label && l.GetValue() == c.value {
					n++
					if v := m.GetCounter().GetValue(); v != 0 {
						t.Errorf("%s{%s=%q} = %v before any event", c.family, c.label, c.value, v)
					}
				}
			}
		}
		if n == 0 {
			t.Errorf("%s has no series with %s=%q before its first increment", c.family, c.label, c.value)
		}
	}
}
