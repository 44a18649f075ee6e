package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/testenv"
)

// A canary serves its half of the chats beside v1 under load, then is
// promoted: every event is handled exactly once across both, and v2 is the
// stable version with v1 stopped.
func TestCanaryPromotedUnderLoadExactlyOnce(t *testing.T) {
	e := newEnv(t, fast())
	e.start(Spec{Name: "p", Path: "v1"})
	var mu sync.Mutex
	var ids []string
	stop := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := e.publish(fmt.Sprintf("oc_%d", i%20))
			mu.Lock()
			ids = append(ids, id)
			mu.Unlock()
		}
	}()
	testenv.Eventually(t, 5*time.Second, "no traffic", func() bool { return e.exec.total() > 50 })
	if err := e.mgr.StartRelease(context.Background(), "p", Release{Mode: dispatch.ModeCanary, Spec: Spec{Path: "v2"},
		Split: dispatch.Split{Percent: 50}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "no traffic on the canary", func() bool { return len(e.latest("v2").Seen()) > 50 })
	st := e.mgr.Status()[0]
	if r := st.Release; r == nil || r.Mode != dispatch.ModeCanary || r.State != ReleaseRunning || r.Version != "v2" || r.Stats.Deliveries == 0 || r.StableStats.Deliveries == 0 {
		t.Fatalf("release status %+v", r)
	}
	if err := e.mgr.EndRelease(context.Background(), "p", true); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-pubDone
	e.exactlyOnce(ids)
	st = e.mgr.Status()[0]
	if st.Release != nil || st.Version != "v2" || st.Spec.Path != "v2" || st.Previous == nil || st.Previous.Path != "v1" {
		t.Fatalf("status after promotion %+v", st)
	}
	if !e.latest("v1").Closed() {
		t.Fatal("v1 still runs")
	}
	if err := e.mgr.EndRelease(context.Background(), "p", true); !errors.Is(err, ErrNoRelease) {
		t.Fatalf("promoting nothing: %v", err)
	}
}

// A canary that crashes fails its release: its chats are back on v1 at
// once, nothing is lost, and aborting clears it.
func TestCanaryCrashFailsRelease(t *testing.T) {
	e := newEnv(t, fast())
	e.start(Spec{Name: "p", Path: "v1"})
	if err := e.mgr.StartRelease(context.Background(), "p", Release{Mode: dispatch.ModeCanary, Spec: Spec{Path: "v2"},
		Split: dispatch.Split{Percent: 100}}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 10 {
		ids = append(ids, e.publish("oc_a"))
	}
	testenv.Eventually(t, 5*time.Second, "no traffic on the canary", func() bool { return len(e.latest("v2").Seen()) > 0 })
	e.latest("v2").Crash()
	testenv.Eventually(t, 5*time.Second, "the release did not fail", func() bool {
		r := e.mgr.Status()[0].Release
		return r != nil && r.State == ReleaseFailed
	})
	for range 10 {
		ids = append(ids, e.publish("oc_a"))
	}
	e.exactlyOnce(ids)
	if err := e.mgr.EndRelease(context.Background(), "p", true); err == nil {
		t.Fatal("promoted a failed canary")
	}
	if err := e.mgr.EndRelease(context.Background(), "p", false); err != nil {
		t.Fatal(err)
	}
	if r := e.mgr.Status()[0].Release; r != nil {
		t.Fatalf("release after abort %+v", r)
	}
}

// A shadow is launched with a state namespace of its own; a release needs a
// serving plugin.
func TestShadowLaunchedInItsOwnNamespace(t *testing.T) {
	var mu sync.Mutex
	var specs []Spec
	var e *env
	e = newEnvWith(t, fast(), LauncherFunc(func(ctx context.Context, s Spec) (Instance, error) {
		mu.Lock()
		specs = append(specs, s)
		mu.Unlock()
		return e.launch(ctx, s)
	}), slog.New(slog.DiscardHandler))
	e.start(Spec{Name: "p", Path: "v1"})
	if err := e.mgr.StartRelease(context.Background(), "p", Release{Mode: dispatch.ModeShadow, Spec: Spec{Path: "v2"},
		Split: dispatch.Split{Percent: 100}}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	last := specs[len(specs)-1]
	mu.Unlock()
	if last.Path != "v2" || last.StateNamespace != "p~shadow" {
		t.Fatalf("shadow launched as %+v", last)
	}
	if err := e.mgr.EndRelease(context.Background(), "p", true); err == nil {
		t.Fatal("a shadow was promoted")
	}
	if err := e.mgr.Disable(context.Background(), "p"); err != nil {
		t.Fatal(err)
	}
	if r := e.mgr.Status()[0].Release; r != nil {
		t.Fatalf("disabling left the release %+v", r)
	}
	if err := e.mgr.StartRelease(context.Background(), "p", Release{Mode: dispatch.ModeCanary, Spec: Spec{Path: "v2"},
		Split: dispatch.Split{Percent: 5}}); err == nil {
		t.Fatal("a release started on a disabled plugin")
	}
}
