package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/larkway/larkway/core/internal/bench"
)

const benchLong = `Starts its own in-process stack (Lark emulator + core with real plugin
processes) unless --url names a running core, drives it with signed and
encrypted golden events, and prints every larkway figure beside a bare
net/http responder, oapi-sdk-go's dispatcher and a raw gRPC stream.

Scenarios: refs, ingest, dispatch, e2e, actions, micro, rss, swap, sustained
(default: all). sustained runs the load generator as a process of its own
(larkway loadgen).`

const benchExample = `  make bench      larkway bench --runs 3 --bus memory,embedded,pulsar --out bench/results/
  make bench-1m   larkway bench --scenarios e2e --bus pulsar --events 1000000 --runs 1 --out bench/results/`

// benchOptions are bench's flags.
type benchOptions struct {
	scenarios, buses, pulsarURL               string
	runs, concurrency, events, dispatchEvents int
	microEvents, window, maxprocs             int
	duration, rssDuration, sustainDuration    time.Duration
	sustainConns                              int
	rate, latencyRate, swapRate, rssRate      float64
	url, appID, token, encryptKey             string
	echo, noop, python, pyNoop                string
	out, cpuprofile, memprofile, logLevel     string
}

func newBenchCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &benchOptions{}
	c := &cobra.Command{
		Use:     "bench [flags]",
		Short:   "Load generator and benchmarks with same-run reference points",
		Long:    "larkway bench — load generator and benchmarks with same-run reference points\n\n" + benchLong,
		Example: benchExample,
		Args:    noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return runBench(c.Context(), o, stdout, stderr)
		},
	}
	fs := c.Flags()
	fs.StringVar(&o.scenarios, "scenarios", "all", "comma-separated scenarios: "+strings.Join(bench.AllScenarios, ","))
	fs.StringVar(&o.buses, "bus", "memory,pulsar", "buses for ingest, e2e and swap: memory (non-durable), embedded (durable, on disk), pulsar, or a comma-separated list")
	fs.StringVar(&o.pulsarURL, "pulsar-url", benchEnv("LARKWAY_PULSAR_URL", "pulsar://127.0.0.1:6650"), "Pulsar broker for --bus pulsar (env LARKWAY_PULSAR_URL)")
	fs.IntVar(&o.runs, "runs", 3, "repetitions; figures are medians, ratios are taken within each run")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of each throughput measurement")
	fs.IntVar(&o.concurrency, "concurrency", 32, "generator clients (keep-alive connections)")
	fs.Float64Var(&o.rate, "rate", 0, "offered events/s, open loop (0: closed loop, flat out)")
	fs.IntVar(&o.events, "events", 0, "events per end-to-end run (0: --duration decides), e.g. 1000000 for bench-1m")
	fs.Float64Var(&o.latencyRate, "latency-rate", 1000, "after a flat-out e2e run, offered events/s of a paced one measuring latency below capacity (0: none)")
	fs.IntVar(&o.dispatchEvents, "dispatch-events", 300000, "events published straight to the bus, as a backlog the plugin then drains, per dispatch measurement (Python gets a quarter); 300 000 take about 3 s, so a burst of load from elsewhere weighs about as much as in the 5 s reference runs")
	fs.IntVar(&o.microEvents, "micro-events", 20000, "events per in-memory verify+decrypt+normalize measurement")
	fs.Float64Var(&o.swapRate, "swap-rate", 2000, "offered events/s while the swap scenario hot-swaps the echo plugin")
	fs.Float64Var(&o.rssRate, "rss-rate", 10000, "offered events/s during the RSS measurement")
	fs.DurationVar(&o.rssDuration, "rss-duration", 10*time.Second, "length of the RSS measurement")
	fs.DurationVar(&o.sustainDuration, "sustain-duration", 30*time.Second, "sustained scenario: length of the closed-loop overload (the step half → 3× → half takes as long again)")
	fs.IntVar(&o.sustainConns, "sustain-conns", 64, "sustained scenario: closed-loop connections of the overload (the open-loop step gets 4×)")
	fs.IntVar(&o.window, "grpc-window", 64, "deliveries in flight on the raw gRPC stream")
	fs.IntVar(&o.maxprocs, "gomaxprocs", 0, "GOMAXPROCS for the bench process and its Go plugins (0: leave as is)")
	fs.StringVar(&o.url, "url", "", "webhook URL of a running core: measure its ingest instead of an in-process stack")
	fs.StringVar(&o.appID, "app-id", "cli_bench", "app id (with --url: the running core's app)")
	fs.StringVar(&o.token, "token", "bench-verification-token", "verification token (with --url: the app's)")
	fs.StringVar(&o.encryptKey, "encrypt-key", "bench-encrypt-key", "encrypt key; events are encrypted and signed with it (empty: plain)")
	fs.StringVar(&o.echo, "echo-plugin", "", "Go echo plugin binary (default: built from ./plugins/echo)")
	fs.StringVar(&o.noop, "noop-plugin", "", "Go no-op plugin binary (default: built from ./core/internal/bench/testdata/noop)")
	fs.StringVar(&o.python, "python", "", "Python with the larkway SDK (default: .tools/pyenv/bin/python when present)")
	fs.StringVar(&o.pyNoop, "py-noop", "core/internal/bench/testdata/py_noop/main.py", "no-op Python plugin")
	fs.StringVar(&o.out, "out", "", "write the report as Markdown and JSON: a directory (bench-<date>.md/.json in it) or a path without extension")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the bench process (core + generator) to this file")
	fs.StringVar(&o.memprofile, "memprofile", "", "write an allocation profile of the bench process (core + generator) to this file")
	fs.StringVar(&o.logLevel, "log-level", "error", "log level of the in-process core")
	for _, f := range []string{"echo-plugin", "noop-plugin", "python", "py-noop", "cpuprofile", "memprofile"} {
		_ = c.MarkFlagFilename(f)
	}
	return c
}

