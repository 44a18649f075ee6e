package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Meta says where and when a report was measured.
type Meta struct {
	Date       string `json:"date"`
	Commit     string `json:"commit"`
	Dirty      bool   `json:"dirty"`
	Version    string `json:"version"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
	CPU        string `json:"cpu"`
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	MemoryMB   int    `json:"memory_mb"`
	Kernel     string `json:"kernel"`
	// LoadStart and LoadEnd are /proc/loadavg when the bench began and
	// ended: anything else running on the machine skews every figure.
	LoadStart string `json:"loadavg_start"`
	LoadEnd   string `json:"loadavg_end"`
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// Figure is one measured quantity over the runs.
type Figure struct {
	Key    string    `json:"key"`
	Label  string    `json:"label"`
	Unit   string    `json:"unit"`
	Runs   []float64 `json:"runs"`
	Median float64   `json:"median"`
	// Detail is the last run's full measurement.
	Detail any `json:"detail,omitempty"`
}

// Ratio is Num / Den, computed within each run; Median is over the runs.
type Ratio struct {
	Key    string    `json:"key"`
	Label  string    `json:"label"`
	Num    string    `json:"num"`
	Den    string    `json:"den"`
	Runs   []float64 `json:"runs"`
	Median float64   `json:"median"`
	// Goal, if not zero, is the least acceptable median.
	Goal   float64 `json:"goal,omitempty"`
	Issues string  `json:"issues,omitempty"`
	Met    *bool   `json:"met,omitempty"`
}

// Check is an absolute goal.
type Check struct {
	Label  string  `json:"label"`
	Figure string  `json:"figure"`
	Value  float64 `json:"value"`
	Limit  string  `json:"limit"`
	Issues string  `json:"issues"`
	Met    bool    `json:"met"`
}

// Report is a bench's result.
type Report struct {
	Meta     Meta           `json:"meta"`
	Settings map[string]any `json:"settings"`
	Figures  []*Figure      `json:"figures"`
	Ratios   []*Ratio       `json:"ratios"`
	Checks   []Check        `json:"checks"`
	Notes    []string       `json:"notes,omitempty"`

	byKey map[string]*Figure
}

func newReport(o Options) *Report {
	return &Report{
		Meta: machine(),
		Settings: map[string]any{
			"scenarios": o.Scenarios, "buses": o.Buses, "runs": o.Runs, "duration": o.Duration.String(),
			"concurrency": o.Concurrency, "rate": o.Rate, "events": o.Events, "dispatch_events": o.DispatchEvents,
			"micro_events": o.MicroEvents, "rss_rate": o.RSSRate, "rss_duration": o.RSSDuration.String(),
			"grpc_window": o.Window, "latency_rate": o.LatencyRate, "url": o.URL, "encrypted": o.App.EncryptKey != "",
		},
		byKey: map[string]*Figure{},
	}
}

// add records a run's value of a figure (runs add in order).
func (r *Report) add(_ int, key, label, unit string, v float64, detail any) {
	f := r.byKey[key]
	if f == nil {
		f = &Figure{Key: key, Label: label, Unit: unit}
		r.byKey[key] = f
		r.Figures = append(r.Figures, f)
	}
	f.Runs = append(f.Runs, v)
	if detail != nil {
		f.Detail = detail
	}
}

// Note adds a line to the report.
func (r *Report) Note(format string, a ...any) { r.Notes = append(r.Notes, fmt.Sprintf(format, a...)) }

// ratioSpecs are the ratios printed when both figures exist.
var ratioSpecs = []struct {
	num, den, label string
	goal            float64
	issues          string
}{
	// With a plugin subscribed, its dispatch shares the 2 cores with ingest:
	// #8's stack figure. #3's ingest figure is ingest alone (every event
	// still stored), as the SDK reference is its dispatcher alone.
	{"ingest.memory", "ref.bare", "ingest (memory bus) / bare net/http", 0.6, "#8"},
	{"ingest.memory", "ref.sdk", "ingest (memory bus) / SDK dispatcher", 2, "#8"},
	{"ingest.memory.solo", "ref.bare", "ingest alone (memory bus, stored and drained, no plugin) / bare net/http", 0.6, "#3, #8 (isolation)"},
	{"ingest.memory.solo", "ref.sdk", "ingest alone (memory bus, stored and drained, no plugin) / SDK dispatcher", 2, "#8 (isolation)"},
	{"ingest.embedded", "ingest.memory", "ingest (embedded durable bus, fsynced) / ingest (memory bus, non-durable)", 0.5, "#18"},
	{"ingest.embedded", "ref.bare", "ingest (embedded bus) / bare net/http", 0, ""},
	{"ingest.pulsar", "ref.sdk", "ingest (Pulsar bus) / SDK dispatcher", 1, "#8"},
	{"ingest.pulsar", "ref.bare", "ingest (Pulsar bus) / bare net/http", 0, ""},
	{"ingest.external", "ref.bare", "ingest (--url core) / bare net/http", 0.6, "#8, #3"},
	{"ingest.external", "ref.sdk", "ingest (--url core) / SDK dispatcher", 2, "#8"},
	{"dispatch.go", "ref.grpc", "deliveries to no-op Go plugin / raw gRPC stream", 0.5, "#8, #4"},
	{"dispatch.python", "dispatch.go", "Python plugin deliveries / Go plugin deliveries", 0.2, "#8"},
	{"dispatch.go.remote", "ref.grpc.tls", "deliveries to remote no-op Go plugin (TCP, mutual TLS) / raw gRPC stream over TCP+TLS", 0, ""},
	{"dispatch.go.remote", "dispatch.go", "remote no-op Go plugin deliveries / launched (go-plugin) ones", 0, ""},
	{"micro.sdk", "micro.larkway", "verify+decrypt+normalize speed-up over the SDK dispatcher (SDK ns / larkway ns)", 3, "#3"},
	{"e2e.memory", "ref.bare", "end to end (memory) replies/s / bare net/http", 0, ""},
	{"e2e.memory", "ref.sdk", "end to end (memory) replies/s / SDK dispatcher", 0, ""},
	{"e2e.pulsar", "ref.bare", "end to end (Pulsar) replies/s / bare net/http", 0, ""},
	{"e2e.pulsar", "ref.sdk", "end to end (Pulsar) replies/s / SDK dispatcher", 0, ""},
	{"actions", "ref.bare", "executor actions/s / bare net/http", 0, ""},
	{"dispatch.go", "ref.bare", "deliveries to no-op Go plugin / bare net/http", 0, ""},
}

// finish computes medians, ratios and checks.
func (r *Report) finish() {
	r.Meta.LoadEnd = loadavg()
	for _, f := range r.Figures {
		f.Median = Median(finite(f.Runs))
	}
	for _, s := range ratioSpecs {
		num, den := r.byKey[s.num], r.byKey[s.den]
		if num == nil || den == nil {
			continue
		}
		q := &Ratio{Key: s.num + "/" + s.den, Label: s.label, Num: s.num, Den: s.den, Goal: s.goal, Issues: s.issues}
		for i := range min(len(num.Runs), len(den.Runs)) {
			if den.Runs[i] > 0 && !math.IsNaN(num.Runs[i]) {
				q.Runs = append(q.Runs, num.Runs[i]/den.Runs[i])
			}
		}
		q.Median = Median(q.Runs)
		if s.goal > 0 {
			met := q.Median >= s.goal
			q.Met = &met
		}
		r.Ratios = append(r.Ratios, q)
	}
	if f := r.byKey["rss.peak"]; f != nil {
		label := "core RSS < 200 MB at 10 k events/s (bench process: core + generator)"
		if rate := r.byKey["rss.rate"]; rate != nil {
			label += fmt.Sprintf("; accepted %s events/s (median)", fmtNum(Median(finite(rate.Runs))))
		}
		r.Checks = append(r.Checks, Check{Label: label, Figure: f.Key, Value: f.Median, Limit: "< 200 MB", Issues: "#8", Met: f.Median < 200})
	}
	for _, b := range []string{"memory", "embedded", "pulsar"} {
		if f := r.byKey["swap."+b+".share"]; f != nil {
			r.Checks = append(r.Checks, Check{Label: fmt.Sprintf("a hot swap under load reaches >= 0.95 of the offered rate (%s bus; lost and duplicated must be 0 for the run to count)", b),
				Figure: f.Key, Value: f.Median, Limit: ">= 0.95", Issues: "#4, #19", Met: f.Median >= 0.95})
		}
		for _, k := range []string{"lost", "duplicated", "paced.lost", "paced.duplicated"} {
			f := r.byKey["e2e."+b+"."+k]
			if f == nil {
				continue
			}
			worst := 0.0
			for _, v := range finite(f.Runs) {
				worst = max(worst, v)
			}
			what, how := k, "flat out"
			if p, ok := strings.CutPrefix(k, "paced."); ok {
				what, how = p, "paced"
			}
			r.Checks = append(r.Checks, Check{Label: fmt.Sprintf("0 %s replies end to end (%s bus, %s), every run", what, b, how),
				Figure: f.Key, Value: worst, Limit: "= 0", Issues: "#8", Met: worst == 0})
		}
	}
}

func finite(xs []float64) []float64 {
	var out []float64
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			out = append(out, x)
		}
	}
	return out
}

// machine describes this machine and checkout.
func machine() Meta {
	m := Meta{Date: time.Now().UTC().Format(time.RFC3339), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH,
		CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), LoadStart: loadavg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					kb, _ := strconv.Atoi(f[0])
					m.MemoryMB = kb / 1024
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
			m.Dirty = len(strings.TrimSpace(string(st))) > 0
		}
	}
	return m
}

// JSON renders the report.
func (r *Report) JSON() ([]byte, error) { return json.MarshalIndent(r, "", "  ") }

func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v == math.Trunc(v) && math.Abs(v) < 1e9:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func runsCell(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmtNum(x)
	}
	return strings.Join(s, " · ")
}

// Markdown renders the report for bench/results and the terminal.
func (r *Report) Markdown() string {
	var b strings.Builder
	m := r.Meta
	fmt.Fprintf(&b, "# larkway bench — %s\n\n", m.Date)
	commit := m.Commit
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if m.Dirty {
		commit += " (with uncommitted changes)"
	}
	fmt.Fprintf(&b, "| machine | |\n|---|---|\n")
	fmt.Fprintf(&b, "| commit | %s |\n| version | %s |\n| CPU | %s × %d |\n| GOMAXPROCS | %d |\n| memory | %d MB |\n| OS, kernel | %s, %s |\n| Go | %s |\n| load average (1, 5, 15 min) at start → end | %s → %s |\n\n",
		commit, m.Version, m.CPU, m.CPUs, m.GOMAXPROCS, m.MemoryMB, m.OS, m.Kernel, m.GoVersion, m.LoadStart, m.LoadEnd)
	fmt.Fprintf(&b, "Settings: %d run(s) of %v each, %v clients, ", r.Settings["runs"], r.Settings["duration"], r.Settings["concurrency"])
	if rate, _ := r.Settings["rate"].(float64); rate > 0 {
		fmt.Fprintf(&b, "open loop at %.0f events/s", rate)
	} else {
		b.WriteString("closed loop (flat out)")
	}
	if ev, _ := r.Settings["events"].(int); ev > 0 {
		fmt.Fprintf(&b, ", %d events per end-to-end run", ev)
	}
	b.WriteString("; every event is a golden message payload, AES-256-CBC encrypted and SHA-256 signed per request. " +
		"Figures are medians over the runs; ratios are computed within each run, then the median taken.\n\n")

	b.WriteString("## Figures\n\n| figure | unit | median | runs | detail (last run) |\n|---|---|---:|---|---|\n")
	for _, f := range r.Figures {
		fmt.Fprintf(&b, "| %s (`%s`) | %s | **%s** | %s | %s |\n", f.Label, f.Key, f.Unit, fmtNum(f.Median), runsCell(f.Runs), detailCell(f.Detail))
	}
	if len(r.Ratios) > 0 {
		b.WriteString("\n## Ratios (same run)\n\n| ratio | median | runs | goal | met |\n|---|---:|---|---|---|\n")
		for _, q := range r.Ratios {
			goal, met := "", ""
			if q.Goal > 0 {
				goal = fmt.Sprintf("≥ %s× (%s)", fmtNum(q.Goal), q.Issues)
				met = "**missed**"
				if q.Met != nil && *q.Met {
					met = "met"
				}
			}
			fmt.Fprintf(&b, "| %s | **%s×** | %s | %s | %s |\n", q.Label, fmtNum(q.Median), runsCell(q.Runs), goal, met)
		}
	}
	if len(r.Checks) > 0 {
		b.WriteString("\n## Absolute goals\n\n| goal | value | limit | met |\n|---|---:|---|---|\n")
		for _, c := range r.Checks {
			met := "**missed**"
			if c.Met {
				met = "met"
			}
			fmt.Fprintf(&b, "| %s (%s) | %s | %s | %s |\n", c.Label, c.Issues, fmtNum(c.Value), c.Limit, met)
		}
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

func detailCell(d any) string {
	switch v := d.(type) {
	case LoadResult:
		return fmt.Sprintf("ack p50 %s ms, p99 %s ms; %d accepted, %d failed", fmtNum(v.Ack.P50), fmtNum(v.Ack.P99), v.Accepted, v.Failed)
	case E2EResult:
		a := v.Accounting
		return fmt.Sprintf("%d accepted, %d replied, %d lost, %d duplicated; e2e p50 %s ms, p99 %s ms; ingest %s/s, ack p99 %s ms; %d reply calls",
			a.Accepted, a.Replied, a.Lost, a.Duplicated, fmtNum(v.Latency.P50), fmtNum(v.Latency.P99), fmtNum(v.Load.PerSecond), fmtNum(v.Load.Ack.P99), v.ReplyCalls)
	case SwapResult:
		a := v.Accounting
		return fmt.Sprintf("%s/s offered, %s/s reached; swap took %s; %d accepted, %d replied, %d lost, %d duplicated; e2e p99 %s ms",
			fmtNum(v.Offered), fmtNum(v.Load.PerSecond), v.SwapTook.Round(time.Millisecond), a.Accepted, a.Replied, a.Lost, a.Duplicated, fmtNum(v.Latency.P99))
	case DispatchResult:
		return fmt.Sprintf("%d events delivered in %s; CPU per delivery: core %s µs, plugin %s µs", v.Delivered, v.Elapsed.Round(time.Millisecond),
			fmtNum(v.CoreCPUMicros), fmtNum(v.PluginCPUMicros))
	case GRPCResult:
		return fmt.Sprintf("%d messages in %s", v.Messages, v.Elapsed.Round(time.Millisecond))
	case MicroResult:
		return fmt.Sprintf("%s allocs, %s B per event", fmtNum(v.AllocsPerEvent), fmtNum(v.BytesPerEvent))
	case ActionsResult:
		return fmt.Sprintf("%d actions, %d recorded", v.Actions, v.Recorded)
	case RSSResult:
		return fmt.Sprintf("start %s MB, Go heap peak %s MB, %s events/s accepted, ack p99 %s ms", fmtNum(v.StartMB), fmtNum(v.HeapPeakMB),
			fmtNum(v.Load.PerSecond), fmtNum(v.Load.Ack.P99))
	}
	return ""
}

// Write stores the report as out.md and out.json; if out is a directory,
// as DIR/bench-<date>.{md,json}.
func (r *Report) Write(out string) (md, js string, err error) {
	if st, serr := os.Stat(out); (serr == nil && st.IsDir()) || strings.HasSuffix(out, "/") {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return "", "", err
		}
		t, _ := time.Parse(time.RFC3339, r.Meta.Date)
		out = filepath.Join(out, "bench-"+t.Format("20060102-150405"))
	}
	out = strings.TrimSuffix(strings.TrimSuffix(out, ".md"), ".json")
	if dir := filepath.Dir(out); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", "", err
		}
	}
	j, err := r.JSON()
	if err != nil {
		return "", "", err
	}
	md, js = out+".md", out+".json"
	if err := os.WriteFile(md, []byte(r.Markdown()), 0o644); err != nil {
		return "", "", err
	}
	return md, js, os.WriteFile(js, append(j, '\n'), 0o644)
}
