package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/bus/memory"
	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/envelope"
)

// ScenarioSustained holds each webhook under sustained load from a load
// generator in a process of its own (`larkway loadgen`): closed loop flat
// out over 64 connections for SustainDuration (overload), then, on
// larkway's buses, an open-loop step at half the measured capacity, 3× that,
// and half again. Every second it records offered, accepted, rejected,
// delivered, backlog, RSS and the CPU of the core, the generator and the
// plugin.
const ScenarioSustained = "sustained"

// SustainedRow is one second of a sustained run.
type SustainedRow struct {
	Second
	Phase     string  `json:"phase"`
	Delivered int     `json:"delivered"`
	Backlog   int64   `json:"backlog"`
	RSSMB     float64 `json:"rss_mb"`
	// CPU used in the second, in cores, per process.
	CoreCPU    float64 `json:"core_cpu"`
	LoadgenCPU float64 `json:"loadgen_cpu"`
	PluginCPU  float64 `json:"plugin_cpu"`
	// BrokerCPU is the local Pulsar broker's (Pulsar targets only).
	BrokerCPU float64 `json:"broker_cpu,omitempty"`
}

// SustainedResult is one target's sustained run.
type SustainedResult struct {
	Rows []SustainedRow `json:"rows"`
	// Steady state of the overload: medians of the seconds after the
	// first third (the bound fills, the rates settle).
	Accepted, Rejected, Delivered float64
	MaxRSSMB                      float64 `json:"max_rss_mb"`
	// CoreRSSMB is MaxRSSMB less the bench process's RSS before the core
	// started: the core's own.
	CoreRSSMB float64 `json:"core_rss_mb"`
	// CPU per request answered 503, and per request answered at all,
	// of the core in microseconds over the overload's steady state.
	CoreUSPerRequest float64 `json:"core_us_per_request"`
	// The step: events accepted and delivered in all, and the largest
	// backlog.
	StepAccepted, StepDelivered int
	StepMaxBacklog              int64
	DrainSeconds                float64
	// Per event id, over the overload and the step once drained (larkway's
	// targets): Lost counts ids answered 200 and never delivered to the
	// plugin, Duplicated the deliveries beyond an id's first, Unacked the
	// ids delivered that the generator saw no 200 for (its request failed
	// after the core stored the event: neither lost nor duplicated).
	IDs                       int `json:"ids_delivered"`
	Lost, Duplicated, Unacked int
	UnknownIDs                int64 `json:"unknown_ids"` // deliveries whose id no generator run made
	// BrokerUSPerEvent is the Pulsar broker's CPU per accepted event over
	// the overload's steady state (Pulsar targets only).
	BrokerUSPerEvent float64 `json:"broker_us_per_event,omitempty"`
}

// sustainTarget is one webhook under sustained load.
type sustainTarget struct {
	key, label string
	url        string
	app        App
	delivered  func() int64 // nil: nothing to deliver to
	ids        *idLedger    // nil: deliveries not counted per id
	backlog    func() int64
	baseRSS    float64 // the bench process's RSS before the target started (MB)
	brokerPID  int     // the Pulsar broker's JVM, sampled beside the core (0: none)
}

// baselineRSS is the bench process's RSS once its garbage is returned, and
// its memory as the Go runtime accounts it (memory.ProcessBytes).
func baselineRSS() (float64, int64) {
	runtime.GC()
	debug.FreeOSMemory()
	return rssMB(), memory.ProcessBytes()
}

// coreMemoryLimit is the Go memory limit `larkway serve` sets for a budget
// (the budget itself), over what the bench process held before the core:
// the core in this process then has the budget to itself.
func coreMemoryLimit(baseBytes int64) int64 { return baseBytes + memory.DefaultBudget }

