package cluster

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/manager"
	"github.com/larkway/larkway/core/internal/testenv"
)

// fakePlugins is one replica's plugin manager.
type fakePlugins struct {
	mu       sync.Mutex
	status   map[string]manager.Status
	failSwap bool
	swaps    int
}

func newFake(path string) *fakePlugins {
	return &fakePlugins{status: map[string]manager.Status{"echo": {Name: "echo", State: manager.StateServing, Spec: manager.Spec{Name: "echo", Path: path}}}}
}

func (f *fakePlugins) Status() []manager.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []manager.Status
	for _, s := range f.status {
		out = append(out, s)
	}
	return out
}

func (f *fakePlugins) Swap(_ context.Context, name string, spec manager.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failSwap {
		return manager.ErrRolledBack
	}
	s := f.status[name]
	prev := s.Spec
	s.Previous, s.Spec = &prev, spec
	f.status[name] = s
	f.swaps++
	return nil
}

func (f *fakePlugins) Rollback(ctx context.Context, name string) error {
	f.mu.Lock()
	prev := f.status[name].Previous
	f.mu.Unlock()
	if prev == nil {
		return errors.New("no previous")
	}
	return f.Swap(ctx, name, *prev)
}

func (f *fakePlugins) set(name string, st manager.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.status[name]
	s.State = st
	f.status[name] = s
	return nil
}

func (f *fakePlugins) Disable(_ context.Context, name string) error {
	return f.set(name, manager.StateDisabled)
}
func (f *fakePlugins) Enable(_ context.Context, name string) error {
	return f.set(name, manager.StateServing)
}

func (f *fakePlugins) spec(name string) manager.Spec {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status[name].Spec
}

func stores(t *testing.T) map[string]Store {
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = c.Close() })
	return map[string]Store{"memory": NewMemory(), "redis": NewRedis(c, testenv.Name(t, "cluster")+":")}
}

