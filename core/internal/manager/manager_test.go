package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/bus/memory"
	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/plugintest"
	"github.com/larkway/larkway/core/internal/testenv"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// counter records executed results per event id and which version produced them.
type counter struct {
	mu      sync.Mutex
	byEvent map[string]int
	order   []string
}

func (c *counter) Execute(_ context.Context, req action.Request) ([]*pluginv1.RefusedAction, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byEvent[req.Event.GetEventId()]++
	c.order = append(c.order, req.Event.GetEventId())
	return nil, nil
}

func (c *counter) SendFallback(context.Context, string, *pluginv1.Event, string) error { return nil }

func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.order)
}

type env struct {
	t      *testing.T
	bus    *memory.Bus
	exec   *counter
	mgr    *Manager
	cancel context.CancelFunc
	done   chan error

	mu        sync.Mutex
	instances map[string][]*plugintest.Plugin // by spec path
	failStart map[string]error                // by spec path
}

func manifest(version string) *pluginv1.Manifest {
	return &pluginv1.Manifest{Name: "p", Version: version, MaxInFlight: 4,
		Subscriptions:  []*pluginv1.Subscription{{EventTypes: []string{"im.message.receive_v1"}}},
		AllowedActions: []pluginv1.ActionKind{pluginv1.ActionKind_ACTION_KIND_REPLY}}
}

const topic = "events-mgr"

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	return newEnvWith(t, cfg, nil, slog.New(slog.DiscardHandler))
}

// newEnvWith runs the manager on launcher (nil: in-process test plugins)
// and logger.
func newEnvWith(t *testing.T, cfg Config, launcher Launcher, logger *slog.Logger) *env {
	t.Helper()
	e := &env{t: t, bus: memory.New(slog.New(slog.DiscardHandler)), exec: &counter{byEvent: map[string]int{}},
		instances: map[string][]*plugintest.Plugin{}, failStart: map[string]error{}}
	t.Cleanup(func() { _ = e.bus.Close(context.Background()) })
	disp := dispatch.New(dispatch.Config{Topics: []string{topic}, Deadline: 2 * time.Second, MaxAttempts: 20, MaxInFlight: 4,
		Backoff: func(int) time.Duration { return 20 * time.Millisecond }}, e.bus, e.exec, slog.New(slog.DiscardHandler), nil)
	if launcher == nil {
		launcher = LauncherFunc(e.launch)
	}
	e.mgr = New(cfg, disp, launcher, logger, nil)
	return e
}

func (e *env) launch(_ context.Context, s Spec) (Instance, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.failStart[s.Path]; err != nil {
		return nil, err
	}
	p := plugintest.New(e.t, manifest(s.Path), plugintest.ReplyWithText)
	e.instances[s.Path] = append(e.instances[s.Path], p)
	return p, nil
}

func (e *env) latest(path string) *plugintest.Plugin {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.instances[path]
	if len(l) == 0 {
		return nil
	}
	return l[len(l)-1]
}

func (e *env) launches(path string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.instances[path])
}

var errExec = errors.New("exec format error")

func (e *env) start(spec Spec) {
	e.t.Helper()
	e.startWithin(spec, 5*time.Second)
}

func (e *env) startWithin(spec Spec, timeout time.Duration) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	ready := make(chan struct{})
	go func() { e.done <- e.mgr.Run(ctx, []Spec{spec}, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-e.done:
		e.t.Fatalf("run: %v", err)
	}
	e.t.Cleanup(func() { e.stop() })
	testenv.Eventually(e.t, timeout, "plugin never served", func() bool { return e.state() == StateServing })
}

func (e *env) stop() {
	e.cancel()
	select {
	case <-e.done:
	case <-time.After(30 * time.Second):
		e.t.Fatal("manager did not stop")
	}
}

func (e *env) state() State { return e.mgr.Status()[0].State }

var seq sync.Mutex
var n int

func (e *env) publish(chat string) string {
	seq.Lock()
	n++
	id := fmt.Sprintf("ev-%d", n)
	seq.Unlock()
	ev := &pluginv1.Event{EventId: id, EventType: "im.message.receive_v1", AppId: "cli", DedupKey: id, ChatId: chat,
		Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: "om_" + id, ChatId: chat, Text: id}}}
	msg, _ := envelope.Encode(ev)
	if err := e.bus.Publish(context.Background(), topic, msg); err != nil {
		e.t.Fatal(err)
	}
	return id
}

// exactlyOnce asserts every id was executed exactly once.
func (e *env) exactlyOnce(ids []string) {
	e.t.Helper()
	testenv.Eventually(e.t, 20*time.Second, "not every event handled", func() bool { return e.exec.total() >= len(ids) })
	e.exec.mu.Lock()
	defer e.exec.mu.Unlock()
	for _, id := range ids {
		if c := e.exec.byEvent[id]; c != 1 {
			e.t.Fatalf("event %s handled %d times", id, c)
		}
	}
	if len(e.exec.order) != len(ids) {
		e.t.Fatalf("%d results for %d events", len(e.exec.order), len(ids))
	}
}