func (r *runner) sustained(ctx context.Context) error {
	o := r.o
	if o.Loadgen == "" {
		return fmt.Errorf("no load generator: bench.Options.Loadgen names the larkway binary")
	}
	var handled atomic.Int64
	bare, err := Serve(BareResponder(), "/lark/events")
	if err != nil {
		return err
	}
	defer bare.Close()
	sdk, err := Serve(SDKDispatcher(o.App, &handled), "/lark/events")
	if err != nil {
		return err
	}
	defer sdk.Close()
	results := map[string]SustainedResult{}
	var lost []error // the round goes on, and fails at its end
	run := func(t sustainTarget, step bool) error {
		res, err := r.sustainOne(ctx, t, step)
		if err != nil {
			return fmt.Errorf("%s: %w", t.key, err)
		}
		results[t.key] = res
		r.logf("%s: steady accepted %.0f/s, rejected %.0f/s, delivered %.0f/s; RSS max %.0f MB (core's own %.0f MB); core %.1f µs/request",
			t.key, res.Accepted, res.Rejected, res.Delivered, res.MaxRSSMB, res.CoreRSSMB, res.CoreUSPerRequest)
		if step {
			r.logf("%s step: accepted %d, delivered %d, backlog max %d, drained %.1f s after the step",
				t.key, res.StepAccepted, res.StepDelivered, res.StepMaxBacklog, res.DrainSeconds)
		}
		if t.ids != nil {
			r.logf("%s: %d event ids delivered; lost %d (answered 200, never delivered), duplicated %d, delivered without a 200 %d, unknown %d",
				t.key, res.IDs, res.Lost, res.Duplicated, res.Unacked, res.UnknownIDs)
		}
		r.rep.add(r.run, "sustained."+t.key+".accepted", t.label+": accepted/s, steady state of 64-connection overload", "events/s", res.Accepted, res)
		r.rep.add(r.run, "sustained."+t.key+".delivered", t.label+": delivered/s, same seconds", "events/s", res.Delivered, nil)
		r.rep.add(r.run, "sustained."+t.key+".rss", t.label+": peak RSS of the bench process hosting it", "MB", res.MaxRSSMB, nil)
		if t.baseRSS > 0 {
			r.rep.add(r.run, "sustained."+t.key+".core_rss", t.label+": the core's peak RSS (the bench process's over its RSS before the core started)", "MB", res.CoreRSSMB, nil)
		}
		r.rep.add(r.run, "sustained."+t.key+".cpu", t.label+": core CPU per request answered, steady state", "µs", res.CoreUSPerRequest, nil)
		if t.ids != nil {
			r.rep.add(r.run, "sustained."+t.key+".lost", t.label+": event ids answered 200 and never delivered to the plugin (overload and step)", "events", float64(res.Lost), nil)
			r.rep.add(r.run, "sustained."+t.key+".duplicated", t.label+": deliveries to the plugin beyond an event id's first (overload and step)", "events", float64(res.Duplicated), nil)
			if res.Lost > 0 {
				lost = append(lost, fmt.Errorf("%s: %d accepted events were never delivered to the plugin: LOST", t.key, res.Lost))
			}
		}
		return nil
	}
	if err := run(sustainTarget{key: "ref.bare", label: "bare net/http", url: bare.URL, app: o.App}, false); err != nil {
		return err
	}
	if err := run(sustainTarget{key: "ref.sdk", label: "oapi-sdk-go dispatcher", url: sdk.URL, app: o.App,
		delivered: handled.Load}, false); err != nil {
		return err
	}
	for _, b := range o.Buses {
		app := r.appForRun("su")
		d := &deliveries{ids: newIDLedger()}
		var plain PlainProducerResult
		if b == "pulsar" {
			if plain, err = r.pulsarRefs(ctx, app); err != nil {
				return err
			}
		}
		base, baseBytes := baselineRSS()
		core, err := r.startCore(ctx, b, app, r.noopGo(), "", d)
		if err != nil {
			return fmt.Errorf("starting a core on %s: %w", b, err)
		}
		t := sustainTarget{key: "ingest." + b, label: "larkway, " + b + " bus, no-op Go plugin", url: core.URL, app: app,
			delivered: d.n.Load, ids: d.ids, baseRSS: base}
		if b == "pulsar" {
			t.brokerPID = brokerPID()
		}
		t.backlog = noopBacklog(ctx, core, app)
		prevLimit := debug.SetMemoryLimit(-1)
		if b == "memory" { // as serve sets it, over what the bench held before
			debug.SetMemoryLimit(coreMemoryLimit(baseBytes))
		}
		err = run(t, true)
		if err == nil && b == "pulsar" {
			err = r.pulsarAfter(ctx, t, results[t.key], plain)
		}
		debug.SetMemoryLimit(prevLimit)
		_ = core.Close()
		runtime.GC()
		debug.FreeOSMemory()
		if err != nil {
			return err
		}
		res := results[t.key]
		if err := r.sustainShave(ctx, b, min(res.Accepted, res.Delivered)); err != nil {
			if errors.Is(err, errLost) {
				lost = append(lost, err)
				continue
			}
			return err
		}
	}
	// A core whose plugin has stalled, its memory bus filled to the default
	// bound: what a refusal costs, and the RSS the bound holds (with the
	// memory limit serve sets). The admission wait is 1 ms so the 64
	// connections spin on refusals rather than wait.
	if err := r.sustainFull(ctx, run, results); err != nil {
		return err
	}
	// Same-round ratios.
	sdkRes := results["ref.sdk"]
	for _, b := range o.Buses {
		res := results["ingest."+b]
		if sdkRes.Delivered > 0 {
			r.rep.add(r.run, "sustained.ingest."+b+".vs_sdk", "accepted and delivered (the lower) ÷ the SDK's handled, same round", "×",
				min(res.Accepted, res.Delivered)/sdkRes.Delivered, nil)
		}
	}
	return errors.Join(lost...)
}

