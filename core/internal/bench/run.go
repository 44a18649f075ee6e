package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/action/ratelimit"
	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/bus/embedded"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/lark"
	"github.com/larkway/larkway/core/internal/manager"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Scenario names, in the order a run measures them.
const (
	ScenarioRefs     = "refs"     // bare net/http, SDK dispatcher, raw gRPC stream
	ScenarioIngest   = "ingest"   // webhook → bus, ack latency (per bus)
	ScenarioDispatch = "dispatch" // bus → no-op plugin deliveries/s (Go, Python)
	ScenarioE2E      = "e2e"      // webhook → reply recorded in the emulator (per bus)
	ScenarioActions  = "actions"  // executor → emulator, unlimited
	ScenarioMicro    = "micro"    // verify + decrypt + normalize per event vs the SDK
	ScenarioRSS      = "rss"      // process RSS at a fixed offered rate
	ScenarioSwap     = "swap"     // a plugin hot swap under a paced end-to-end load (per bus)
	// ScenarioSustained (sustained.go): overload and a step, per second,
	// load from a separate process.
)

// AllScenarios is every scenario.
var AllScenarios = []string{ScenarioRefs, ScenarioIngest, ScenarioDispatch, ScenarioE2E, ScenarioActions, ScenarioMicro, ScenarioRSS, ScenarioSwap, ScenarioSustained}

// Plugins are the plugin executables the bench runs.
type Plugins struct {
	GoEcho string // plugins/echo
	GoNoop string // core/internal/bench/testdata/noop
	Python string // an interpreter with the larkway SDK
	PyNoop string // core/internal/bench/testdata/py_noop/main.py
	PyEcho string // plugins/py-echo/main.py
}

// Options configure a bench.
type Options struct {
	Scenarios []string
	Buses     []string
	PulsarURL string
	// Runs repeats every measurement; figures are the runs' medians.
	Runs int
	// Duration of each throughput measurement.
	Duration    time.Duration
	Concurrency int
	// Rate offered to ingest and e2e (0: closed loop, flat out).
	Rate float64
	// Events fixes each e2e run's event count (0: Duration decides).
	Events int
	// DispatchEvents published straight to the bus per dispatch measurement.
	DispatchEvents int
	MicroEvents    int
	// RSSRate and RSSDuration shape the memory measurement.
	RSSRate     float64
	RSSDuration time.Duration
	// LatencyRate is the offered rate of the paced end-to-end latency
	// measurement that follows a flat-out one (0: none).
	LatencyRate float64
	// SwapRate is the offered rate of the swap scenario (default 2 000
	// events/s): the load a hot swap is shown under.
	SwapRate float64
	// Window is the raw gRPC stream's deliveries in flight (the
	// dispatcher's per-plugin default, 64).
	Window  int
	Plugins Plugins
	// URL, if set, is a running core's webhook: ingest is measured against
	// it (with App's credentials) instead of an in-process core, and
	// scenarios that need the in-process stack are skipped.
	URL string
	App App
	// Loadgen is the larkway binary whose `loadgen` subcommand the
	// sustained scenario runs as a process of its own.
	Loadgen string
	// SustainDuration is the sustained overload's length (the step takes
	// as long again); SustainConns its closed-loop connections.
	SustainDuration time.Duration
	SustainConns    int
	// Dir holds sockets.
	Dir    string
	Log    io.Writer
	Logger *slog.Logger
}

func (o *Options) has(s string) bool {
	for _, x := range o.Scenarios {
		if x == s {
			return true
		}
	}
	return false
}

// runner accumulates one bench's figures.
type runner struct {
	o       Options
	rep     *Report
	run     int
	plugEnv []string
}

func (r *runner) logf(format string, a ...any) {
	if r.o.Log != nil {
		fmt.Fprintf(r.o.Log, "[run %d] "+format+"\n", append([]any{r.run + 1}, a...)...)
	}
}

// Run measures every selected scenario o.Runs times and returns the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Runs <= 0 {
		o.Runs = 1
	}
	if o.Window <= 0 {
		o.Window = 64
	}
	if o.SustainDuration <= 0 {
		o.SustainDuration = 30 * time.Second
	}
	if o.SustainConns <= 0 {
		o.SustainConns = 64
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.App.ID == "" {
		o.App = App{ID: "cli_bench", VerificationToken: "bench-verification-token", EncryptKey: "bench-encrypt-key"}
	}
	r := &runner{o: o, rep: newReport(o)}
	r.plugEnv = []string{"GOMAXPROCS=" + strconv.Itoa(runtime.GOMAXPROCS(0))}
	for r.run = 0; r.run < o.Runs; r.run++ {
		if err := r.once(ctx); err != nil {
			r.rep.finish()
			return r.rep, err
		}
	}
	r.rep.finish()
	return r.rep, nil
}

// appForRun is a fresh app id per run and bus: Pulsar topics (named after
// the app) and subscriptions then start empty.
func (r *runner) appForRun(tag string) App {
	if r.o.URL != "" {
		return r.o.App
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	a := r.o.App
	a.ID = fmt.Sprintf("%s_%s_%s", r.o.App.ID, tag, hex.EncodeToString(b))
	return a
}

func (r *runner) runTag() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b) + "_"
}