func TestSwapPropagatesToEveryReplica(t *testing.T) {
	ctx := context.Background()
	for name, store := range stores(t) {
		t.Run(name, func(t *testing.T) {
			a, b := newFake("v1"), newFake("v1")
			ra, err := NewReconciler(Config{ReplicaID: "a", Version: "t"}, store, a, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			rb, _ := NewReconciler(Config{ReplicaID: "b", Version: "t"}, store, b, slog.New(slog.DiscardHandler))
			if err := ra.Swap(ctx, "echo", manager.Spec{Path: "v2", SHA256: "ab"}); err != nil {
				t.Fatal(err)
			}
			rb.Reconcile(ctx)
			if got := b.spec("echo"); got.Path != "v2" || got.SHA256 != "ab" {
				t.Fatalf("replica b runs %+v", got)
			}
			ra.Reconcile(ctx) // already applied: no second swap on a
			if a.swaps != 1 || b.swaps != 1 {
				t.Fatalf("swaps a=%d b=%d", a.swaps, b.swaps)
			}
			// A failed local swap changes nothing anywhere.
			a.failSwap = true
			if err := ra.Swap(ctx, "echo", manager.Spec{Path: "v3"}); !errors.Is(err, ErrNotApplied) {
				t.Fatalf("err = %v", err)
			}
			rb.Reconcile(ctx)
			if b.spec("echo").Path != "v2" {
				t.Fatal("failed swap propagated")
			}
			a.failSwap = false
			// Disable and enable propagate.
			if err := ra.Disable(ctx, "echo"); err != nil {
				t.Fatal(err)
			}
			rb.Reconcile(ctx)
			if b.Status()[0].State != manager.StateDisabled {
				t.Fatal("disable did not propagate")
			}
			if err := ra.Enable(ctx, "echo"); err != nil {
				t.Fatal(err)
			}
			rb.Reconcile(ctx)
			if b.Status()[0].State != manager.StateServing {
				t.Fatal("enable did not propagate")
			}
			// A replica that starts later converges too.
			c := newFake("v1")
			rc, _ := NewReconciler(Config{ReplicaID: "c"}, store, c, slog.New(slog.DiscardHandler))
			rc.Reconcile(ctx)
			if c.spec("echo").Path != "v2" {
				t.Fatalf("late replica runs %+v", c.spec("echo"))
			}
		})
	}
}

func TestRegistry(t *testing.T) {
	ctx := context.Background()
	for name, store := range stores(t) {
		t.Run(name, func(t *testing.T) {
			for _, id := range []string{"r2", "r1"} {
				rec, _ := NewReconciler(Config{ReplicaID: id, Version: "v"}, store, newFake("p"), slog.New(slog.DiscardHandler))
				rec.heartbeat(ctx)
			}
			reps, err := store.Replicas(ctx)
			if err != nil || len(reps) != 2 || reps[0].ID != "r1" || reps[0].Plugins[0].Name != "echo" {
				t.Fatalf("replicas %+v %v", reps, err)
			}
			_ = store.Remove(ctx, "r1")
			if reps, _ := store.Replicas(ctx); len(reps) != 1 || reps[0].ID != "r2" {
				t.Fatalf("after remove %+v", reps)
			}
			// Heartbeats expire when a replica vanishes.
			_ = store.Heartbeat(ctx, ReplicaStatus{ID: "ghost"}, 50*time.Millisecond)
			if m, ok := store.(*Memory); ok {
				now := time.Now().Add(time.Second)
				m.now = func() time.Time { return now }
			}
			testenv.Eventually(t, 5*time.Second, "ghost replica did not expire", func() bool {
				reps, _ := store.Replicas(ctx)
				for _, r := range reps {
					if r.ID == "ghost" {
						return false
					}
				}
				return true
			})
		})
	}
}

func TestReplicaIDValidated(t *testing.T) {
	for _, id := range []string{"", "a b", "x*"} {
		if _, err := NewReconciler(Config{ReplicaID: id}, NewMemory(), newFake("p"), slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("%q accepted", id)
		}
	}
}

// A desired spec differing only in its pinned files, args or env is a
// different version: replicas must apply it.
func TestSameSpec(t *testing.T) {
	base := manager.Spec{Name: "p", Path: "/p", SHA256: "aa", Args: []string{"main.py"}, Env: []string{"A=1"},
		Files: []manager.File{{Path: "/main.py", SHA256: "bb"}}}
	with := func(f func(*manager.Spec)) manager.Spec {
		s := base
		s.Args, s.Env, s.Files = slices.Clone(base.Args), slices.Clone(base.Env), slices.Clone(base.Files)
		f(&s)
		return s
	}
	tests := []struct {
		name string
		b    manager.Spec
		same bool
	}{
		{"identical", with(func(*manager.Spec) {}), true},
		{"file re-pinned", with(func(s *manager.Spec) { s.Files[0].SHA256 = "cc" }), false},
		{"file added", with(func(s *manager.Spec) { s.Files = append(s.Files, manager.File{Path: "/x", SHA256: "dd"}) }), false},
		{"args", with(func(s *manager.Spec) { s.Args = []string{"other.py"} }), false},
		{"env", with(func(s *manager.Spec) { s.Env = nil }), false},
		{"sha", with(func(s *manager.Spec) { s.SHA256 = "ee" }), false},
	}
	remote := manager.Spec{Name: "p", Remote: &manager.Remote{Address: "a:7443", CAFile: "ca", CertFile: "c", KeyFile: "k"}}
	for _, tt := range []struct {
		name string
		a, b manager.Spec
		same bool
	}{
		{"remote, same endpoint", remote, manager.Spec{Name: "p", Remote: &manager.Remote{Address: "a:7443", CAFile: "ca", CertFile: "c", KeyFile: "k"}}, true},
		{"remote, new endpoint", remote, manager.Spec{Name: "p", Remote: &manager.Remote{Address: "b:7443", CAFile: "ca", CertFile: "c", KeyFile: "k"}}, false},
		{"remote and launched", remote, manager.Spec{Name: "p"}, false},
	} {
		if got := sameSpec(tt.a, tt.b); got != tt.same {
			t.Errorf("%s: sameSpec = %v, want %v", tt.name, got, tt.same)
		}
	}
	for _, tt := range tests {
		if got := sameSpec(base, tt.b); got != tt.same {
			t.Errorf("%s: sameSpec = %v, want %v", tt.name, got, tt.same)
		}
	}
}

func (f *fakePlugins) StartRelease(_ context.Context, name string, rel manager.Release) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.status[name]
	if s.Release != nil && manager.SameRelease(s.Release.Release, rel) && s.Release.ID == rel.ID {
		s.Release.Split = rel.Split
	} else {
		s.Release = &manager.ReleaseStatus{Release: rel, State: manager.ReleaseRunning, Version: "2.0.0"}
	}
	f.status[name] = s
	return nil
}

func (f *fakePlugins) EndRelease(_ context.Context, name string, promote bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.status[name]
	if s.Release == nil {
		if promote {
			return manager.ErrNoRelease
		}
		return nil
	}
	if promote {
		prev := s.Spec
		s.Previous, s.Spec = &prev, s.Release.Spec
	}
	s.Release = nil
	f.status[name] = s
	return nil
}

// setReleaseStats sets the candidate's deliveries as if it had served them.
func (f *fakePlugins) setReleaseStats(name string, st dispatch.VersionStats, failed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.status[name]
	if s.Release == nil {
		return
	}
	r := *s.Release
	r.Stats = st
	if failed {
		r.State = manager.ReleaseFailed
	}
	s.Release = &r
	f.status[name] = s
}

func (f *fakePlugins) release(name string) *manager.ReleaseStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status[name].Release
}