// sustainOne runs the overload (and the step) against t.
func (r *runner) sustainOne(ctx context.Context, t sustainTarget, step bool) (SustainedResult, error) {
	var res SustainedResult
	if t.ids != nil {
		defer t.ids.removeFiles()
	}
	over := []Phase{{Rate: 0, Duration: r.o.SustainDuration}}
	rows, err := r.loadgen(ctx, t, "overload", over, r.o.SustainConns)
	if err != nil {
		return res, err
	}
	res.Rows = rows
	full := rows
	if n := len(full); n > 0 && full[n-1].Partial {
		full = full[:n-1]
	}
	steady := full[len(full)/3:]
	med := func(f func(SustainedRow) float64) float64 {
		xs := make([]float64, 0, len(steady))
		for _, row := range steady {
			xs = append(xs, f(row))
		}
		return Median(xs)
	}
	res.Accepted = med(func(x SustainedRow) float64 { return float64(x.Accepted) })
	res.Rejected = med(func(x SustainedRow) float64 { return float64(x.Rejected) })
	res.Delivered = med(func(x SustainedRow) float64 { return float64(x.Delivered) })
	var cpu, reqs float64
	for _, row := range steady {
		cpu += row.CoreCPU
		reqs += float64(row.Accepted + row.Rejected + row.Failed)
	}
	if reqs > 0 {
		res.CoreUSPerRequest = cpu / reqs * 1e6
	}
	if t.brokerPID > 0 {
		var broker, acc float64
		for _, row := range steady {
			broker += row.BrokerCPU
			acc += float64(row.Accepted)
		}
		if acc > 0 {
			res.BrokerUSPerEvent = broker / acc * 1e6
		}
	}
	if t.delivered == nil {
		res.Delivered = res.Accepted // the bare responder delivers nothing: its answer is all it does
	}
	if step {
		if _, err := r.drained(ctx, t); err != nil {
			return res, err
		}
		capacity := max(min(res.Accepted, res.Delivered), 100)
		d0 := t.delivered()
		third := max(r.o.SustainDuration/3, time.Second)
		phases := []Phase{{Rate: capacity / 2, Duration: third}, {Rate: capacity * 1.5, Duration: third}, {Rate: capacity / 2, Duration: third}}
		rows, err := r.loadgen(ctx, t, "step", phases, 4*r.o.SustainConns)
		if err != nil {
			return res, err
		}
		res.Rows = append(res.Rows, rows...)
		stepEnd := time.Now()
		for _, row := range rows {
			res.StepAccepted += row.Accepted
			res.StepMaxBacklog = max(res.StepMaxBacklog, row.Backlog)
		}
		ok, err := r.drained(ctx, t)
		if err != nil {
			return res, err
		}
		res.DrainSeconds = time.Since(stepEnd).Seconds()
		res.StepDelivered = int(t.delivered() - d0)
		if !ok {
			r.logf("%s: the backlog did not drain", t.key)
		}
	}
	if t.ids != nil {
		if err := t.ids.accepted(); err != nil {
			return res, err
		}
		a := t.ids.Account(nil)
		res.IDs, res.Lost, res.Duplicated, res.Unacked = a.Replied, a.Lost, a.Duplicated, a.Unexpected
		res.UnknownIDs = t.ids.unknown.Load()
	}
	for _, row := range res.Rows {
		res.MaxRSSMB = max(res.MaxRSSMB, row.RSSMB)
	}
	if t.baseRSS > 0 {
		res.CoreRSSMB = res.MaxRSSMB - t.baseRSS
	}
	return res, nil
}

