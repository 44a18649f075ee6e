package deploytest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/larkway/larkway/core/internal/app"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
)

const grafanaDir = "deploy/grafana"

// wantDashboards are the dashboards deploy/ ships.
var wantDashboards = []string{"overview.json", "plugins.json", "lark-api.json"}

// promql is one PromQL expression found in deploy/.
type promql struct {
	where string // file and location
	expr  string
	// series: expr is a series selector from a rule test, not a query.
	series bool
}

// TestMetricNamesAreRegistered starts a real core (memory bus, the echo
// plugin, an app pointed at the Lark emulator), posts an event through it,
// and checks that every metric the alert rules, their tests and the
// dashboards name is one the core registers, and that the labels they
// match on and group by are labels those metrics carry (or that the
// Prometheus scrape config adds).
//
// Names and labels come from the PromQL parser (github.com/prometheus/
// prometheus/promql/parser), not a regular expression: it finds every
// vector selector, also in nested and binary expressions, and does not
// mistake functions, keywords (by, on, ignoring), label names or strings
// for metrics.
func TestMetricNamesAreRegistered(t *testing.T) {
	exprs := collectPromQL(t)
	scrape := scrapeLabels(t)
	if t.Failed() {
		return
	}
	type parsedExpr struct {
		q    promql
		refs *promqlRefs
	}
	var parsed []parsedExpr
	used := map[string][]string{} // metric → where
	for _, q := range exprs {
		refs, err := parseRefs(q)
		if err != nil {
			t.Errorf("%s: %v\n\t%s", q.where, err, q.expr)
			continue
		}
		parsed = append(parsed, parsedExpr{q, refs})
		for _, sel := range refs.selectors {
			used[sel.name] = append(used[sel.name], q.where)
		}
	}
	if t.Failed() {
		return
	}

	known := startCore(t)
	names := make([]string, 0, len(used))
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ok, note := known.has(n)
		if !ok {
			t.Errorf("metric %s is not registered by the core (%s); used in:\n\t%s", n, note, strings.Join(slices.Compact(used[n]), "\n\t"))
			continue
		}
		if note != "" {
			t.Logf("%s: %s", n, note)
		}
	}
	// Labels, for the metrics this run exposed series of.
	for _, p := range parsed {
		for _, sel := range p.refs.selectors {
			have, ok := known.labels[sel.name]
			if !ok {
				continue
			}
			for _, l := range sel.labels {
				if !have[l] && !scrape[l] {
					t.Errorf("%s: %s has no label %q (it has %s; the scrape adds %s)\n\t%s",
						p.q.where, sel.name, l, setString(have), setString(scrape), p.q.expr)
				}
			}
		}
		for _, g := range p.refs.groupings {
			avail := map[string]bool{}
			complete := true
			for _, n := range g.names {
				have, ok := known.labels[n]
				complete = complete && ok
				for l := range have {
					avail[l] = true
				}
			}
			if !complete {
				continue
			}
			for _, l := range g.labels {
				if !avail[l] && !scrape[l] {
					t.Errorf("%s: groups by %q, a label none of %s carries\n\t%s", p.q.where, l, strings.Join(g.names, ", "), p.q.expr)
				}
			}
		}
	}
	t.Logf("metrics named by deploy/ (%d): %s", len(names), strings.Join(names, " "))
}

func setString(m map[string]bool) string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return "{" + strings.Join(out, ", ") + "}"
}

// scrapeLabels are the target labels deploy/prometheus/prometheus.yml adds
// to every series it scrapes (relabel target_label), plus job and instance.
func scrapeLabels(t *testing.T) map[string]bool {
	t.Helper()
	var cfg struct {
		ScrapeConfigs []struct {
			JobName        string `yaml:"job_name"`
			RelabelConfigs []struct {
				TargetLabel string `yaml:"target_label"`
			} `yaml:"relabel_configs"`
		} `yaml:"scrape_configs"`
	}
	loadYAML(t, prometheusConfig, &cfg)
	out := map[string]bool{"job": true, "instance": true}
	for _, sc := range cfg.ScrapeConfigs {
		if sc.JobName != "larkway" {
			continue
		}
		for _, rc := range sc.RelabelConfigs {
			if rc.TargetLabel != "" && !strings.HasPrefix(rc.TargetLabel, "__") {
				out[rc.TargetLabel] = true
			}
		}
		return out
	}
	t.Errorf("%s: no scrape job named larkway", prometheusConfig)
	return out
}

