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

	"github.com/larkway/larkway/core/internal/bench"
)

const benchUsage = `larkway bench — load generator and benchmarks with same-run reference points

Starts its own in-process stack (Lark emulator + core with real plugin
processes) unless --url names a running core, drives it with signed and
encrypted golden events, and prints every larkway figure beside a bare
net/http responder, oapi-sdk-go's dispatcher and a raw gRPC stream.

Scenarios: refs, ingest, dispatch, e2e, actions, micro, rss, swap (default: all).
  make bench      larkway bench --runs 3 --out bench/results/
  make bench-1m   larkway bench --scenarios e2e --bus pulsar --events 1000000 --runs 1 --out bench/results/

Flags:
`

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage); fs.PrintDefaults() }
	scenarios := fs.String("scenarios", "all", "comma-separated scenarios: "+strings.Join(bench.AllScenarios, ","))
	buses := fs.String("bus", "memory,pulsar", "buses for ingest and e2e: memory, pulsar or both")
	pulsarURL := fs.String("pulsar-url", benchEnv("LARKWAY_PULSAR_URL", "pulsar://127.0.0.1:6650"), "Pulsar broker for --bus pulsar")
	runs := fs.Int("runs", 3, "repetitions; figures are medians, ratios are taken within each run")
	duration := fs.Duration("duration", 5*time.Second, "length of each throughput measurement")
	concurrency := fs.Int("concurrency", 32, "generator clients (keep-alive connections)")
	rate := fs.Float64("rate", 0, "offered events/s, open loop (0: closed loop, flat out)")
	events := fs.Int("events", 0, "events per end-to-end run (0: --duration decides), e.g. 1000000 for bench-1m")
	latencyRate := fs.Float64("latency-rate", 1000, "after a flat-out e2e run, offered events/s of a paced one measuring latency below capacity (0: none)")
	dispatchEvents := fs.Int("dispatch-events", 300000, "events published straight to the bus, as a backlog the plugin then drains, per dispatch measurement (Python gets a quarter); 300 000 take about 3 s, so a burst of load from elsewhere weighs about as much as in the 5 s reference runs")
	microEvents := fs.Int("micro-events", 20000, "events per in-memory verify+decrypt+normalize measurement")
	swapRate := fs.Float64("swap-rate", 2000, "offered events/s while the swap scenario hot-swaps the echo plugin")
	rssRate := fs.Float64("rss-rate", 10000, "offered events/s during the RSS measurement")
	rssDuration := fs.Duration("rss-duration", 10*time.Second, "length of the RSS measurement")
	window := fs.Int("grpc-window", 64, "deliveries in flight on the raw gRPC stream")
	maxprocs := fs.Int("gomaxprocs", 0, "GOMAXPROCS for the bench process and its Go plugins (0: leave as is)")
	url := fs.String("url", "", "webhook URL of a running core: measure its ingest instead of an in-process stack")
	appID := fs.String("app-id", "cli_bench", "app id (with --url: the running core's app)")
	token := fs.String("token", "bench-verification-token", "verification token (with --url: the app's)")
	encryptKey := fs.String("encrypt-key", "bench-encrypt-key", "encrypt key; events are encrypted and signed with it (empty: plain)")
	echo := fs.String("echo-plugin", "", "Go echo plugin binary (default: built from ./plugins/echo)")
	noop := fs.String("noop-plugin", "", "Go no-op plugin binary (default: built from ./core/internal/bench/testdata/noop)")
	python := fs.String("python", "", "Python with the larkway SDK (default: .tools/pyenv/bin/python when present)")
	pyNoop := fs.String("py-noop", "core/internal/bench/testdata/py_noop/main.py", "no-op Python plugin")
	out := fs.String("out", "", "write the report as Markdown and JSON: a directory (bench-<date>.md/.json in it) or a path without extension")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the bench process (core + generator) to this file")
	memprofile := fs.String("memprofile", "", "write an allocation profile of the bench process (core + generator) to this file")
	logLevel := fs.String("log-level", "error", "log level of the in-process core")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *maxprocs > 0 {
		runtime.GOMAXPROCS(*maxprocs)
	}
	sc := bench.AllScenarios
	if *scenarios != "all" {
		sc = nil
		for _, s := range strings.Split(*scenarios, ",") {
			s = strings.TrimSpace(s)
			if !benchHas(bench.AllScenarios, s) {
				return fmt.Errorf("%w: --scenarios: unknown scenario %q", errUsage, s)
			}
			sc = append(sc, s)
		}
	}
	var bs []string
	for _, b := range strings.Split(*buses, ",") {
		b = strings.TrimSpace(b)
		if b != "memory" && b != "embedded" && b != "pulsar" {
			return fmt.Errorf("%w: --bus: want memory, embedded, pulsar or a comma-separated list of them", errUsage)
		}
		bs = append(bs, b)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("%w: --log-level: %v", errUsage, err)
	}
	dir, err := os.MkdirTemp("", "larkway-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	o := bench.Options{
		Scenarios: sc, Buses: bs, PulsarURL: *pulsarURL, Runs: *runs, Duration: *duration, Concurrency: *concurrency,
		Rate: *rate, Events: *events, DispatchEvents: *dispatchEvents, MicroEvents: *microEvents, RSSRate: *rssRate,
		RSSDuration: *rssDuration, SwapRate: *swapRate, LatencyRate: *latencyRate, Window: *window, URL: *url, Dir: dir, Log: stderr,
		App:    bench.App{ID: *appID, VerificationToken: *token, EncryptKey: *encryptKey},
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})),
	}
	var notes []string
	if *url == "" && benchNeedsPlugins(sc) {
		root, err := benchModuleRoot()
		if err != nil && (*echo == "" || *noop == "") {
			return fmt.Errorf("building the bench plugins needs the larkway source tree (or --echo-plugin and --noop-plugin): %w", err)
		}
		if o.Plugins.GoEcho, err = benchPluginBinary(*echo, root, "./plugins/echo", dir); err != nil {
			return err
		}
		if o.Plugins.GoNoop, err = benchPluginBinary(*noop, root, "./core/internal/bench/testdata/noop", dir); err != nil {
			return err
		}
		py := *python
		if py == "" && root != "" {
			if p := filepath.Join(root, ".tools/pyenv/bin/python"); benchFileExists(p) {
				py = p
			}
		}
		script := *pyNoop
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
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *memprofile != "" {
		f, err := os.Create(*memprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		defer func() { _ = pprof.Lookup("allocs").WriteTo(f, 0) }()
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
	if *out != "" {
		md, js, werr := rep.Write(*out)
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