func fast() Config {
	return Config{RestartBackoff: 10 * time.Millisecond, RestartBackoffMax: 50 * time.Millisecond, HealthInterval: 20 * time.Millisecond,
		HealthFailures: 2, ProbationWindow: 200 * time.Millisecond, DrainTimeout: 5 * time.Second, QuarantineAfter: 3, QuarantineWindow: time.Minute}
}

func TestCrashedPluginRestartsAndLosesNothing(t *testing.T) {
	e := newEnv(t, fast())
	e.start(Spec{Name: "p", Path: "v1"})
	var ids []string
	for i := range 20 {
		ids = append(ids, e.publish(fmt.Sprintf("oc_%d", i%3)))
	}
	e.latest("v1").Crash()
	for i := range 20 {
		ids = append(ids, e.publish(fmt.Sprintf("oc_%d", i%3)))
	}
	e.exactlyOnce(ids)
	if e.launches("v1") < 2 {
		t.Fatalf("plugin was not restarted")
	}
	if st := e.mgr.Status()[0]; st.Restarts < 1 || st.State != StateServing {
		t.Fatalf("status %+v", st)
	}
}

func TestFailingHealthChecksRestart(t *testing.T) {
	e := newEnv(t, fast())
	e.start(Spec{Name: "p", Path: "v1"})
	first := e.latest("v1")
	first.SetHealthy(false)
	testenv.Eventually(t, 5*time.Second, "unhealthy plugin not replaced", func() bool { return e.launches("v1") >= 2 && e.state() == StateServing })
	if !first.Closed() {
		t.Fatal("unhealthy instance not stopped")
	}
}

func TestQuarantineAfterRepeatedCrashes(t *testing.T) {
	e := newEnv(t, fast())
	e.start(Spec{Name: "p", Path: "v1"})
	e.mu.Lock()
	e.failStart["v1"] = errExec
	e.mu.Unlock()
	e.latest("v1").Crash()
	testenv.Eventually(t, 5*time.Second, "not quarantined", func() bool { return e.state() == StateQuarantined })
	id := e.publish("oc_q") // waits in the subscription
	e.mu.Lock()
	e.failStart["v1"] = nil
	e.mu.Unlock()
	if err := e.mgr.Enable(context.Background(), "p"); err != nil {
		t.Fatal(err)
	}
	e.exactlyOnce([]string{id})
}

// load publishes events over chats chats until the returned function is
// called; that stops it and returns the published event ids.
func (e *env) load(chats int) func() []string {
	var mu sync.Mutex
	var ids []string
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := e.publish(fmt.Sprintf("oc_%d", i%chats))
			mu.Lock()
			ids = append(ids, id)
			mu.Unlock()
		}
	}()
	return func() []string {
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return ids
	}
}

func TestSwapUnderLoadExactlyOnce(t *testing.T) {
	e := newEnv(t, fast())
	e.start(Spec{Name: "p", Path: "v1"})
	stopLoad := e.load(7)
	testenv.Eventually(t, 5*time.Second, "no traffic", func() bool { return e.exec.total() > 50 })
	if err := e.mgr.Swap(context.Background(), "p", Spec{Path: "v2"}); err != nil {
		t.Fatalf("swap: %v", err)
	}
	testenv.Eventually(t, 5*time.Second, "no traffic after swap", func() bool { return len(e.latest("v2").Seen()) > 50 })
	e.exactlyOnce(stopLoad())
	st := e.mgr.Status()[0]
	if st.Version != "v2" || st.Spec.Path != "v2" || st.Previous == nil || st.Previous.Path != "v1" || st.Swaps != 1 {
		t.Fatalf("status %+v", st)
	}
	if !e.latest("v1").Closed() || len(e.latest("v1").Seen()) == 0 {
		t.Fatal("old version not used then stopped")
	}
}

func TestSwapToBrokenVersionKeepsTheOld(t *testing.T) {
	e := newEnv(t, fast())
	e.start(Spec{Name: "p", Path: "v1"})
	e.mu.Lock()
	e.failStart["bad"] = errExec
	e.mu.Unlock()
	err := e.mgr.Swap(context.Background(), "p", Spec{Path: "bad"})
	if !errors.Is(err, ErrRolledBack) {
		t.Fatalf("err = %v", err)
	}
	if st := e.mgr.Status()[0]; st.Spec.Path != "v1" || st.State != StateServing || e.latest("v1").Closed() {
		t.Fatalf("status %+v", st)
	}
	e.exactlyOnce([]string{e.publish("oc_1")})
}

