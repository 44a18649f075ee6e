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
	stopLoad := e.load(20)
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
	e.exactlyOnce(stopLoad())
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

func TestSameRelease(t *testing.T) {
	rem := func(addr string) *Remote {
		return &Remote{Address: addr, CAFile: "ca", CertFile: "c", KeyFile: "k"}
	}
	canary := func(s Spec) Release { return Release{Mode: dispatch.ModeCanary, Spec: s} }
	for _, tc := range []struct {
		name string
		a, b Release
		want bool
	}{
		{"same file", canary(Spec{Path: "v2", SHA256: "ab"}), canary(Spec{Path: "v2", SHA256: "ab"}), true},
		{"other pin", canary(Spec{Path: "v2", SHA256: "ab"}), canary(Spec{Path: "v2", SHA256: "cd"}), false},
		{"same endpoint", canary(Spec{Remote: rem("b:7443")}), canary(Spec{Remote: rem("b:7443")}), true},
		{"other endpoint", canary(Spec{Remote: rem("b:7443")}), canary(Spec{Remote: rem("c:7443")}), false},
		{"endpoint and file", canary(Spec{Remote: rem("b:7443")}), canary(Spec{}), false},
		{"same endpoint, other mode", canary(Spec{Remote: rem("b:7443")}), Release{Mode: dispatch.ModeShadow, Spec: Spec{Remote: rem("b:7443")}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := SameRelease(tc.a, tc.b); got != tc.want {
				t.Fatalf("SameRelease = %v, want %v", got, tc.want)
			}
		})
	}
}

// A remote plugin's canary is another endpoint of it: the candidate is
// dialled under the plugin's name with its TLS files, a new address is a
// new candidate, abort leaves the stable endpoint, and promotion makes the
// candidate's address the plugin's.
func TestRemoteCanaryCandidateIsAnEndpoint(t *testing.T) {
	var mu sync.Mutex
	var dialled []Spec
	var e *env
	e = newEnvWith(t, fast(), LauncherFunc(func(ctx context.Context, s Spec) (Instance, error) {
		mu.Lock()
		dialled = append(dialled, s)
		mu.Unlock()
		s.Path = s.Remote.GetAddress() // the test plugins are keyed by endpoint
		return e.launch(ctx, s)
	}), slog.New(slog.DiscardHandler))
	rem := func(addr string) *Remote {
		return &Remote{Address: addr, CAFile: "ca", CertFile: "c", KeyFile: "k"}
	}
	ctx := context.Background()
	e.start(Spec{Name: "p", Remote: rem("a:7443")})
	canary := func(addr string, percent float64) {
		t.Helper()
		if err := e.mgr.StartRelease(ctx, "p", Release{ID: "1", Mode: dispatch.ModeCanary, Spec: Spec{Remote: rem(addr)},
			Split: dispatch.Split{Percent: percent}}); err != nil {
			t.Fatal(err)
		}
	}
	canary("b:7443", 50)
	mu.Lock()
	last := dialled[len(dialled)-1]
	mu.Unlock()
	if last.Name != "p" || last.Remote == nil || *last.Remote != *rem("b:7443") {
		t.Fatalf("candidate dialled as %+v", last)
	}
	canary("b:7443", 80) // the same endpoint: only the split grows
	if n := e.launches("b:7443"); n != 1 {
		t.Fatalf("growing the split dialled the candidate %d times", n)
	}
	var ids []string
	for i := range 40 {
		ids = append(ids, e.publish(fmt.Sprintf("oc_%d", i)))
	}
	e.exactlyOnce(ids)
	if len(e.latest("b:7443").Seen()) == 0 || len(e.latest("a:7443").Seen()) == 0 {
		t.Fatal("the canary's split did not reach both endpoints")
	}
	canary("c:7443", 80) // another endpoint: another candidate
	if !e.latest("b:7443").Closed() || e.launches("c:7443") != 1 {
		t.Fatal("a canary at another address did not replace the candidate")
	}
	if err := e.mgr.EndRelease(ctx, "p", false); err != nil {
		t.Fatal(err)
	}
	st := e.mgr.Status()[0]
	if st.Release != nil || st.Spec.Remote.GetAddress() != "a:7443" || e.latest("a:7443").Closed() || !e.latest("c:7443").Closed() {
		t.Fatalf("after abort: %+v", st)
	}
	canary("b:7443", 50)
	if err := e.mgr.EndRelease(ctx, "p", true); err != nil {
		t.Fatal(err)
	}
	st = e.mgr.Status()[0]
	if st.Spec.Remote.GetAddress() != "b:7443" || st.Spec.Remote.CAFile != "ca" || st.Previous == nil || st.Previous.Remote.GetAddress() != "a:7443" {
		t.Fatalf("after promotion: %+v", st)
	}
	if !e.latest("a:7443").Closed() {
		t.Fatal("the old endpoint is still dialled")
	}
}