// drained waits until t's backlog is empty and deliveries have stopped
// moving (false if they stopped with a backlog left).
func (r *runner) drained(ctx context.Context, t sustainTarget) (bool, error) {
	if t.delivered == nil {
		return true, nil
	}
	last, still := t.delivered(), 0
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		n := t.delivered()
		backlog := int64(0)
		if t.backlog != nil {
			backlog = t.backlog()
		}
		if backlog == 0 && n == last {
			return true, nil
		}
		if n == last {
			if still++; still > 50 { // 10 s without a delivery
				return false, nil
			}
		} else {
			still = 0
		}
		last = n
	}
}

// loadgen runs `larkway loadgen` against t through phases and samples the
// core's side at each second the generator reports.
func (r *runner) loadgen(ctx context.Context, t sustainTarget, phase string, phases []Phase, conns int) ([]SustainedRow, error) {
	var spec []string
	for _, p := range phases {
		spec = append(spec, fmt.Sprintf("%s@%.0f", p.Duration, p.Rate))
	}
	run := r.runTag() + phase + "_"
	args := []string{"loadgen", "--url", t.url, "--app-id", t.app.ID,
		"--token", t.app.VerificationToken, "--encrypt-key", t.app.EncryptKey, "--phases", strings.Join(spec, ","),
		"--conns", strconv.Itoa(conns), "--run", run}
	if t.ids != nil {
		f, err := os.CreateTemp("", "larkway-accepted-*")
		if err != nil {
			return nil, err
		}
		_ = f.Close()
		args = append(args, "--accepted-ids", f.Name())
		t.ids.addRun(run, f.Name())
	}
	cmd := exec.CommandContext(ctx, r.o.Loadgen, args...)
	cmd.Env = append(os.Environ(), r.plugEnv...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = r.o.Log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the load generator: %w", err)
	}
	pid := cmd.Process.Pid
	self := os.Getpid()
	prevSelf, _ := cpuTimes()
	prevGen, prevPlug := procCPU(pid), childrenCPU(self, pid)
	prevBroker := time.Duration(0)
	if t.brokerPID > 0 {
		prevBroker = procCPU(t.brokerPID)
	}
	prevDelivered := int64(0)
	if t.delivered != nil {
		prevDelivered = t.delivered()
	}
	prevAt := time.Now()
	var rows []SustainedRow
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var s Second
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			continue
		}
		now := time.Now()
		el := now.Sub(prevAt).Seconds()
		selfCPU, _ := cpuTimes()
		gen, plug := procCPU(pid), childrenCPU(self, pid)
		row := SustainedRow{Second: s, Phase: phase, RSSMB: rssMB(),
			CoreCPU: (selfCPU - prevSelf).Seconds() / el, LoadgenCPU: (gen - prevGen).Seconds() / el, PluginCPU: (plug - prevPlug).Seconds() / el}
		if t.delivered != nil {
			n := t.delivered()
			row.Delivered = int(n - prevDelivered)
			prevDelivered = n
		}
		if t.backlog != nil {
			row.Backlog = t.backlog()
		}
		if t.brokerPID > 0 {
			br := procCPU(t.brokerPID)
			row.BrokerCPU = (br - prevBroker).Seconds() / el
			prevBroker = br
		}
		prevSelf, prevGen, prevPlug, prevAt = selfCPU, gen, plug, now
		rows = append(rows, row)
		r.logf("%s %s t=%2d offered %6d unsent %6d accepted %6d rejected %6d delivered %6d backlog %7d rss %4.0f MB cpu core %.2f gen %.2f plugin %.2f p99 %.1f ms",
			t.key, phase, s.T, s.Offered, s.Unsent, s.Accepted, s.Rejected, row.Delivered, row.Backlog, row.RSSMB, row.CoreCPU, row.LoadgenCPU, row.PluginCPU, s.AckP99)
	}
	if err := cmd.Wait(); err != nil {
		return rows, fmt.Errorf("load generator: %w", err)
	}

	if len(rows) == 0 {
		return nil, fmt.Errorf("the load generator reported nothing")
	}
	return rows, nil
}