func runBench(ctx context.Context, f *benchOptions, stdout, stderr io.Writer) error {
	if f.maxprocs > 0 {
		runtime.GOMAXPROCS(f.maxprocs)
	}
	sc := bench.AllScenarios
	if f.scenarios != "all" {
		sc = nil
		for _, s := range strings.Split(f.scenarios, ",") {
			s = strings.TrimSpace(s)
			if !benchHas(bench.AllScenarios, s) {
				return usagef("--scenarios: unknown scenario %q", s)
			}
			sc = append(sc, s)
		}
	}
	var bs []string
	for _, b := range strings.Split(f.buses, ",") {
		b = strings.TrimSpace(b)
		if b != "memory" && b != "embedded" && b != "pulsar" {
			return usagef("--bus: want memory, embedded, pulsar or a comma-separated list of them")
		}
		bs = append(bs, b)
	}
	lvl, err := parseLogLevel(f.logLevel)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "larkway-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	o := bench.Options{
		Scenarios: sc, Buses: bs, PulsarURL: f.pulsarURL, Runs: f.runs, Duration: f.duration, Concurrency: f.concurrency,
		Rate: f.rate, Events: f.events, DispatchEvents: f.dispatchEvents, MicroEvents: f.microEvents, RSSRate: f.rssRate,
		RSSDuration: f.rssDuration, SwapRate: f.swapRate, LatencyRate: f.latencyRate, Window: f.window, URL: f.url, Dir: dir, Log: stderr,
		App:             bench.App{ID: f.appID, VerificationToken: f.token, EncryptKey: f.encryptKey},
		SustainDuration: f.sustainDuration, SustainConns: f.sustainConns,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})),
	}
	var notes []string
	if f.url == "" && benchNeedsPlugins(sc) {
		root, err := benchModuleRoot()
		if err != nil && (f.echo == "" || f.noop == "") {
			return fmt.Errorf("building the bench plugins needs the larkway source tree (or --echo-plugin and --noop-plugin): %w", err)
		}
		if o.Plugins.GoEcho, err = benchPluginBinary(f.echo, root, "./plugins/echo", dir); err != nil {
			return err
		}
		if o.Plugins.GoNoop, err = benchPluginBinary(f.noop, root, "./core/internal/bench/testdata/noop", dir); err != nil {
			return err
		}
		py := f.python
		if py == "" && root != "" {
			if p := filepath.Join(root, ".tools/pyenv/bin/python"); benchFileExists(p) {
				py = p
			}
		}
		script := f.pyNoop
		if !filepath.IsAbs(script) && root != "" {
			script = filepath.Join(root, script)
		}
		if py != "" {
			if abs, err := filepath.Abs(py); err == nil && strings.Contains(py, string(filepath.Separator)) {
				py = abs
			}
		}
		if py != "" && benchFileExists(script) {
			o.Plugins.Python, o.Plugins.PyNoop = py, script
		} else if benchHas(sc, bench.ScenarioDispatch) {
			notes = append(notes, "Python plugin not measured: no Python with the SDK (run sdk/python/test.sh, or pass --python)")
		}
	}
	if f.cpuprofile != "" {
		f, err := os.Create(f.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if f.memprofile != "" {
		f, err := os.Create(f.memprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		defer func() { _ = pprof.Lookup("allocs").WriteTo(f, 0) }()
	}
	if o.Loadgen, err = os.Executable(); err != nil {
		return fmt.Errorf("finding the larkway binary for loadgen: %w", err)
	}
	fmt.Fprintf(stderr, "larkway bench: %s on %s, GOMAXPROCS %d, %d run(s)\n", strings.Join(sc, ","), strings.Join(bs, ","), runtime.GOMAXPROCS(0), o.Runs)
	rep, err := bench.Run(ctx, o)
	if rep == nil {
		return err
	}
	rep.Meta.Version = version
	for _, n := range notes {
		rep.Note("%s", n)
	}
	if err != nil {
		rep.Note("the bench stopped early: %v", err)
	}
	fmt.Fprint(stdout, rep.Markdown())
	if f.out != "" {
		md, js, werr := rep.Write(f.out)
		if werr != nil {
			return fmt.Errorf("writing the report: %w", werr)
		}
		fmt.Fprintf(stderr, "larkway bench: wrote %s and %s\n", md, js)
	}
	return err
}

func benchNeedsPlugins(sc []string) bool {
	for _, s := range sc {
		if s != bench.ScenarioRefs && s != bench.ScenarioMicro && s != bench.ScenarioActions {
			return true
		}
	}
	return false
}

// benchPluginBinary returns given, or builds pkg (relative to root) into dir.
// It builds in the package's directory, so the package's own module decides
// (the plugins are a module of their own) with or without go.work.
func benchPluginBinary(given, root, pkg, dir string) (string, error) {
	if given != "" {
		return filepath.Abs(given)
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = filepath.Join(root, filepath.FromSlash(pkg))
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}

// benchModuleRoot is the larkway source tree this is run in: the directory
// of its go.work (found from any of its modules' directories), or of the
// current module's go.mod without the workspace.
func benchModuleRoot() (string, error) {
	b, err := exec.Command("go", "env", "GOWORK", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOWORK GOMOD: %w", err)
	}
	work, mod, _ := strings.Cut(string(b), "\n") // one line each, GOWORK possibly empty
	work, mod = strings.TrimSpace(work), strings.TrimSpace(mod)
	if work != "" && work != "off" {
		return filepath.Dir(work), nil
	}
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module")
	}
	return filepath.Dir(mod), nil
}

func benchFileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func benchHas(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func benchEnv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