func TestSwapRollsBackOnProbationCrash(t *testing.T) {
	cfg := fast()
	cfg.ProbationWindow = 5 * time.Second
	e := newEnv(t, cfg)
	e.start(Spec{Name: "p", Path: "v1"})
	errc := make(chan error, 1)
	go func() { errc <- e.mgr.Swap(context.Background(), "p", Spec{Path: "v2"}) }()
	testenv.Eventually(t, 5*time.Second, "v2 not started", func() bool { return e.latest("v2") != nil })
	// v2 takes traffic once it has passed its health check, a moment after
	// it started: events published before then go to v1. Publish until v2
	// has one (every event is checked exactly once below).
	var ids []string
	testenv.Eventually(t, 10*time.Second, "v2 got no traffic", func() bool {
		if len(e.latest("v2").Seen()) > 0 {
			return true
		}
		ids = append(ids, e.publish("oc_1"))
		return false
	})
	e.latest("v2").Crash()
	if err := <-errc; !errors.Is(err, ErrRolledBack) {
		t.Fatalf("err = %v", err)
	}
	if st := e.mgr.Status()[0]; st.Spec.Path != "v1" || st.State != StateServing || st.Version != "v1" {
		t.Fatalf("status %+v", st)
	}
	ids = append(ids, e.publish("oc_1"))
	e.exactlyOnce(ids)
}

func TestDisableHoldsEventsUntilEnabled(t *testing.T) {
	e := newEnv(t, fast())
	e.start(Spec{Name: "p", Path: "v1"})
	if err := e.mgr.Disable(context.Background(), "p"); err != nil {
		t.Fatal(err)
	}
	if e.state() != StateDisabled || !e.latest("v1").Closed() {
		t.Fatalf("state %s", e.state())
	}
	id := e.publish("oc_d")
	if err := e.mgr.Enable(context.Background(), "p"); err != nil {
		t.Fatal(err)
	}
	e.exactlyOnce([]string{id})
}

func TestUnknownPlugin(t *testing.T) {
	e := newEnv(t, fast())
	e.start(Spec{Name: "p", Path: "v1"})
	if err := e.mgr.Swap(context.Background(), "nope", Spec{Path: "x"}); !errors.Is(err, ErrUnknownPlugin) {
		t.Fatalf("err = %v", err)
	}
	if err := e.mgr.Rollback(context.Background(), "p"); err == nil {
		t.Fatal("rollback without a previous version succeeded")
	}
}

// A file that no longer matches its pin will not match on the next try
// either: the first refusal quarantines, without the restart loop.
func TestUnverifiedFileQuarantinesAtOnce(t *testing.T) {
	e := newEnv(t, fast())
	e.start(Spec{Name: "p", Path: "v1"})
	e.mu.Lock()
	e.failStart["v1"] = fmt.Errorf("starting: %w: file main.py: expected sha256 00, actual 11", ErrUnverified)
	e.mu.Unlock()
	e.latest("v1").Crash()
	testenv.Eventually(t, 5*time.Second, "not quarantined", func() bool { return e.state() == StateQuarantined })
	// Two restarts counted: the crash, then the one refused start (fast()
	// quarantines after three otherwise).
	if st := e.mgr.Status()[0]; st.Restarts != 2 || !strings.Contains(st.LastError, "main.py") {
		t.Fatalf("status %+v: want quarantined on the first refusal, naming the file", st)
	}
}

// A swap whose new version fails probation while the old one no longer
// starts (its pinned file changed meanwhile) leaves nothing serving: the
// supervisor treats that as a crash — here quarantining at once — instead
// of watching an instance that is gone.
func TestProbationRollbackToUnstartableOldVersion(t *testing.T) {
	cfg := fast()
	cfg.ProbationWindow = 5 * time.Second
	e := newEnv(t, cfg)
	e.start(Spec{Name: "p", Path: "v1"})
	errc := make(chan error, 1)
	go func() { errc <- e.mgr.Swap(context.Background(), "p", Spec{Path: "v2"}) }()
	testenv.Eventually(t, 5*time.Second, "v2 not started", func() bool { return e.latest("v2") != nil })
	e.mu.Lock()
	e.failStart["v1"] = fmt.Errorf("%w: file v1/main.py", ErrUnverified)
	e.mu.Unlock()
	e.latest("v2").Crash()
	if err := <-errc; !errors.Is(err, ErrRolledBack) || !errors.Is(err, ErrUnverified) {
		t.Fatalf("err = %v", err)
	}
	testenv.Eventually(t, 5*time.Second, "not quarantined", func() bool { return e.state() == StateQuarantined })
	if st := e.mgr.Status()[0]; st.Spec.Path != "v1" || !strings.Contains(st.LastError, "v1/main.py") {
		t.Fatalf("status %+v", st)
	}
	// Restored, it serves again, and the events held meanwhile with it.
	id := e.publish("oc_r")
	e.mu.Lock()
	e.failStart["v1"] = nil
	e.mu.Unlock()
	if err := e.mgr.Enable(context.Background(), "p"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "not serving again", func() bool { return e.state() == StateServing })
	e.exactlyOnce([]string{id})
}