// procCPU is a process's user + system CPU time from /proc (0 if gone).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// Fields after the parenthesized command name: state is field 3,
	// utime 14 and stime 15 (1-based), in clock ticks (100 per second).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// childrenCPU sums procCPU over this process's children but skip (the
// plugins, when skip is the generator).
func childrenCPU(self, skip int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", self, self))
	var total time.Duration
	seen := map[int]bool{}
	add := func(list string) {
		for _, f := range strings.Fields(list) {
			pid, _ := strconv.Atoi(f)
			if pid != 0 && pid != skip && !seen[pid] {
				seen[pid] = true
				total += procCPU(pid)
			}
		}
	}
	if err == nil {
		add(string(b))
	}
	// Children started from other threads are listed under those.
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", self))
	for _, tk := range tasks {
		if c, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", self, tk.Name())); err == nil {
			add(string(c))
		}
	}
	return total
}

// sustainFull measures a core at its bound (see sustained).
func (r *runner) sustainFull(ctx context.Context, run func(sustainTarget, bool) error, results map[string]SustainedResult) error {
	app := r.appForRun("fu")
	base, baseBytes := baselineRSS()
	// serve's limit, over what the bench process held before the core.
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(coreMemoryLimit(baseBytes)))
	core, err := NewCore(ctx, CoreOptions{Bus: "memory", App: app, LarkURL: "http://127.0.0.1:1",
		AdmissionWait: time.Millisecond, Logger: r.o.Logger})
	if err != nil {
		return fmt.Errorf("starting a core at its bound: %w", err)
	}
	defer core.Close()
	bound := int64(memory.DefaultBudget)
	topic := envelope.Topic(app.ID)
	stalled, err := core.Bus.Subscribe(ctx, bus.SubscribeOptions{Topic: topic, Subscription: "stalled"})
	if err != nil {
		return err
	}
	defer stalled.Close(context.WithoutCancel(ctx))
	// Filled in process, with the events ingest would store.
	evs, err := r.events(app, 100)
	if err != nil {
		return err
	}
	held := 0
	for ; ; held++ {
		ev := evs[held%len(evs)]
		ev.EventId = fmt.Sprintf("fill_%d", held)
		msg := envelope.EncodeRaw(nil, app.ID, ev.GetRawJson(), ev)
		if err := core.Bus.Publish(ctx, topic, msg); err != nil {
			if errors.Is(err, bus.ErrFull) {
				break
			}
			return err
		}
	}
	r.logf("ingest.full: %d events fill the %d MB budget (%.0f bytes of it each)", held, bound>>20, float64(bound)/float64(held))
	r.logUsage("ingest.full: filled", baseBytes)
	if err := run(sustainTarget{key: "ingest.full", label: "larkway, memory bus at its default bound (plugin stalled)", url: core.URL, app: app, baseRSS: base}, false); err != nil {
		return err
	}
	full := results["ingest.full"]
	r.logUsage("ingest.full: after the overload", baseBytes)
	r.rep.add(r.run, "sustained.full.rss_vs_bound", "the core's peak RSS (the bench process's over its RSS before the core) ÷ bus.memory.budget_mb, at the bound (goal ≤ 1.2×)", "×",
		full.CoreRSSMB/float64(bound>>20), nil)
	if bare := results["ref.bare"]; bare.CoreUSPerRequest > 0 {
		r.rep.add(r.run, "sustained.reject_cost", "core CPU per 503 at the bound ÷ bare's per 200, same round (goal ≤ 1.5×)", "×",
			full.CoreUSPerRequest/bare.CoreUSPerRequest, nil)
	}
	return nil
}

// logUsage logs where the bench process's memory is, by runtime/metrics,
// over its baseline baseBytes (memory.ProcessBytes before the core).
func (r *runner) logUsage(what string, baseBytes int64) {
	u := memory.ReadUsage()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.logf("%s: runtime memory %d MB (%d MB over the bench's own), limit %d MB; heap live at the last GC %d MB, in objects %d MB, free slots in spans holding objects %d MB, free pages kept %d MB; stacks %d MB, other runtime %d MB; RSS %.0f MB; the bus's footprint estimate %d MB",
		what, u.Mapped>>20, (u.Mapped-baseBytes)>>20, u.Limit>>20, u.Live>>20, u.Objects>>20, u.Unused>>20, u.Free>>20,
		ms.StackSys>>20, (u.Mapped-u.Objects-u.Unused-u.Free-int64(ms.StackSys))>>20, rssMB(), u.Footprint(0)>>20)
}