func (r *runner) once(ctx context.Context) error {
	o := r.o
	if o.has(ScenarioRefs) || o.has(ScenarioIngest) {
		if err := r.webhooks(ctx); err != nil {
			return fmt.Errorf("webhook throughput: %w", err)
		}
	}
	if o.has(ScenarioRefs) {
		// The same events the dispatch measurement delivers, so the two
		// move the same messages.
		evs, err := r.events(r.appForRun("grpc"), 1000)
		if err != nil {
			return err
		}
		g, err := GRPCStream(ctx, r.o.Dir, r.o.Window, r.o.Duration, evs)
		if err != nil {
			return fmt.Errorf("raw gRPC stream: %w", err)
		}
		r.logf("ref.grpc: %.0f messages/s", g.PerSecond)
		r.rep.add(r.run, "ref.grpc", fmt.Sprintf("raw gRPC bidi stream, unix socket, %d in flight", g.Window), "messages/s", g.PerSecond, g)
		pki, err := NewPKI(r.o.Dir, "noop")
		if err != nil {
			return fmt.Errorf("bench certificates: %w", err)
		}
		g, err = GRPCStreamTLS(ctx, pki, r.o.Window, r.o.Duration, evs)
		if err != nil {
			return fmt.Errorf("raw gRPC stream over TLS: %w", err)
		}
		r.logf("ref.grpc.tls: %.0f messages/s", g.PerSecond)
		r.rep.add(r.run, "ref.grpc.tls", fmt.Sprintf("raw gRPC bidi stream, loopback TCP with mutual TLS, %d in flight", g.Window), "messages/s", g.PerSecond, g)
	}
	if o.URL != "" {
		return nil
	}
	if o.has(ScenarioDispatch) {
		if err := r.dispatch(ctx); err != nil {
			return fmt.Errorf("dispatch: %w", err)
		}
	}
	if o.has(ScenarioE2E) {
		for _, b := range o.Buses {
			if err := r.e2e(ctx, b); err != nil {
				return fmt.Errorf("end to end on %s: %w", b, err)
			}
		}
	}
	if o.has(ScenarioActions) {
		if err := r.actions(ctx); err != nil {
			return fmt.Errorf("actions: %w", err)
		}
	}
	if o.has(ScenarioMicro) {
		ours, sdk, err := Micro(o.App, o.MicroEvents)
		if err != nil {
			return fmt.Errorf("micro: %w", err)
		}
		r.logf("micro: larkway %.0f ns/event, SDK %.0f ns/event", ours.NsPerEvent, sdk.NsPerEvent)
		r.rep.add(r.run, "micro.larkway", "larkway verify+decrypt+normalize (ingest handler, in memory)", "ns/event", ours.NsPerEvent, ours)
		r.rep.add(r.run, "micro.sdk", "oapi-sdk-go dispatcher verify+decrypt+parse (httpserverext, in memory)", "ns/event", sdk.NsPerEvent, sdk)
	}
	if o.has(ScenarioRSS) {
		if err := r.rss(ctx); err != nil {
			return fmt.Errorf("rss: %w", err)
		}
	}
	if o.has(ScenarioSustained) {
		if err := r.sustained(ctx); err != nil {
			return fmt.Errorf("sustained: %w", err)
		}
	}
	if o.has(ScenarioSwap) {
		for _, b := range o.Buses {
			if err := r.swap(ctx, b); err != nil {
				return fmt.Errorf("swap under load on %s: %w", b, err)
			}
		}
	}
	return nil
}

// deliveries counts the deliveries that reached the executor.
type deliveries struct {
	n     atomic.Int64
	first atomic.Int64 // unix nanos, since the last reset
	last  atomic.Int64 // unix nanos
	// ids, if set, counts them per event id too.
	ids *idLedger
}

func (d *deliveries) observe(_ string, req action.Request, _ error) {
	if d.ids != nil {
		d.ids.delivered(req.EventID)
	}
	d.n.Add(1)
	now := time.Now().UnixNano()
	d.first.CompareAndSwap(0, now)
	d.last.Store(now)
}

