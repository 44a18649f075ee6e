package deploytest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const (
	prometheusConfig = "deploy/prometheus/prometheus.yml"
	rulesFile        = "deploy/prometheus/rules/larkway.rules.yml"
	rulesTestFile    = "deploy/prometheus/rules/larkway.rules.test.yml"
	promtoolScript   = "scripts/promtool.sh"
)

// promtool returns the promtool binary: .tools/bin/promtool (what
// scripts/promtool.sh installs), else one on PATH. Missing, the test fails
// and says how to install it.
func promtool(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	bin := filepath.Join(root, ".tools", "bin", "promtool")
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
		var lerr error
		if bin, lerr = exec.LookPath("promtool"); lerr != nil {
			t.Fatalf("promtool is not installed (neither .tools/bin/promtool nor on PATH): run %s, which installs promtool %s into .tools/bin (a few minutes the first time, with only Go); `make test` puts .tools/bin on PATH",
				promtoolScript, pinnedPromtool(t))
		}
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, out)
	}
	if want := pinnedPromtool(t); !bytes.Contains(out, []byte("version "+want+" ")) {
		t.Logf("using %s, which is not the pinned promtool %s (run %s): %s", bin, want, promtoolScript, bytes.SplitN(out, []byte("\n"), 2)[0])
	}
	return bin
}

// pinnedPromtool is the version scripts/promtool.sh installs.
func pinnedPromtool(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^PROMTOOL_VERSION=(\S+)$`).FindSubmatch(readFile(t, promtoolScript))
	if m == nil {
		t.Fatalf("%s: no PROMTOOL_VERSION= line", promtoolScript)
	}
	return string(m[1])
}

// runPromtool runs promtool with args from the repository root.
func runPromtool(t *testing.T, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = repoRoot(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		return
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

// TestPromtool validates the Prometheus config and alert rules with
// promtool, and runs the rules' unit tests.
func TestPromtool(t *testing.T) {
	bin := promtool(t)
	runPromtool(t, bin, "check", "config", prometheusConfig)
	runPromtool(t, bin, "check", "rules", rulesFile)
	runPromtool(t, bin, "test", "rules", rulesTestFile)
}

// ruleFile is the part of a Prometheus rule file these tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// ruleTestFile is the part of a promtool rule test file these tests read.
type ruleTestFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name        string `yaml:"name"`
		InputSeries []struct {
			Series string `yaml:"series"`
		} `yaml:"input_series"`
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
		PromQLExprTest []struct {
			Expr string `yaml:"expr"`
		} `yaml:"promql_expr_test"`
	} `yaml:"tests"`
}

func loadYAML(t *testing.T, rel string, v any) {
	t.Helper()
	if err := yaml.Unmarshal(readFile(t, rel), v); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}

// TestAlertRulesConventions: every alert has a severity, a summary and a
// description, and a unit test in which it fires.
func TestAlertRulesConventions(t *testing.T) {
	var rules ruleFile
	loadYAML(t, rulesFile, &rules)
	var tests ruleTestFile
	loadYAML(t, rulesTestFile, &tests)
	if !slices.Contains(tests.RuleFiles, filepath.Base(rulesFile)) {
		t.Errorf("%s does not load %s", rulesTestFile, filepath.Base(rulesFile))
	}
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			}
		}
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, s)
			}
			for _, a := range []string{"summary", "description"} {
				if r.Annotations[a] == "" {
					t.Errorf("alert %s: no %s annotation", r.Alert, a)
				}
			}
			if !fires[r.Alert] {
				t.Errorf("alert %s: no test in %s where it fires", r.Alert, rulesTestFile)
			}
		}
	}
	if len(alerts) == 0 {
		t.Fatalf("%s has no alerts", rulesFile)
	}
	t.Logf("alerts: %s", strings.Join(alerts, ", "))
}