// idLedger counts one target's deliveries per event id, on the e2e
// scenario's ledger. The ids are the load generator's, "ev_bench_" + its
// run's prefix + a base-36 sequence number; the ledger's keys are the
// run's index in the high bits and the sequence number in the low 40, so
// that the hundreds of thousands of ids of a run do not weigh as strings
// in the RSS measured beside them. While the load runs only deliveries are
// recorded (~25 bytes per id); the accepted ids the generator runs wrote
// are read once the target is drained (~80 bytes per id more).
type idLedger struct {
	*LedgerOf[uint64]
	mu      sync.RWMutex
	runs    map[string]uint64 // "ev_bench_" + run prefix → index
	files   []string          // each run's --accepted-ids, not read yet
	unknown atomic.Int64      // deliveries of ids no run made
}

func newIDLedger() *idLedger {
	return &idLedger{LedgerOf: NewLedgerOf[uint64](), runs: map[string]uint64{}}
}

// addRun registers a generator run's prefix (its --run) and the file it
// writes its accepted ids to.
func (l *idLedger) addRun(run, acceptedIDs string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs["ev_bench_"+run] = uint64(len(l.runs))
	l.files = append(l.files, acceptedIDs)
}

func (l *idLedger) key(id string) (uint64, bool) {
	i := strings.LastIndexByte(id, '_')
	if i < 0 {
		return 0, false
	}
	seq, err := strconv.ParseUint(id[i+1:], 36, 40)
	if err != nil {
		return 0, false
	}
	l.mu.RLock()
	run, ok := l.runs[id[:i+1]]
	l.mu.RUnlock()
	return run<<40 | seq, ok
}

// delivered records one delivery of the event id to the plugin.
func (l *idLedger) delivered(id string) {
	k, ok := l.key(id)
	if !ok {
		l.unknown.Add(1)
		return
	}
	l.Reply(k, time.Time{})
}

// accepted records the ids the generator runs wrote as posted and
// accepted, and removes their files.
func (l *idLedger) accepted() error {
	l.mu.RLock()
	files := slices.Clone(l.files)
	l.mu.RUnlock()
	defer l.removeFiles()
	for _, path := range files {
		if err := l.acceptedFrom(path); err != nil {
			return err
		}
	}
	return nil
}

// removeFiles removes the files of runs not read (a failed target).
func (l *idLedger) removeFiles() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.files {
		_ = os.Remove(f)
	}
	l.files = nil
}

func (l *idLedger) acceptedFrom(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("reading the accepted ids: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, ok := l.key(sc.Text())
		if !ok {
			return fmt.Errorf("reading the accepted ids: %q is not an id of this target's runs", sc.Text())
		}
		l.Posted(k, time.Time{})
		l.Accepted(k)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading the accepted ids: %w", err)
	}
	return nil
}

// errLost marks a run that lost accepted events.
var errLost = errors.New("LOST")