// waitFor waits until d counts target, or nothing happened for idle.
func (d *deliveries) waitFor(ctx context.Context, target int64, idle time.Duration) bool {
	lastN, lastChange := d.n.Load(), time.Now()
	for d.n.Load() < target {
		if ctx.Err() != nil {
			return false
		}
		if n := d.n.Load(); n != lastN {
			lastN, lastChange = n, time.Now()
		} else if time.Since(lastChange) > idle {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func (r *runner) noopGo() []PluginSpec {
	return []PluginSpec{{Name: "noop", Path: r.o.Plugins.GoNoop, Env: r.plugEnv}}
}

func (r *runner) startCore(ctx context.Context, busKind string, app App, plugins []PluginSpec, larkURL string, d *deliveries) (*Core, error) {
	if larkURL == "" {
		larkURL = "http://127.0.0.1:1" // no action is ever sent
	}
	return NewCore(ctx, CoreOptions{Bus: busKind, PulsarURL: r.o.PulsarURL, App: app, LarkURL: larkURL,
		Plugins: plugins, UnlimitedActions: true, Observe: d.observe, Logger: r.o.Logger})
}

// target is one webhook measured by webhooks.
type target struct {
	key, label string
	url        string
	app        App
	d          *deliveries // a core's: drained after each slice
	lat        Latencies
	res        LoadResult
	// walSyncs, for a core on the embedded bus, counts its WAL fsyncs and
	// their time; syncs and syncTime add up those made while the load ran.
	walSyncs func() (uint64, time.Duration)
	syncs    uint64
	syncTime time.Duration
}

// webhooks measures the reference servers and larkway's ingest with the
// same generator, interleaved: every target gets a slice of SliceEvery in
// turn (the order rotating each round) until each had Duration, so load
// from anything else on the machine falls on all of them alike. After a
// slice on a core, its plugin drains what was accepted before the next
// slice starts.
func (r *runner) webhooks(ctx context.Context) error {
	o := r.o
	var targets []*target
	if o.has(ScenarioRefs) {
		bare, err := Serve(BareResponder(), "/lark/events")
		if err != nil {
			return err
		}
		defer bare.Close()
		var handled atomic.Int64
		sdk, err := Serve(SDKDispatcher(o.App, &handled), "/lark/events")
		if err != nil {
			return err
		}
		defer sdk.Close()
		targets = append(targets,
			&target{key: "ref.bare", label: "bare net/http 200-responder", url: bare.URL, app: o.App},
			&target{key: "ref.sdk", label: "oapi-sdk-go httpserverext + dispatcher (verify, decrypt, parse, no-reply handler)", url: sdk.URL, app: o.App})
	}
	if o.has(ScenarioIngest) {
		if o.URL != "" {
			targets = append(targets, &target{key: "ingest.external", label: "larkway ingest (running core at --url)", url: o.URL, app: o.App})
		} else {
			for _, b := range o.Buses {
				app := r.appForRun("in")
				d := &deliveries{}
				core, err := r.startCore(ctx, b, app, r.noopGo(), "", d)
				if err != nil {
					return fmt.Errorf("starting a core on %s: %w", b, err)
				}
				defer core.Close()
				t := &target{key: "ingest." + b, label: "larkway ingest, " + b + " bus (no-op Go plugin subscribed)",
					url: core.URL, app: app, d: d}
				if eb, ok := core.Bus.(*embedded.Bus); ok {
					t.walSyncs = eb.WALSyncs
				}
				targets = append(targets, t)
				if b != "memory" {
					continue
				}
				// The same core with no plugin: ingest's own cost, as the SDK
				// reference's figure is the dispatcher's alone. Every event is
				// still stored: a subscription retains it until a trivial
				// in-process consumer acks it.
				soloApp := r.appForRun("so")
				solo, err := r.startCore(ctx, b, soloApp, nil, "", &deliveries{})
				if err != nil {
					return fmt.Errorf("starting a plugin-less core: %w", err)
				}
				defer solo.Close()
				dctx, stopDrain := context.WithCancel(ctx)
				drained, err := drain(dctx, solo.Bus, envelope.Topic(soloApp.ID))
				if err != nil {
					stopDrain()
					return fmt.Errorf("draining the plugin-less core: %w", err)
				}
				defer func() { stopDrain(); <-drained }()
				targets = append(targets, &target{key: "ingest.memory.solo", label: "larkway ingest alone: memory bus, every event stored for a subscription a trivial consumer drains (HTTP + verify + decrypt + normalize + encode + store)",
					url: solo.URL, app: soloApp})
			}
		}
	}
	slice := min(time.Second, o.Duration)
	rounds := max(int(o.Duration/slice), 1)
	tag := r.runTag()
	for round := range rounds {
		for i := range targets {
			t := targets[(i+round)%len(targets)]
			src, err := NewSource(t.app, fmt.Sprintf("%s%d_", tag, round), 100)
			if err != nil {
				return err
			}
			var syncs0 uint64
			var took0 time.Duration
			if t.walSyncs != nil {
				syncs0, took0 = t.walSyncs()
			}
			res, err := Drive(ctx, src, Load{URL: t.url, App: t.app, Concurrency: o.Concurrency, Rate: o.Rate,
				Duration: slice, Latencies: &t.lat})
			if err != nil {
				return fmt.Errorf("%s: %w", t.key, err)
			}
			if t.walSyncs != nil {
				n, took := t.walSyncs()
				t.syncs += n - syncs0
				t.syncTime += took - took0
			}
			t.res.merge(res)
			if t.d != nil && !t.d.waitFor(ctx, int64(t.res.Accepted), 30*time.Second) {
				return fmt.Errorf("%s: only %d of %d accepted events were delivered", t.key, t.d.n.Load(), t.res.Accepted)
			}
		}
	}
	for _, t := range targets {
		t.res.Ack = t.lat.Summary()
		if t.res.Accepted == 0 || (t.res.Failed > 0 && strings.HasPrefix(t.key, "ref.")) {
			return fmt.Errorf("%s: %d accepted, %d failed (%v)", t.key, t.res.Accepted, t.res.Failed, t.res.Statuses)
		}
		r.logf("%s: %.0f events/s, ack p50 %.2f ms p99 %.2f ms (%d failed)", t.key, t.res.PerSecond, t.res.Ack.P50, t.res.Ack.P99, t.res.Failed)
		r.rep.add(r.run, t.key, t.label, "events/s", t.res.PerSecond, t.res)
		if t.walSyncs != nil && t.res.Elapsed > 0 {
			// Publishes share fsyncs (group commit); the plugin's done
			// markers, on the same disk without Redis, take theirs too.
			perSec := float64(t.syncs) / t.res.Elapsed.Seconds()
			var mean time.Duration
			if t.syncs > 0 {
				mean = t.syncTime / time.Duration(t.syncs)
			}
			r.logf("%s: %.0f WAL fsyncs/s, %.2f per accepted event, %v each on average", t.key, perSec,
				float64(t.syncs)/float64(t.res.Accepted), mean.Round(time.Microsecond))
			r.rep.add(r.run, t.key+".fsyncs", "WAL fsyncs per second while "+t.key+" ran (publishes group-committed, plus done markers)",
				"fsyncs/s", perSec, nil)
		}
	}
	return nil
}

// drain acks everything published to topic on a subscription of its own
// until ctx ends; the returned channel closes when it has stopped.
func drain(ctx context.Context, b bus.Bus, topic string) (<-chan struct{}, error) {
	c, err := b.Subscribe(ctx, bus.SubscribeOptions{Topic: topic, Subscription: "bench-drain"})
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer c.Close(context.Background())
		for {
			d, err := c.Receive(ctx)
			if err != nil {
				return
			}
			_ = d.Ack()
		}
	}()
	return done, nil
}

// dispatchRate measures how fast the dispatcher drains a backlog: with the
// plugin disabled, n events are published straight to the core's bus; the
// plugin is enabled, and the rate is deliveries/s from the first delivery
// to the last. Publishing first keeps the generator's work out of the
// measurement, as the raw gRPC reference has its messages built up front.
func (r *runner) dispatchRate(ctx context.Context, core *Core, app App, d *deliveries, name string, n int) (DispatchResult, error) {
	if err := core.Mgr.Disable(ctx, name); err != nil {
		return DispatchResult{}, fmt.Errorf("disabling %s: %w", name, err)
	}
	base := d.n.Load()
	topic := envelope.Topic(app.ID)
	start := time.Now()
	// Each event is made and published in turn: holding every decoded
	// event first tripled the heap this figure needs, and the runtime
	// keeps some of a heap's peak (the RSS figure later in the run saw it).
	err := r.eachEvent(app, n, func(ev *pluginv1.Event) error {
		m, err := envelope.Encode(ev)
		if err != nil {
			return err
		}
		return core.Bus.Publish(ctx, topic, m)
	})
	if err != nil {
		return DispatchResult{}, err
	}
	published := time.Since(start)
	d.first.Store(0)
	self0, kids0 := cpuTimes()
	if err := core.Mgr.Enable(ctx, name); err != nil {
		return DispatchResult{}, fmt.Errorf("enabling %s: %w", name, err)
	}
	ok := d.waitFor(ctx, base+int64(n), 30*time.Second)
	self1, _ := cpuTimes()
	// The plugin's CPU is known once it has exited and been reaped.
	if err := core.Mgr.Disable(ctx, name); err != nil {
		return DispatchResult{}, fmt.Errorf("disabling %s: %w", name, err)
	}
	_, kids1 := cpuTimes()
	got := d.n.Load() - base
	elapsed := time.Duration(d.last.Load() - d.first.Load())
	res := DispatchResult{Events: n, Delivered: int(got), Elapsed: elapsed, Published: published}
	if elapsed > 0 {
		res.PerSecond = float64(got-1) / elapsed.Seconds()
	}
	if got > 0 {
		res.CoreCPUMicros = float64(self1-self0) / float64(time.Microsecond) / float64(got)
		res.PluginCPUMicros = float64(kids1-kids0) / float64(time.Microsecond) / float64(got)
	}
	if !ok {
		return res, fmt.Errorf("only %d of %d events were delivered", got, n)
	}
	return res, nil
}

// cpuTimes is the CPU time (user and system) of this process, and of its
// children that have exited and been waited for.
func cpuTimes() (self, children time.Duration) {
	var s, c syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &s)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &c)
	d := func(u syscall.Rusage) time.Duration {
		return time.Duration(u.Utime.Nano() + u.Stime.Nano())
	}
	return d(s), d(c)
}

