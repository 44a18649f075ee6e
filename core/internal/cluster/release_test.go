package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/manager"
)

func canary(percent float64) Release {
	r := Release{Release: manager.Release{Mode: dispatch.ModeCanary, Spec: manager.Spec{Path: "v2", SHA256: "cd"},
		Split: dispatch.Split{Percent: percent}}, PromoteAfterDeliveries: 100, MaxErrorRate: 0.1}
	if err := r.Validate(); err != nil {
		panic(err)
	}
	return r
}

func TestDecide(t *testing.T) {
	now := time.Now()
	byTime := canary(10)
	byTime.PromoteAfterDeliveries, byTime.PromoteAfterDuration, byTime.Started = 0, "10m", now.Add(-11*time.Minute)
	manual := canary(10)
	manual.PromoteAfterDeliveries = 0
	for _, tc := range []struct {
		name   string
		rel    Release
		stats  dispatch.VersionStats
		failed bool
		want   Verdict
	}{
		{"too few deliveries to judge", canary(10), dispatch.VersionStats{Deliveries: 5, Errors: 5}, false, VerdictWait},
		{"breach after the minimum", canary(10), dispatch.VersionStats{Deliveries: 20, Errors: 6}, false, VerdictRollback},
		{"within budget, quota not served", canary(10), dispatch.VersionStats{Deliveries: 50, Errors: 2}, false, VerdictWait},
		{"quota served within budget", canary(10), dispatch.VersionStats{Deliveries: 100, Errors: 10}, false, VerdictPromote},
		{"quota served over budget", canary(10), dispatch.VersionStats{Deliveries: 100, Errors: 11}, false, VerdictRollback},
		{"candidate failed", canary(10), dispatch.VersionStats{}, true, VerdictRollback},
		{"duration elapsed", byTime, dispatch.VersionStats{Deliveries: 3}, false, VerdictPromote},
		{"manual promotion only", manual, dispatch.VersionStats{Deliveries: 1000}, false, VerdictWait},
		{"shadow is never decided", Release{Release: manager.Release{Mode: dispatch.ModeShadow}}, dispatch.VersionStats{Deliveries: 100, Errors: 100}, true, VerdictWait},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, why := Decide(tc.rel, tc.stats, tc.failed, now); got != tc.want {
				t.Fatalf("verdict %q (%s), want %q", got, why, tc.want)
			}
		})
	}
}

func TestReleaseValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		rel  Release
		ok   bool
	}{
		{"canary by percent", Release{Release: manager.Release{Mode: dispatch.ModeCanary, Split: dispatch.Split{Percent: 5}}}, true},
		{"canary by chats", Release{Release: manager.Release{Mode: dispatch.ModeCanary, Split: dispatch.Split{Chats: []string{"oc_1"}}}}, true},
		{"canary without chats", Release{Release: manager.Release{Mode: dispatch.ModeCanary}}, false},
		{"shadow defaults to every chat", Release{Release: manager.Release{Mode: dispatch.ModeShadow}}, true},
		{"percent over 100", Release{Release: manager.Release{Mode: dispatch.ModeCanary, Split: dispatch.Split{Percent: 101}}}, false},
		{"bad duration", Release{Release: manager.Release{Mode: dispatch.ModeCanary, Split: dispatch.Split{Percent: 5}}, PromoteAfterDuration: "soon"}, false},
		{"bad error rate", Release{Release: manager.Release{Mode: dispatch.ModeCanary, Split: dispatch.Split{Percent: 5}}, MaxErrorRate: 2}, false},
		{"unknown mode", Release{Release: manager.Release{Mode: "blue-green"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.rel.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v", err)
			}
			if err == nil && (tc.rel.MaxErrorRate != DefaultMaxErrorRate || tc.rel.MinDeliveries != DefaultMinDeliveries) {
				t.Fatalf("defaults not filled: %+v", tc.rel)
			}
		})
	}
}