// collectPromQL gathers every PromQL expression of the alert rules, their
// unit tests and the dashboards.
func collectPromQL(t *testing.T) []promql {
	t.Helper()
	var out []promql
	var rules ruleFile
	loadYAML(t, rulesFile, &rules)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out = append(out, promql{where: fmt.Sprintf("%s: group %s, %s%s", rulesFile, g.Name, r.Alert, r.Record), expr: r.Expr})
		}
	}
	var tests ruleTestFile
	loadYAML(t, rulesTestFile, &tests)
	for _, tc := range tests.Tests {
		for _, s := range tc.InputSeries {
			out = append(out, promql{where: rulesTestFile + ": test " + tc.Name + ", input series", expr: s.Series, series: true})
		}
		for _, e := range tc.PromQLExprTest {
			out = append(out, promql{where: rulesTestFile + ": test " + tc.Name + ", promql_expr_test", expr: e.Expr})
		}
	}

	root := repoRoot(t)
	var files []string
	_ = filepath.WalkDir(filepath.Join(root, grafanaDir), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return err
	})
	for _, want := range wantDashboards {
		if !slices.Contains(files, grafanaDir+"/"+want) {
			t.Errorf("%s/%s is missing", grafanaDir, want)
		}
	}
	uids := map[string]string{}
	for _, f := range files {
		if path.Ext(f) != ".json" {
			t.Errorf("%s: only Grafana dashboards (.json) belong in %s", f, grafanaDir)
			continue
		}
		d := dashboard(t, f)
		if d == nil {
			continue
		}
		if prev, dup := uids[d.UID]; dup {
			t.Errorf("%s: uid %q is also %s's", f, d.UID, prev)
		}
		uids[d.UID] = f
		out = append(out, d.queries(t, f)...)
	}
	return out
}

// grafanaDashboard is the part of a Grafana dashboard JSON model these
// tests check.
type grafanaDashboard struct {
	UID           string         `json:"uid"`
	Title         string         `json:"title"`
	SchemaVersion int            `json:"schemaVersion"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"` // a string, or {"query": "..."}
		} `json:"list"`
	} `json:"templating"`
}

type grafanaPanel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	GridPos    *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // a collapsed row's panels
}