// events normalizes n golden message events, as ingest would store them.
func (r *runner) events(app App, n int) ([]*pluginv1.Event, error) {
	evs := make([]*pluginv1.Event, 0, n)
	err := r.eachEvent(app, n, func(ev *pluginv1.Event) error {
		evs = append(evs, ev)
		return nil
	})
	return evs, err
}

// eachEvent normalizes n golden message events in turn and hands each to f.
func (r *runner) eachEvent(app App, n int, f func(*pluginv1.Event) error) error {
	src, err := NewSource(app, r.runTag(), 100)
	if err != nil {
		return err
	}
	for range n {
		ev, err := envelope.Normalize(app.ID, src.Next().Plain)
		if err != nil {
			return err
		}
		if err := f(ev); err != nil {
			return err
		}
	}
	return nil
}

// DispatchResult is a deliveries/s measurement.
type DispatchResult struct {
	Events    int           `json:"events"`
	Delivered int           `json:"delivered"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	Published time.Duration `json:"published_ns"`
	PerSecond float64       `json:"per_second"`
	// CPU time per delivery while draining: the bench process (core), and
	// the plugin process (from its exit accounting; it includes its start).
	CoreCPUMicros   float64 `json:"core_cpu_us"`
	PluginCPUMicros float64 `json:"plugin_cpu_us"`
}

func (r *runner) dispatch(ctx context.Context) error {
	type plug struct {
		key, label string
		spec       PluginSpec
		events     int
	}
	plugs := []plug{{"dispatch.go", "deliveries to a no-op Go plugin, draining a backlog (memory bus)", r.noopGo()[0], r.o.DispatchEvents}}
	if r.o.Plugins.Python != "" && r.o.Plugins.PyNoop != "" {
		plugs = append(plugs, plug{"dispatch.python", "deliveries to a no-op Python plugin, draining a backlog (memory bus)",
			PluginSpec{Name: "py-noop", Path: r.o.Plugins.Python, Args: []string{r.o.Plugins.PyNoop}}, max(r.o.DispatchEvents/4, 1000)})
	}
	for _, p := range plugs {
		if err := r.dispatchOne(ctx, p.key, p.label, p.spec, p.events); err != nil {
			return err
		}
	}
	return r.dispatchRemote(ctx)
}

// dispatchRemote is dispatch.go with the same no-op plugin file served as
// its own process on loopback TCP with mutual TLS (plugins[].remote),
// beside the launched figure and the raw gRPC-over-TLS reference.
func (r *runner) dispatchRemote(ctx context.Context) error {
	const key = "dispatch.go.remote"
	pki, err := NewPKI(r.o.Dir, "noop")
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	cmd := exec.CommandContext(ctx, r.o.Plugins.GoNoop, "--listen", addr, "--tls-cert", pki.PluginCert, "--tls-key", pki.PluginKey, "--client-ca", pki.CAFile)
	cmd.Env = append(os.Environ(), r.plugEnv...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: starting the remote plugin: %w", key, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("%s: the remote plugin never listened on %s", key, addr)
		}
		select {
		case <-exited:
			return fmt.Errorf("%s: the remote plugin exited", key)
		case <-time.After(20 * time.Millisecond):
		}
	}
	err = r.dispatchOne(ctx, key, "deliveries to the same no-op Go plugin served remotely (loopback TCP, mutual TLS), draining a backlog (memory bus)",
		PluginSpec{Name: "noop", Remote: &RemoteSpec{Address: addr, PKI: pki}}, r.o.DispatchEvents)
	stop()
	return err
}

// dispatchOne measures one plugin's deliveries/s on a core of its own.
func (r *runner) dispatchOne(ctx context.Context, key, label string, spec PluginSpec, events int) error {
	app := r.appForRun("dp")
	var d deliveries
	// Room for the whole backlog (the default bound is 64 MB).
	core, err := NewCore(ctx, CoreOptions{Bus: "memory", App: app, LarkURL: "http://127.0.0.1:1", Plugins: []PluginSpec{spec},
		UnlimitedActions: true, Observe: d.observe, Logger: r.o.Logger, BudgetMB: 4096})
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	res, err := r.dispatchRate(ctx, core, app, &d, spec.Name, events)
	_ = core.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if spec.Remote != nil {
		// The remote plugin is no child the core reaps: its CPU is not in
		// the children's accounting.
		res.PluginCPUMicros = 0
	}
	r.logf("%s: %.0f deliveries/s", key, res.PerSecond)
	r.rep.add(r.run, key, label, "deliveries/s", res.PerSecond, res)
	return nil
}

// E2EResult is one end-to-end run.
type E2EResult struct {
	Bus     string     `json:"bus"`
	Load    LoadResult `json:"load"`
	Replies struct {
		PerSecond float64       `json:"per_second"`
		Elapsed   time.Duration `json:"elapsed_ns"`
	} `json:"replies"`
	Latency    Percentiles `json:"latency"`
	Accounting Accounting  `json:"accounting"`
	// ReplyCalls counts the reply requests the emulator answered (a retried
	// action's second call is deduplicated by its uuid and not recorded).
	ReplyCalls int `json:"reply_calls"`
}

// E2E runs webhook → bus → Go echo plugin → executor → emulator with the
// generator and a ledger, waits for every reply, and accounts for them.
func (r *runner) e2e(ctx context.Context, busKind string) error {
	res, err := RunE2E(ctx, r.o, r.appForRun("e2e"), busKind, r.runTag(), r.plugEnv, r.logf)
	if err != nil {
		return err
	}
	r.logf("e2e.%s: %d events, %.0f replies/s, e2e p50 %.1f ms p99 %.1f ms, lost %d, duplicated %d",
		busKind, res.Load.Accepted, res.Replies.PerSecond, res.Latency.P50, res.Latency.P99, res.Accounting.Lost, res.Accounting.Duplicated)
	r.rep.add(r.run, "e2e."+busKind, "webhook → "+busKind+" → Go echo plugin → reply recorded in the emulator", "replies/s", res.Replies.PerSecond, res)
	r.rep.add(r.run, "e2e."+busKind+".p50", "end-to-end latency p50, flat out (backlog included), "+busKind, "ms", res.Latency.P50, nil)
	r.rep.add(r.run, "e2e."+busKind+".p99", "end-to-end latency p99, flat out (backlog included), "+busKind, "ms", res.Latency.P99, nil)
	r.rep.add(r.run, "e2e."+busKind+".lost", "lost replies, "+busKind, "events", float64(res.Accounting.Lost), nil)
	r.rep.add(r.run, "e2e."+busKind+".duplicated", "duplicated replies, "+busKind, "replies", float64(res.Accounting.Duplicated), nil)
	if r.o.Events > 0 && res.Replies.PerSecond > 0 {
		r.rep.Note("e2e.%s run %d: %d events end to end in %s (%.0f replies/s); at that rate 1 000 000 events take about %s",
			busKind, r.run+1, res.Accounting.Replied, res.Replies.Elapsed.Round(time.Millisecond), res.Replies.PerSecond,
			(time.Duration(1e6/res.Replies.PerSecond) * time.Second).Round(time.Second))
	}
	if r.o.Rate > 0 || r.o.Events > 0 || r.o.LatencyRate <= 0 {
		return nil
	}
	// Flat out, the latency is the backlog's; paced below capacity it is
	// the data path's.
	o := r.o
	o.Rate = o.LatencyRate
	paced, err := RunE2E(ctx, o, r.appForRun("lat"), busKind, r.runTag(), r.plugEnv, r.logf)
	if err != nil {
		return fmt.Errorf("paced: %w", err)
	}
	r.logf("e2e.%s.paced: %.0f events/s offered, e2e p50 %.1f ms p99 %.1f ms, lost %d, duplicated %d",
		busKind, o.Rate, paced.Latency.P50, paced.Latency.P99, paced.Accounting.Lost, paced.Accounting.Duplicated)
	lbl := fmt.Sprintf("end-to-end latency at %.0f events/s offered, %s", o.Rate, busKind)
	r.rep.add(r.run, "e2e."+busKind+".paced.p50", lbl+", p50", "ms", paced.Latency.P50, paced)
	r.rep.add(r.run, "e2e."+busKind+".paced.p99", lbl+", p99", "ms", paced.Latency.P99, nil)
	r.rep.add(r.run, "e2e."+busKind+".paced.lost", "lost replies, paced, "+busKind, "events", float64(paced.Accounting.Lost), nil)
	r.rep.add(r.run, "e2e."+busKind+".paced.duplicated", "duplicated replies, paced, "+busKind, "replies", float64(paced.Accounting.Duplicated), nil)
	return nil
}

// RunE2E is one end-to-end measurement (also bench-1m's).
func RunE2E(ctx context.Context, o Options, app App, busKind, tag string, env []string, logf func(string, ...any)) (E2EResult, error) {
	return runE2E(ctx, o, app, busKind, tag, env, logf, e2eHooks{})
}

// e2eHooks adapt an end-to-end measurement.
type e2eHooks struct {
	// during, if set, runs beside the load on the core under test; its
	// error fails the measurement.
	during func(context.Context, *Core) error
	// probation is the plugin manager's probation window (0: its default).
	probation time.Duration
}

func runE2E(ctx context.Context, o Options, app App, busKind, tag string, env []string, logf func(string, ...any), h e2eHooks) (E2EResult, error) {
	during := h.during
	res := E2EResult{Bus: busKind}
	emu, err := StartEmulator(app)
	if err != nil {
		return res, err
	}
	defer emu.Close()
	var d deliveries
	core, err := NewCore(ctx, CoreOptions{Bus: busKind, PulsarURL: o.PulsarURL, App: app, LarkURL: emu.URL(),
		Plugins: []PluginSpec{{Name: "echo", Path: o.Plugins.GoEcho, Env: env}}, UnlimitedActions: true,
		ProbationWindow: h.probation, Observe: d.observe, Logger: o.Logger})
	if err != nil {
		return res, err
	}
	defer core.Close()
	ledger := NewLedger()
	emu.Watch(ledger)
	src, err := NewSource(app, tag, 100)
	if err != nil {
		return res, err
	}
	load := Load{URL: core.URL, App: app, Concurrency: o.Concurrency, Rate: o.Rate, Events: o.Events, Retries: 100, Ledger: ledger}
	if o.Events <= 0 {
		load.Duration = o.Duration
	}
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		if o.Events < 100000 || logf == nil {
			return
		}
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				p, _ := ledger.Pending()
				logf("e2e.%s: %d posted, %d delivered, %d awaiting a reply", busKind, src.Count(), d.n.Load(), p)
			}
		}
	}()
	duringErr := make(chan error, 1)
	if during != nil {
		go func() { duringErr <- during(ctx, core) }()
	} else {
		duringErr <- nil
	}
	res.Load, err = Drive(ctx, src, load)
	close(stopProgress)
	<-progressDone
	if err != nil {
		return res, err
	}
	if err := <-duringErr; err != nil {
		return res, err
	}
	// Wait for the replies: until none is pending, or none came for 30 s.
	for {
		p, changed := ledger.Pending()
		if p == 0 {
			break
		}
		select {
		case <-changed:
		case <-time.After(30 * time.Second):
			logf("e2e.%s: %d accepted events still without a reply after 30 s idle", busKind, p)
			p = 0
		case <-ctx.Done():
			return res, ctx.Err()
		}
		if p == 0 {
			break
		}
	}
	// Stop the core first: retries in flight settle before counting.
	_ = core.Close()
	res.Accounting = ledger.Account(emu.Recorded())
	res.ReplyCalls = countReplyCalls(emu)
	res.Latency = ledger.EndToEnd()
	first, last := ledger.Span()
	if el := last.Sub(first); el > 0 {
		res.Replies.Elapsed = el
		res.Replies.PerSecond = float64(res.Accounting.Replied) / el.Seconds()
	}
	emu.Watch(nil)
	return res, nil
}

func countReplyCalls(e *Emulator) int {
	n := 0
	for _, c := range e.Emu.Calls() {
		if strings.HasSuffix(c.Path, "/reply") && c.Status == 200 {
			n++
		}
	}
	return n
}

// ActionsResult is an executor throughput measurement.
type ActionsResult struct {
	Actions   int           `json:"actions"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	PerSecond float64       `json:"per_second"`
	Recorded  int           `json:"recorded"`
}