// A canary started on one replica runs on every replica; the verdict on
// the deliveries summed over replicas (each under the budget's minimum on
// its own) rolls it back everywhere, or promotes it everywhere.
func TestCanaryDecidedAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	for name, store := range stores(t) {
		for _, tc := range []struct {
			name    string
			each    dispatch.VersionStats
			result  string
			wantRun string
		}{
			{"breach rolls back", dispatch.VersionStats{Deliveries: 12, Errors: 4}, ResultRolledBack, "v1"},
			{"quota promotes", dispatch.VersionStats{Deliveries: 50, Errors: 1}, ResultPromoted, "v2"},
		} {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				a, b := newFake("v1"), newFake("v1")
				ra, _ := NewReconciler(Config{ReplicaID: "a"}, store, a, slog.New(slog.DiscardHandler))
				rb, _ := NewReconciler(Config{ReplicaID: "b"}, store, b, slog.New(slog.DiscardHandler))
				if err := ra.StartRelease(ctx, "echo", canary(5)); err != nil {
					t.Fatal(err)
				}
				rb.Reconcile(ctx)
				if r := b.release("echo"); r == nil || r.Percent != 5 {
					t.Fatalf("replica b's release %+v", r)
				}
				// Growing the split reaches b as a split change.
				if err := ra.StartRelease(ctx, "echo", canary(10)); err != nil {
					t.Fatal(err)
				}
				rb.Reconcile(ctx)
				if r := b.release("echo"); r == nil || r.Percent != 10 {
					t.Fatalf("replica b's release after growing %+v", r)
				}
				a.setReleaseStats("echo", tc.each, false)
				b.setReleaseStats("echo", tc.each, false)
				rb.heartbeat(ctx)
				ra.evaluate(ctx)
				ra.Reconcile(ctx)
				rb.Reconcile(ctx)
				for id, f := range map[string]*fakePlugins{"a": a, "b": b} {
					if f.release("echo") != nil || f.spec("echo").Path != tc.wantRun {
						t.Fatalf("replica %s: release %+v, runs %s", id, f.release("echo"), f.spec("echo").Path)
					}
				}
				d, _ := store.Desired(ctx)
				if last := d["echo"].LastRelease; last == nil || last.Result != tc.result || last.Stats.Deliveries != 2*tc.each.Deliveries {
					t.Fatalf("last release %+v", last)
				}
				// The verdict is taken once: a second evaluation finds
				// nothing to decide.
				gen := d["echo"].Generation
				rb.evaluate(ctx)
				if d, _ := store.Desired(ctx); d["echo"].Generation != gen {
					t.Fatal("decided twice")
				}
				if err := ra.Swap(ctx, "echo", manager.Spec{Path: "v1"}); err != nil { // back for the next case
					t.Fatal(err)
				}
			})
		}
	}
}

// The same candidate started again after an abort is a new run: a replica
// still reporting the earlier run's failures does not roll the new one
// back, and restarts its candidate when it reconciles.
func TestReleaseRunsAreJudgedApart(t *testing.T) {
	ctx := context.Background()
	store := NewMemory()
	a, b := newFake("v1"), newFake("v1")
	ra, _ := NewReconciler(Config{ReplicaID: "a"}, store, a, slog.New(slog.DiscardHandler))
	rb, _ := NewReconciler(Config{ReplicaID: "b"}, store, b, slog.New(slog.DiscardHandler))
	if err := ra.StartRelease(ctx, "echo", canary(10)); err != nil {
		t.Fatal(err)
	}
	rb.Reconcile(ctx)
	first := b.release("echo").ID
	b.setReleaseStats("echo", dispatch.VersionStats{Deliveries: 100, Errors: 90}, false)
	rb.heartbeat(ctx)
	if err := ra.EndRelease(ctx, "echo", false); err != nil {
		t.Fatal(err)
	}
	if err := ra.StartRelease(ctx, "echo", canary(10)); err != nil { // b has not reconciled meanwhile
		t.Fatal(err)
	}
	d, _ := store.Desired(ctx)
	if d["echo"].Release.ID == first || d["echo"].LastRelease.Result != ResultAborted {
		t.Fatalf("desired %+v", d["echo"])
	}
	ra.evaluate(ctx)
	if d2, _ := store.Desired(ctx); d2["echo"].Generation != d["echo"].Generation {
		t.Fatalf("the earlier run's failures decided the new one: %+v", d2["echo"].LastRelease)
	}
	rb.Reconcile(ctx)
	if r := b.release("echo"); r == nil || r.ID != d["echo"].Release.ID || r.Stats.Deliveries != 0 {
		t.Fatalf("replica b's release %+v", r)
	}
}