// sustainShave is the peak the platform exists for: a plugin slower than
// ingest (it handles a quarter of the pipeline's measured capacity, C), an
// open-loop load at C/2, then 1.5·C, then C/2 again, each a third of
// SustainDuration. Ingest takes the whole peak (nothing refused), the bus
// holds the excess (its backlog grows by C/2 a second), the plugin goes on
// at its full rate, and the last third drains the backlog. It reports the
// backlog's peak, the rates during the peak, how long after the peak the
// backlog was empty, and lost and duplicated event ids.
func (r *runner) sustainShave(ctx context.Context, busKind string, capacity float64) error {
	c := max(capacity/4, 200)
	app := r.appForRun("sh")
	d := &deliveries{ids: newIDLedger()}
	plugin := []PluginSpec{{Name: "noop", Path: r.o.Plugins.GoNoop,
		Env: append(slices.Clone(r.plugEnv), "LARKWAY_BENCH_NOOP_RATE="+strconv.FormatFloat(c, 'f', 0, 64))}}
	core, err := r.startCore(ctx, busKind, app, plugin, "", d)
	if err != nil {
		return fmt.Errorf("starting a core with a slow plugin on %s: %w", busKind, err)
	}
	defer core.Close()
	t := sustainTarget{key: "shave." + busKind, label: "larkway, " + busKind + " bus, a plugin handling " + strconv.FormatFloat(c, 'f', 0, 64) + " events/s",
		url: core.URL, app: app, delivered: d.n.Load, ids: d.ids}
	defer t.ids.removeFiles()
	t.backlog = noopBacklog(ctx, core, app)
	third := max(r.o.SustainDuration/3, time.Second)
	phases := []Phase{{Rate: c / 2, Duration: third}, {Rate: c * 1.5, Duration: third}, {Rate: c / 2, Duration: third}}
	rows, err := r.loadgen(ctx, t, "shave", phases, 4*r.o.SustainConns)
	if err != nil {
		return err
	}
	// Then until the backlog is empty, as long again at most.
	peakEnd := 2 * int(third/time.Second)
	drainedAt := -1
	var maxBacklog int64
	var peakAcc, peakRej, peakDel []float64
	for i, row := range rows {
		maxBacklog = max(maxBacklog, row.Backlog)
		if i >= peakEnd-int(third/time.Second) && i < peakEnd && !row.Partial {
			peakAcc = append(peakAcc, float64(row.Accepted))
			peakRej = append(peakRej, float64(row.Rejected+row.Failed))
			peakDel = append(peakDel, float64(row.Delivered))
		}
		if i >= peakEnd && drainedAt < 0 && row.Backlog == 0 {
			drainedAt = i - peakEnd + 1
		}
	}
	ok, err := r.drained(ctx, t)
	if err != nil {
		return err
	}
	if err := t.ids.accepted(); err != nil {
		return err
	}
	a := t.ids.Account(nil)
	drain := float64(drainedAt)
	if drainedAt < 0 {
		drain = float64(len(rows) - peakEnd) // not within the load: at least that
	}
	r.logf("%s: plugin at %.0f/s; peak accepted %.0f/s (refused %.0f/s), delivered %.0f/s; backlog max %d, empty %.0f s after the peak (drained: %v); %d ids delivered, %d lost, %d duplicated",
		t.key, c, Median(peakAcc), Median(peakRej), Median(peakDel), maxBacklog, drain, ok, a.Replied, a.Lost, a.Duplicated)
	for _, f := range []struct {
		key, label, unit string
		v                float64
	}{
		{"capacity", "the plugin's rate (a quarter of the pipeline's)", "events/s", c},
		{"peak_accepted", "accepted during the 1.5× peak (median second)", "events/s", Median(peakAcc)},
		{"peak_refused", "refused or failed during the peak (median second)", "events/s", Median(peakRej)},
		{"peak_delivered", "delivered during the peak (median second): the plugin at full speed", "events/s", Median(peakDel)},
		{"max_backlog", "largest bus backlog", "events", float64(maxBacklog)},
		{"drain", "seconds after the peak until the backlog was empty (the last third, at C/2 offered, drains C/2 a second)", "s", drain},
		{"lost", "event ids answered 200 and never delivered", "events", float64(a.Lost)},
		{"duplicated", "deliveries beyond an event id's first", "events", float64(a.Duplicated)},
	} {
		var detail any
		if f.key == "capacity" { // the per-second rows, once
			detail = SustainedResult{Rows: rows, IDs: a.Replied, Lost: a.Lost, Duplicated: a.Duplicated, Unacked: a.Unexpected}
		}
		r.rep.add(r.run, "sustained."+t.key+"."+f.key, t.label+": "+f.label, f.unit, f.v, detail)
	}
	if a.Lost > 0 || !ok {
		return fmt.Errorf("%s: %d accepted events were never delivered to the plugin (drained: %v): %w", t.key, a.Lost, ok, errLost)
	}
	return nil
}

// noopBacklog reads the backlog of core's "noop" plugin subscription, or
// is nil when core's bus keeps none.
func noopBacklog(ctx context.Context, core *Core, app App) func() int64 {
	bl, ok := core.Bus.(bus.Backlogger)
	if !ok {
		return nil
	}
	topic, sub := envelope.Topic(app.ID), dispatch.Subscription("noop")
	return func() int64 {
		n, _ := bl.Backlog(ctx, topic, sub)
		return n
	}
}