// actions drives the executor straight (Go API, limits disabled) with one
// reply per event, concurrency at once, against the unlimited emulator.
func (r *runner) actions(ctx context.Context) error {
	app := r.o.App
	emu, err := StartEmulator(app)
	if err != nil {
		return err
	}
	defer emu.Close()
	cli, err := lark.New(lark.Config{AppID: app.ID, AppSecret: "bench-secret", BaseURL: emu.URL(), Timeout: 10 * time.Second},
		lark.Deps{Logger: r.o.Logger})
	if err != nil {
		return err
	}
	defer cli.Close(context.Background())
	exec, err := action.New(action.Config{Limits: ratelimit.Limits{Disabled: true}},
		action.Deps{Clients: map[string]action.Client{app.ID: cli}, Logger: r.o.Logger})
	if err != nil {
		return err
	}
	defer exec.Close(context.Background())
	allowed := []pluginv1.ActionKind{pluginv1.ActionKind_ACTION_KIND_REPLY}
	tag := r.runTag()
	one := func(i int64) error {
		id := "om_act_" + tag + strconv.FormatInt(i, 36)
		ev := &pluginv1.Event{EventId: "ev_" + id, EventType: envelope.TypeMessageReceive, AppId: app.ID, DedupKey: id,
			ChatId:  "oc_act_" + strconv.FormatInt(i%100, 10),
			Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: id, ChatId: "oc_act"}}}
		act := &pluginv1.Action{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MsgType: "text", ContentJson: `{"text":"bench"}`}}}
		refused, err := exec.Execute(ctx, action.Request{Plugin: "bench", Allowed: allowed, Event: ev, Actions: []*pluginv1.Action{act}, Attempts: 1})
		if err != nil {
			return err
		}
		if len(refused) > 0 {
			return fmt.Errorf("action refused: %s", refused[0].GetReason())
		}
		return nil
	}
	if err := one(-1); err != nil { // token fetch and connection warm-up
		return err
	}
	emu.Watch(nil)
	var done, next atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	end := start.Add(r.o.Duration)
	var wg sync.WaitGroup
	for range r.o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				if err := one(next.Add(1)); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	res := ActionsResult{Actions: int(done.Load()), Elapsed: elapsed, PerSecond: float64(done.Load()) / elapsed.Seconds(),
		Recorded: len(emu.Emu.Messages())}
	r.logf("actions: %.0f actions/s (%d recorded)", res.PerSecond, res.Recorded)
	r.rep.add(r.run, "actions", "executor → emulator replies, limits disabled (Go API)", "actions/s", res.PerSecond, res)
	return nil
}