// Growing the split keeps the run (its id, clock and stats); the very same
// request again starts a new one.
func TestReleaseRunIdentity(t *testing.T) {
	ctx := context.Background()
	store := NewMemory()
	a := newFake("v1")
	ra, _ := NewReconciler(Config{ReplicaID: "a"}, store, a, slog.New(slog.DiscardHandler))
	id := func() string {
		d, _ := store.Desired(ctx)
		return d["echo"].Release.ID
	}
	if err := ra.StartRelease(ctx, "echo", canary(5)); err != nil {
		t.Fatal(err)
	}
	first := id()
	if err := ra.StartRelease(ctx, "echo", canary(10)); err != nil {
		t.Fatal(err)
	}
	if id() != first {
		t.Fatal("growing the split started a new run")
	}
	if err := ra.StartRelease(ctx, "echo", canary(10)); err != nil {
		t.Fatal(err)
	}
	if id() == first || a.release("echo").ID != id() {
		t.Fatalf("the same request again kept run %s (local %s)", first, a.release("echo").ID)
	}
}

// A remote plugin's canary is an endpoint, carried to every replica by the
// desired state: another address while one runs is a new candidate
// everywhere, an abort leaves every replica on the stable endpoint, and a
// promotion (by hand or by verdict) makes the candidate's address the
// plugin's on every replica.
func TestRemoteCanaryAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	rem := func(addr string) *manager.Remote {
		return &manager.Remote{Address: addr, CAFile: "ca", CertFile: "c", KeyFile: "k", ResolveInterval: time.Second}
	}
	remoteCanary := func(addr string) Release {
		r := canary(25)
		r.Spec = manager.Spec{Remote: rem(addr)}
		return r
	}
	for name, store := range stores(t) {
		for _, byVerdict := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/promoted by verdict %v", name, byVerdict), func(t *testing.T) {
				a, b := newFake(""), newFake("")
				for _, f := range []*fakePlugins{a, b} {
					s := f.status["echo"]
					s.Spec.Remote = rem("a:7443")
					f.status["echo"] = s
				}
				ra, _ := NewReconciler(Config{ReplicaID: "a"}, store, a, slog.New(slog.DiscardHandler))
				rb, _ := NewReconciler(Config{ReplicaID: "b"}, store, b, slog.New(slog.DiscardHandler))
				candidate := func(f *fakePlugins) string {
					if r := f.release("echo"); r != nil {
						return r.Spec.Remote.GetAddress()
					}
					return ""
				}
				if err := ra.StartRelease(ctx, "echo", remoteCanary("b:7443")); err != nil {
					t.Fatal(err)
				}
				rb.Reconcile(ctx)
				if candidate(b) != "b:7443" || *b.release("echo").Spec.Remote != *rem("b:7443") {
					t.Fatalf("replica b's candidate %+v", b.release("echo"))
				}
				first := b.release("echo").ID
				if err := ra.StartRelease(ctx, "echo", remoteCanary("c:7443")); err != nil {
					t.Fatal(err)
				}
				rb.Reconcile(ctx)
				if candidate(b) != "c:7443" || b.release("echo").ID == first {
					t.Fatalf("another address is not a new candidate on b: %+v", b.release("echo"))
				}
				if err := ra.EndRelease(ctx, "echo", false); err != nil {
					t.Fatal(err)
				}
				rb.Reconcile(ctx)
				for id, f := range map[string]*fakePlugins{"a": a, "b": b} {
					if f.release("echo") != nil || f.spec("echo").Remote.GetAddress() != "a:7443" {
						t.Fatalf("replica %s after abort: release %+v, endpoint %s", id, f.release("echo"), f.spec("echo").Remote.GetAddress())
					}
				}
				if err := ra.StartRelease(ctx, "echo", remoteCanary("b:7443")); err != nil {
					t.Fatal(err)
				}
				rb.Reconcile(ctx)
				if byVerdict {
					for _, f := range []*fakePlugins{a, b} {
						f.setReleaseStats("echo", dispatch.VersionStats{Deliveries: 60}, false)
					}
					rb.heartbeat(ctx)
					ra.evaluate(ctx)
					ra.Reconcile(ctx)
				} else if err := ra.EndRelease(ctx, "echo", true); err != nil {
					t.Fatal(err)
				}
				rb.Reconcile(ctx)
				for id, f := range map[string]*fakePlugins{"a": a, "b": b} {
					if f.release("echo") != nil || f.spec("echo").Remote == nil || *f.spec("echo").Remote != *rem("b:7443") {
						t.Fatalf("replica %s after promotion: release %+v, spec %+v", id, f.release("echo"), f.spec("echo"))
					}
				}
				d, _ := store.Desired(ctx)
				if got := d["echo"].Spec.Remote; got == nil || *got != *rem("b:7443") || d["echo"].LastRelease.Result != ResultPromoted {
					t.Fatalf("desired after promotion %+v", d["echo"])
				}
			})
		}
	}
}
