package manager

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/dispatch"
)

// ErrNoRelease is returned when promoting or aborting a plugin that has no
// canary or shadow.
var ErrNoRelease = errors.New("no canary or shadow release")

// Release is a candidate version run beside the stable one: a canary that
// serves the chats its split selects, or a shadow that gets a copy of
// their deliveries.
type Release struct {
	// ID names one run of a release: the same candidate started again
	// (after an abort, say) is a new run, with its stats from zero.
	ID   string        `json:"id,omitempty"`
	Mode dispatch.Mode `json:"mode"`
	Spec Spec          `json:"spec"`
	dispatch.Split
}

// ReleaseStatus is a release on this replica.
type ReleaseStatus struct {
	Release
	// Version is the candidate's manifest version.
	Version string `json:"version,omitempty"`
	// State is running, or failed (the candidate crashed; it no longer
	// gets deliveries and the release waits to be aborted).
	State     string    `json:"state"`
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"since"`
	// Stats are the candidate's deliveries on this replica since it
	// started; StableStats the stable version's over the same time.
	Stats       dispatch.VersionStats `json:"stats"`
	StableStats dispatch.VersionStats `json:"stable_stats"`
}

// Release states.
const (
	ReleaseRunning = "running"
	ReleaseFailed  = "failed"
)

// SameRelease reports whether two releases run the same candidate in the
// same mode (their splits may differ). A remote plugin's candidate is its
// endpoint: another address is another candidate.
func SameRelease(a, b Release) bool {
	return a.Mode == b.Mode && a.Spec.Path == b.Spec.Path && a.Spec.SHA256 == b.Spec.SHA256 &&
		slices.Equal(a.Spec.Args, b.Spec.Args) && slices.Equal(a.Spec.Env, b.Spec.Env) && slices.Equal(a.Spec.Files, b.Spec.Files) &&
		(a.Spec.Remote == nil) == (b.Spec.Remote == nil) && (a.Spec.Remote == nil || *a.Spec.Remote == *b.Spec.Remote)
}

// ShadowNamespace is the state namespace of name's shadow candidate: its
// writes never reach the stable version's state.
func ShadowNamespace(name string) string { return name + "~shadow" }

// StartRelease starts rel's candidate beside name's stable version, or, if
// the same candidate already runs, changes its split.
func (m *Manager) StartRelease(ctx context.Context, name string, rel Release) error {
	if rel.Mode != dispatch.ModeCanary && rel.Mode != dispatch.ModeShadow {
		return fmt.Errorf("release mode %q is neither canary nor shadow", rel.Mode)
	}
	rel.Spec.Name = name
	return m.command(ctx, name, command{kind: cmdRelease, release: rel})
}

// EndRelease promotes name's canary to stable (promote) or stops its
// candidate (abort: its chats go back to stable, its in-flight deliveries
// finish or are redelivered there).
func (m *Manager) EndRelease(ctx context.Context, name string, promote bool) error {
	return m.command(ctx, name, command{kind: cmdEndRelease, promote: promote})
}

// startRelease runs on the supervisor's goroutine.
func (s *supervisor) startRelease(ctx context.Context, rel Release) error {
	s.mu.Lock()
	cur := s.rel
	candRunning := s.candSess != nil
	s.mu.Unlock()
	if cur != nil && candRunning && SameRelease(cur.Release, rel) && cur.ID == rel.ID {
		s.route.SetSplit(rel.Split)
		s.mu.Lock()
		s.rel.Split = rel.Split
		s.mu.Unlock()
		s.log.Info("release split changed", "mode", rel.Mode, "percent", rel.Percent, "chats", len(rel.Chats))
		return nil
	}
	spec := rel.Spec
	if rel.Mode == dispatch.ModeShadow {
		spec.StateNamespace = ShadowNamespace(spec.Name)
	}
	inst, err := s.m.launch.Launch(ctx, spec)
	if err != nil {
		return fmt.Errorf("starting the %s candidate: %w", rel.Mode, err)
	}
	sess, prev, err := s.route.AttachCandidate(ctx, inst, rel.Mode, rel.Split)
	if err != nil {
		inst.Close()
		return err
	}
	s.mu.Lock()
	oldInst := s.cand
	s.cand, s.candSess = inst, sess
	var stable dispatch.VersionStats
	if s.sess != nil {
		stable = s.sess.Stats()
	}
	s.rel = &ReleaseStatus{Release: rel, Version: inst.Manifest().GetVersion(), State: ReleaseRunning, Since: time.Now()}
	s.stableBase = stable
	s.mu.Unlock()
	s.retire(prev, oldInst)
	s.log.Info("release started", "mode", rel.Mode, "version", inst.Manifest().GetVersion(), "path", rel.Spec.Path,
		"address", rel.Spec.Remote.GetAddress(), "percent", rel.Percent, "chats", len(rel.Chats))
	return nil
}

// retire drains a detached session (bounded) and stops its instance.
func (s *supervisor) retire(sess *dispatch.Session, inst Instance) {
	if sess != nil {
		ctx, cancel := context.WithTimeout(context.Background(), s.m.cfg.DrainTimeout)
		if err := sess.Drain(ctx); err != nil {
			s.log.Warn("candidate did not drain in time; its unfinished deliveries are redelivered", "err", err)
		}
		cancel()
	}
	if inst != nil {
		inst.Close()
	}
}

// endRelease runs on the supervisor's goroutine.
func (s *supervisor) endRelease(promote bool) error {
	s.mu.Lock()
	rel, inst, sess := s.rel, s.cand, s.candSess
	s.mu.Unlock()
	if rel == nil {
		if promote {
			return ErrNoRelease
		}
		return nil
	}
	if !promote {
		if sess != nil {
			s.route.DetachCandidate()
		}
		s.retire(sess, inst)
		s.mu.Lock()
		s.rel, s.cand, s.candSess = nil, nil, nil
		s.mu.Unlock()
		s.log.Info("release aborted; every chat is on the stable version", "mode", rel.Mode, "version", rel.Version)
		return nil
	}
	if rel.Mode != dispatch.ModeCanary {
		return fmt.Errorf("a %s cannot be promoted: start a canary of it", rel.Mode)
	}
	if sess == nil {
		return fmt.Errorf("the canary is %s: %s", rel.State, rel.LastError)
	}
	prev, ok := s.route.Promote()
	if !ok {
		return ErrNoRelease
	}
	s.mu.Lock()
	oldInst := s.inst
	s.inst, s.sess = inst, sess
	s.cand, s.candSess, s.rel = nil, nil, nil
	s.st.Version = rel.Version
	s.mu.Unlock()
	s.recordSwap(rel.Spec)
	s.m.metrics.swaps.WithLabelValues(rel.Spec.Name, "done").Inc()
	s.retire(prev, oldInst)
	s.log.Info("canary promoted: every chat is on it", "version", rel.Version, "path", rel.Spec.Path, "address", rel.Spec.Remote.GetAddress())
	return nil
}

// candidateFailed takes a crashed candidate out of the route; the release
// stays, failed, until it is aborted (the cluster's reconciler does so).
func (s *supervisor) candidateFailed(err error) {
	s.mu.Lock()
	inst, sess := s.cand, s.candSess
	s.cand, s.candSess = nil, nil
	if s.rel != nil {
		s.rel.State, s.rel.LastError = ReleaseFailed, err.Error()
	}
	s.mu.Unlock()
	s.route.DetachCandidate()
	if sess != nil {
		sess.Close()
	}
	if inst != nil {
		inst.Close()
	}
	s.log.Error("release candidate failed; its chats are back on the stable version", "err", err)
}

// candBroken is closed when the candidate's stream breaks (nil: none).
func (s *supervisor) candBroken() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.candSess == nil {
		return nil
	}
	return s.candSess.Broken()
}

// releaseStatus is the release's status with fresh stats; s.mu is held.
func (s *supervisor) releaseStatusLocked() *ReleaseStatus {
	if s.rel == nil {
		return nil
	}
	r := *s.rel
	r.Chats = slices.Clone(r.Chats)
	if s.candSess != nil {
		r.Stats = s.candSess.Stats()
		s.rel.Stats = r.Stats // kept when the candidate fails
	}
	if s.sess != nil {
		st := s.sess.Stats()
		// The stable session may have been restarted since: then its
		// counts start from zero.
		if st.Deliveries >= s.stableBase.Deliveries {
			st = dispatch.VersionStats{Deliveries: st.Deliveries - s.stableBase.Deliveries, Errors: st.Errors - s.stableBase.Errors,
				Retries: st.Retries - s.stableBase.Retries, DeadLetters: st.DeadLetters - s.stableBase.DeadLetters,
				LatencyMS: st.LatencyMS - s.stableBase.LatencyMS}
		}
		r.StableStats = st
	}
	return &r
}

func (s *supervisor) candErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.candSess == nil {
		return nil
	}
	return s.candSess.Err()
}

// BaselineNamespace is the state namespace of the stable version's
// instance a replay runs beside the shadow.
func BaselineNamespace(name string) string { return name + "~baseline" }

// ReplayToShadow feeds stored events (see dispatch.Route.ReplayToShadow)
// to name's shadow and to a baseline instance of its stable version,
// started for the replay with a state namespace of its own and stopped
// after it; nothing either does is performed.
func (m *Manager) ReplayToShadow(ctx context.Context, name string, split dispatch.Split,
	history func(ctx context.Context, fn func(bus.Message) error) error) (dispatch.ReplayStats, error) {
	sup, err := m.get(name)
	if err != nil {
		return dispatch.ReplayStats{}, err
	}
	if c, mode, _ := sup.route.Candidate(); c == nil || mode != dispatch.ModeShadow {
		return dispatch.ReplayStats{}, dispatch.ErrNoShadow
	}
	spec := sup.spec()
	spec.StateNamespace = BaselineNamespace(name)
	inst, err := m.launch.Launch(ctx, spec)
	if err != nil {
		return dispatch.ReplayStats{}, fmt.Errorf("starting the stable version's baseline for a replay: %w", err)
	}
	defer inst.Close()
	sup.log.Info("replay into the shadow started", "percent", split.Percent, "chats", len(split.Chats))
	st, err := sup.route.ReplayToShadow(ctx, inst, split, history)
	sup.log.Info("replay into the shadow done", "events", st.Events, "replayed", st.Replayed, "differ", st.Differ, "err", err)
	return st, err
}