// RSSResult is the process's memory under a fixed offered rate.
type RSSResult struct {
	PeakMB     float64    `json:"peak_rss_mb"`
	StartMB    float64    `json:"start_rss_mb"`
	HeapPeakMB float64    `json:"heap_peak_mb"`
	Load       LoadResult `json:"load"`
}

// rss offers RSSRate events/s to a memory-bus core with the no-op Go plugin
// and samples this process's resident set: core, generator and (idle)
// emulator together, so an upper bound of the core's.
func (r *runner) rss(ctx context.Context) error {
	app := r.appForRun("rss")
	var d deliveries
	core, err := r.startCore(ctx, "memory", app, r.noopGo(), "", &d)
	if err != nil {
		return err
	}
	defer core.Close()
	runtime.GC()
	debug.FreeOSMemory()
	res := RSSResult{StartMB: rssMB()}
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				res.PeakMB = max(res.PeakMB, rssMB())
				runtime.ReadMemStats(&ms)
				res.HeapPeakMB = max(res.HeapPeakMB, float64(ms.HeapInuse)/(1<<20))
			}
		}
	}()
	src, err := NewSource(app, r.runTag(), 100)
	if err != nil {
		close(stop)
		<-sampled
		return err
	}
	res.Load, err = Drive(ctx, src, Load{URL: core.URL, App: app, Concurrency: max(r.o.Concurrency, 64), Rate: r.o.RSSRate, Duration: r.o.RSSDuration})
	d.waitFor(ctx, int64(res.Load.Accepted), 30*time.Second)
	close(stop)
	<-sampled
	if err != nil {
		return err
	}
	r.logf("rss: peak %.0f MB at %.0f events/s offered, %.0f accepted/s", res.PeakMB, r.o.RSSRate, res.Load.PerSecond)
	r.rep.add(r.run, "rss.peak", fmt.Sprintf("peak RSS of the bench process (core + generator) at %.0f events/s offered", r.o.RSSRate), "MB", res.PeakMB, res)
	r.rep.add(r.run, "rss.rate", "accepted rate during the RSS measurement", "events/s", res.Load.PerSecond, nil)
	return nil
}