// dashboard decodes and checks one dashboard file.
func dashboard(t *testing.T, rel string) *grafanaDashboard {
	t.Helper()
	var d grafanaDashboard
	if err := json.Unmarshal(readFile(t, rel), &d); err != nil {
		t.Errorf("%s: not a JSON dashboard: %v", rel, err)
		return nil
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 || len(d.Panels) == 0 {
		t.Errorf("%s: want a uid, a title, a schemaVersion and panels", rel)
	}
	return &d
}

// queries returns the dashboard's PromQL: panel targets and the template
// variables' queries. It checks panel ids, positions and data sources.
func (d *grafanaDashboard) queries(t *testing.T, rel string) []promql {
	t.Helper()
	hasDS := slices.ContainsFunc(d.Templating.List, func(v struct {
		Name  string `json:"name"`
		Type  string `json:"type"`
		Query any    `json:"query"`
	}) bool {
		return v.Type == "datasource" && v.Name == "datasource"
	})
	if !hasDS {
		t.Errorf("%s: want a data source variable named datasource, so the dashboard imports anywhere", rel)
	}
	var out []promql
	ids := map[int]bool{}
	var walk func(ps []grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			where := fmt.Sprintf("%s: panel %d %q", rel, p.ID, p.Title)
			if ids[p.ID] {
				t.Errorf("%s: id %d is used twice", where, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: want a gridPos within 24 columns", where)
			}
			if p.Type != "row" {
				if !strings.Contains(string(p.Datasource), "${datasource}") {
					t.Errorf("%s: data source must be ${datasource}", where)
				}
				if len(p.Targets) == 0 {
					t.Errorf("%s: no query", where)
				}
			}
			for _, tg := range p.Targets {
				if tg.Expr == "" || tg.RefID == "" {
					t.Errorf("%s: every target needs a refId and an expr", where)
					continue
				}
				out = append(out, promql{where: where + " target " + tg.RefID, expr: tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		where := fmt.Sprintf("%s: variable %s", rel, v.Name)
		e, err := variableQuery(q)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		if e != "" {
			out = append(out, promql{where: where, expr: e})
		}
	}
	return out
}

// variableQuery returns the PromQL inside a Grafana Prometheus variable
// query: label_values(SELECTOR, label) or query_result(EXPR).
func variableQuery(q string) (string, error) {
	q = strings.TrimSpace(q)
	switch {
	case strings.HasPrefix(q, "label_values(") && strings.HasSuffix(q, ")"):
		args := strings.TrimSuffix(strings.TrimPrefix(q, "label_values("), ")")
		i := strings.LastIndex(args, ",")
		if i < 0 {
			return "", nil // label_values(label): no metric
		}
		return strings.TrimSpace(args[:i]), nil
	case strings.HasPrefix(q, "query_result(") && strings.HasSuffix(q, ")"):
		return strings.TrimSuffix(strings.TrimPrefix(q, "query_result("), ")"), nil
	}
	return "", fmt.Errorf("variable query %q: want label_values(...) or query_result(...)", q)
}

// grafanaRange matches Grafana's interval variables, which stand where
// PromQL wants a duration.
var grafanaRange = regexp.MustCompile(`\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}`)

// promqlRefs is what a PromQL expression refers to.
type promqlRefs struct {
	selectors []selectorRef
	groupings []groupingRef
}

// selectorRef is a vector selector: a metric and the labels it matches on.
type selectorRef struct {
	name   string
	labels []string
}

// groupingRef is an aggregation's by (...) labels and the metrics inside it.
type groupingRef struct {
	labels []string
	names  []string
}

// parseRefs parses q with the PromQL parser. Grafana's interval variables
// become 5m; other variables may appear only inside label matcher strings.
func parseRefs(q promql) (*promqlRefs, error) {
	text := grafanaRange.ReplaceAllString(q.expr, "5m")
	if q.series {
		ms, err := parser.ParseMetricSelector(text)
		if err != nil {
			return nil, fmt.Errorf("not a series selector: %w", err)
		}
		sel, err := selectorOf(ms)
		if err != nil {
			return nil, err
		}
		return &promqlRefs{selectors: []selectorRef{sel}}, nil
	}
	e, err := parser.ParseExpr(text)
	if err != nil {
		return nil, fmt.Errorf("not PromQL: %w", err)
	}
	refs := &promqlRefs{}
	var selErr error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			sel, err := selectorOf(n.LabelMatchers)
			if err != nil {
				selErr = err
			}
			refs.selectors = append(refs.selectors, sel)
		case *parser.AggregateExpr:
			if n.Without || len(n.Grouping) == 0 {
				break
			}
			g := groupingRef{labels: n.Grouping}
			parser.Inspect(n.Expr, func(m parser.Node, _ []parser.Node) error {
				if vs, ok := m.(*parser.VectorSelector); ok {
					if sel, err := selectorOf(vs.LabelMatchers); err == nil {
						g.names = append(g.names, sel.name)
					}
				}
				return nil
			})
			refs.groupings = append(refs.groupings, g)
		}
		return nil
	})
	if selErr != nil {
		return nil, selErr
	}
	if len(refs.selectors) == 0 {
		return nil, errors.New("names no metric")
	}
	return refs, nil
}

// selectorOf returns the metric a selector matches exactly and the labels
// it matches on; a selector without a metric name (or with a regular
// expression on __name__) cannot be checked.
func selectorOf(ms []*labels.Matcher) (selectorRef, error) {
	var sel selectorRef
	for _, m := range ms {
		if m.Name != labels.MetricName {
			sel.labels = append(sel.labels, m.Name)
			continue
		}
		if m.Type != labels.MatchEqual {
			return sel, fmt.Errorf("selector %s: name the metric exactly", m)
		}
		sel.name = m.Value
	}
	if sel.name == "" {
		return sel, errors.New("a selector without a metric name")
	}
	return sel, nil
}

// registered is what a running core exposes.
type registered struct {
	reg      *prometheus.Registry
	series   map[string]bool            // sample names in /metrics: counters, gauges, x_bucket, x_sum, x_count
	families map[string]dto.MetricType  // metric families with at least one series
	labels   map[string]map[string]bool // sample name → its label names
}

// has reports whether the core exposes the series name. A family without
// a series yet (a vector none of whose labels has been used, such as the
// dead letters counter when nothing was dead-lettered) does not appear in
// Gather; for those, the registry is asked directly: registering a probe
// collector of that name fails exactly when one is registered.
func (r *registered) has(name string) (bool, string) {
	if r.series[name] {
		return true, ""
	}
	if typ, ok := r.families[name]; ok {
		return false, fmt.Sprintf("a %s: query %s_bucket, %s_sum or %s_count", strings.ToLower(typ.String()), name, name, name)
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if typ, ok := r.families[base]; ok {
				return false, fmt.Sprintf("%s is a %s, which has no %s series", base, strings.ToLower(typ.String()), suffix)
			}
		}
	}
	if probeRegistered(r.reg, name) {
		return true, "registered; no series yet in this run"
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && probeRegistered(r.reg, base) {
			return true, base + " is registered; no series yet in this run, so its type is unchecked"
		}
	}
	return false, "not in the registry"
}

var metricNameRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

// probeRegistered reports whether a collector of reg describes a metric
// named name.
func probeRegistered(reg *prometheus.Registry, name string) bool {
	if !metricNameRE.MatchString(name) {
		return false
	}
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "deploytest probe"})
	if err := reg.Register(probe); err != nil {
		return true // a descriptor of that name exists
	}
	reg.Unregister(probe)
	return false
}