// rssMB reads this process's resident set size from /proc.
func rssMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

// SwapResult is one hot swap under load.
type SwapResult struct {
	E2EResult
	// Offered is the load's target rate; Load.PerSecond is what it reached.
	Offered float64 `json:"offered_per_second"`
	// SwapTook is from the swap command to the new version serving after
	// its probation.
	SwapTook time.Duration `json:"swap_took_ns"`
}

// swap replaces the echo plugin with a copy of itself (another file, so
// another version to the manager) a quarter of the way into a paced
// end-to-end load, and accounts for every reply: the figure is the rate
// the load reached with nothing lost or duplicated across the swap. This
// is the rate the cluster swap test used to gate on; there it is
// behaviour only.
func (r *runner) swap(ctx context.Context, busKind string) error {
	o := r.o
	o.Rate = o.SwapRate
	if o.Rate <= 0 {
		o.Rate = 2000
	}
	o.Events = 0
	// The swap starts a quarter in and takes the probation window (1 s
	// here, as in the cluster tests) plus a launch: the load outlasts it.
	const probation = time.Second
	o.Duration = max(o.Duration, 4*time.Second)
	v2 := filepath.Join(o.Dir, fmt.Sprintf("echo-v2-%s-%d", busKind, r.run))
	b, err := os.ReadFile(o.Plugins.GoEcho)
	if err != nil {
		return err
	}
	if err := os.WriteFile(v2, b, 0o755); err != nil {
		return err
	}
	defer os.Remove(v2)
	var took time.Duration
	res, err := runE2E(ctx, o, r.appForRun("swap"), busKind, r.runTag(), r.plugEnv, r.logf, e2eHooks{probation: probation, during: func(ctx context.Context, c *Core) error {
		select {
		case <-time.After(o.Duration / 4):
		case <-ctx.Done():
			return ctx.Err()
		}
		start := time.Now()
		if err := c.Mgr.Swap(ctx, "echo", manager.Spec{Path: v2, Env: r.plugEnv}); err != nil {
			return fmt.Errorf("swapping echo: %w", err)
		}
		took = time.Since(start)
		for _, st := range c.Mgr.Status() {
			if st.Name == "echo" && st.Spec.Path != v2 {
				return fmt.Errorf("after the swap echo runs %s, not %s", st.Spec.Path, v2)
			}
		}
		if took > o.Duration*3/4 {
			return fmt.Errorf("the swap took %s, longer than the load after it started (%s): raise --duration", took, o.Duration*3/4)
		}
		return nil
	}})
	if err != nil {
		return err
	}
	if res.Accounting.Lost > 0 || res.Accounting.Duplicated > 0 {
		return fmt.Errorf("%d lost and %d duplicated across the swap", res.Accounting.Lost, res.Accounting.Duplicated)
	}
	sr := SwapResult{E2EResult: res, Offered: o.Rate, SwapTook: took}
	r.logf("swap.%s: %.0f events/s reached of %.0f offered, swap took %s, lost %d, duplicated %d",
		busKind, res.Load.PerSecond, o.Rate, took.Round(time.Millisecond), res.Accounting.Lost, res.Accounting.Duplicated)
	r.rep.add(r.run, "swap."+busKind, fmt.Sprintf("events/s accepted while the echo plugin is hot-swapped, %.0f/s offered, %s bus (0 lost, 0 duplicated required)", o.Rate, busKind),
		"events/s", res.Load.PerSecond, sr)
	r.rep.add(r.run, "swap."+busKind+".share", "share of the offered rate the load reached across the swap, "+busKind, "x", res.Load.PerSecond/o.Rate, nil)
	r.rep.add(r.run, "swap."+busKind+".took", "hot swap: command to the new version serving after probation, "+busKind, "ms", float64(took.Milliseconds()), nil)
	return nil
}