// startCore runs a core in-process as `larkway serve` would, passes one
// message event and one rejected request through it, stops it, and
// returns what its registry holds.
func startCore(t *testing.T) *registered {
	t.Helper()
	const appID = "cli_deploytest"
	emu := larkemu.New(larkemu.Options{Apps: map[string]string{appID: "secret"}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	emuDone := make(chan error, 1)
	go func() { emuDone <- emu.Serve(ctx, ln) }()

	echo := testenv.BuildPlugin(t, "./plugins/echo", t.TempDir())
	cfg, err := config.Parse(strings.NewReader(fmt.Sprintf(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
bus:
  kind: memory
admin:
  listen: 127.0.0.1:0
  token: deploytest-admin-token
apps:
  - id: %s
    secret: secret
    verification_token: vt
    base_url: http://%s
plugins:
  - name: echo
    path: %s
`, appID, ln.Addr(), echo)))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	// What `larkway serve` adds to the registry it hands the app
	// (core/cmd/larkway/serve.go).
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a, err := app.Build(context.Background(), cfg, app.Deps{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})), Registry: reg, Version: "deploytest"})
	if err != nil {
		t.Fatalf("building the core: %v", err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-runDone; err != nil {
				t.Errorf("core stopped with %v", err)
			}
			if err := <-emuDone; err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, context.Canceled) {
				t.Errorf("emulator: %v", err)
			}
		})
	}
	t.Cleanup(stop)

	addr := a.Addr()
	testenv.Eventually(t, 60*time.Second, "core never became ready", func() bool { return a.Ready() && a.PluginsServing() })

	post := func(body string) int {
		resp, err := http.Post("http://"+addr+"/lark/events", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	event := func(token string) string {
		return fmt.Sprintf(`{"schema":"2.0","header":{"event_id":"ev-deploytest-%s","token":%q,"create_time":"1700000000000","event_type":"im.message.receive_v1","tenant_key":"t","app_id":%q},
"event":{"sender":{"sender_id":{"open_id":"ou_1"},"sender_type":"user"},"message":{"message_id":"om_deploytest","chat_id":"oc_deploytest","chat_type":"group","message_type":"text","content":"{\"text\":\"hello\"}"}}}`,
			token, token, appID)
	}
	if code := post(event("vt")); code != http.StatusOK {
		t.Fatalf("webhook answered %d to a valid event", code)
	}
	testenv.Eventually(t, 30*time.Second, "the echo plugin's reply never reached the emulator", func() bool { return len(emu.Messages()) > 0 })
	if code := post(event("wrong-token")); code != http.StatusUnauthorized {
		t.Errorf("webhook answered %d to a wrong token, want 401", code)
	}
	// Gather while running (scrape-time collectors such as the backlog
	// read the bus) and again after the ordered drain (final counters).
	running, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	stop()
	stopped, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	r := &registered{reg: reg, series: map[string]bool{}, families: map[string]dto.MetricType{}, labels: map[string]map[string]bool{}}
	add := func(name string, m *dto.Metric, extra ...string) {
		r.series[name] = true
		if r.labels[name] == nil {
			r.labels[name] = map[string]bool{}
		}
		for _, lp := range m.GetLabel() {
			r.labels[name][lp.GetName()] = true
		}
		for _, l := range extra {
			r.labels[name][l] = true
		}
	}
	for _, mf := range append(running, stopped...) {
		n := mf.GetName()
		r.families[n] = mf.GetType()
		for _, m := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				add(n+"_bucket", m, "le")
				add(n+"_sum", m)
				add(n+"_count", m)
			case dto.MetricType_SUMMARY:
				add(n, m, "quantile")
				add(n+"_sum", m)
				add(n+"_count", m)
			default:
				add(n, m)
			}
		}
	}
	var larkway []string
	for n := range r.families {
		if strings.HasPrefix(n, "larkway_") {
			larkway = append(larkway, n)
		}
	}
	sort.Strings(larkway)
	t.Logf("the core exposed %d metric families; larkway_* with series: %s", len(r.families), strings.Join(larkway, " "))
	return r
}
