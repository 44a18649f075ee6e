package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/larkway/larkway/core/internal/backoff"
	"github.com/larkway/larkway/core/internal/dispatch"
)

type cmdKind int

const (
	cmdSwap cmdKind = iota + 1
	cmdRollback
	cmdDisable
	cmdEnable
	cmdRelease
	cmdEndRelease
)

type command struct {
	kind    cmdKind
	spec    Spec
	release Release
	promote bool
	done    chan error
}

// supervisor owns one plugin: its route, its current instance and session,
// and every change to them.
type supervisor struct {
	m      *Manager
	route  *dispatch.Route
	cmds   chan command
	exited chan struct{}
	log    *slog.Logger

	mu      sync.Mutex
	st      Status
	inst    Instance
	sess    *dispatch.Session
	crashes []time.Time
	// The release's candidate (release.go), and the stable session's
	// stats when it started.
	rel        *ReleaseStatus
	cand       Instance
	candSess   *dispatch.Session
	stableBase dispatch.VersionStats
}

func newSupervisor(m *Manager, spec Spec) *supervisor {
	s := &supervisor{m: m, route: m.disp.Route(spec.Name), cmds: make(chan command), exited: make(chan struct{}),
		log: m.logger.With("plugin", spec.Name)}
	s.st = Status{Name: spec.Name, State: StateStarting, Spec: spec, Since: time.Now()}
	for _, st := range []State{StateServing, StateDraining, StateStopped, StateCrashed, StateQuarantined, StateDisabled} {
		m.metrics.state.WithLabelValues(spec.Name, string(st)).Set(0)
	}
	m.metrics.state.WithLabelValues(spec.Name, string(StateStarting)).Set(1)
	m.metrics.restarts.WithLabelValues(spec.Name)
	m.metrics.quarantines.WithLabelValues(spec.Name)
	m.metrics.swaps.WithLabelValues(spec.Name, "done")
	m.metrics.swaps.WithLabelValues(spec.Name, "rolled_back")
	return s
}

func (s *supervisor) status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	if s.sess != nil {
		st.InFlight = s.sess.Active()
	}
	st.Release = s.releaseStatusLocked()
	return st
}

func (s *supervisor) setState(st State, err error) {
	s.mu.Lock()
	prev := s.st.State
	s.st.State, s.st.Since = st, time.Now()
	if err != nil {
		s.st.LastError = err.Error()
	}
	name := s.st.Name
	s.mu.Unlock()
	if prev != st {
		s.m.metrics.state.WithLabelValues(name, string(prev)).Set(0)
		s.m.metrics.state.WithLabelValues(name, string(st)).Set(1)
		s.log.Info("plugin state", "from", prev, "to", st)
	}
}

func (s *supervisor) spec() Spec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.Spec
}

// run supervises until ctx ends, then drains and stops the instance.
func (s *supervisor) run(ctx context.Context) {
	defer close(s.exited)
	restarts := backoff.Policy{First: s.m.cfg.RestartBackoff, Max: s.m.cfg.RestartBackoffMax}
	attempt := 1
	for ctx.Err() == nil {
		switch s.status().State {
		case StateDisabled, StateQuarantined:
			s.idle(ctx)
			continue
		}
		s.setState(StateStarting, nil)
		err := s.start(ctx, s.spec())
		if err == nil {
			started := time.Now()
			err = s.serve(ctx)
			if err == nil {
				continue // a command changed the state; go round again
			}
			if time.Since(started) > s.m.cfg.QuarantineWindow {
				attempt = 1
			}
		}
		if ctx.Err() != nil {
			break
		}
		if s.crashed(err) {
			continue
		}
		s.wait(ctx, restarts.Delay(attempt))
		attempt++
	}
	_ = s.endRelease(false)
	s.stop()
	s.setState(StateStopped, nil)
}

// start launches spec and attaches it to the route.
func (s *supervisor) start(ctx context.Context, spec Spec) error {
	inst, err := s.m.launch.Launch(ctx, spec)
	if err != nil {
		return fmt.Errorf("starting %s: %w", spec.Name, err)
	}
	sess, prev, err := s.route.Attach(ctx, inst)
	if err != nil {
		inst.Close()
		return err
	}
	if prev != nil { // cannot happen while we own the route; be safe
		prev.Close()
	}
	s.mu.Lock()
	s.inst, s.sess = inst, sess
	s.st.Version = inst.Manifest().GetVersion()
	s.mu.Unlock()
	s.setState(StateServing, nil)
	s.log.Info("plugin serving", "version", inst.Manifest().GetVersion(), "path", spec.Path)
	return nil
}

// serve watches the serving instance. It returns an error when the instance
// crashed or failed its health checks (it is then stopped), or nil when a
// command changed what should run.
func (s *supervisor) serve(ctx context.Context) error {
	tick := time.NewTicker(s.m.cfg.HealthInterval)
	defer tick.Stop()
	failures := 0
	for {
		s.mu.Lock()
		sess, inst := s.sess, s.inst
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-sess.Broken():
			err := fmt.Errorf("plugin stream broke: %w", sess.Err())
			s.kill()
			return err
		case <-s.candBroken():
			s.candidateFailed(fmt.Errorf("candidate stream broke: %w", s.candErr()))
		case <-tick.C:
			hctx, cancel := context.WithTimeout(ctx, s.m.cfg.HealthTimeout)
			err := inst.Ping(hctx)
			cancel()
			if err == nil {
				failures = 0
				continue
			}
			failures++
			s.log.Warn("plugin health check failed", "failures", failures, "err", err)
			if failures >= s.m.cfg.HealthFailures {
				s.kill()
				return fmt.Errorf("%d health checks failed: %w", failures, err)
			}
		case c := <-s.cmds:
			changed, lost := s.handle(ctx, c)
			if changed {
				return nil
			}
			if lost != nil {
				return lost
			}
		}
	}
}

// handle runs a command while serving; it reports whether the instance was
// stopped (the run loop then re-evaluates the state), or why nothing serves
// any more: a swap rolled back to an old version that did not restart (its
// pinned file changed, say), which the run loop then handles as a crash.
func (s *supervisor) handle(ctx context.Context, c command) (changed bool, lost error) {
	swap := func(spec Spec) error {
		err := s.swap(ctx, spec)
		c.done <- err
		s.mu.Lock()
		serving := s.inst != nil
		s.mu.Unlock()
		if !serving {
			return err
		}
		return nil
	}
	switch c.kind {
	case cmdSwap:
		return false, swap(c.spec)
	case cmdRollback:
		s.mu.Lock()
		prev := s.st.Previous
		s.mu.Unlock()
		if prev == nil {
			c.done <- errors.New("no previous version to roll back to")
			return false, nil
		}
		return false, swap(*prev)
	case cmdRelease:
		c.done <- s.startRelease(ctx, c.release)
		return false, nil
	case cmdEndRelease:
		c.done <- s.endRelease(c.promote)
		return false, nil
	case cmdDisable:
		s.setState(StateDraining, nil)
		_ = s.endRelease(false)
		s.stop()
		s.setState(StateDisabled, nil)
		c.done <- nil
		return true, nil
	case cmdEnable:
		c.done <- nil // already running
		return false, nil
	}
	c.done <- fmt.Errorf("unknown command %d", c.kind)
	return false, nil
}

// idle waits in a disabled or quarantined state for a command that starts
// the plugin again.
func (s *supervisor) idle(ctx context.Context) {
	select {
	case <-ctx.Done():
	case c := <-s.cmds:
		switch c.kind {
		case cmdEnable:
			s.resetCrashes()
			s.setState(StateStarting, nil)
			c.done <- nil
		case cmdSwap, cmdRollback:
			spec := c.spec
			if c.kind == cmdRollback {
				s.mu.Lock()
				prev := s.st.Previous
				s.mu.Unlock()
				if prev == nil {
					c.done <- errors.New("no previous version to roll back to")
					return
				}
				spec = *prev
			}
			// Nothing is serving, so there is nothing to make-before-break:
			// start the new spec; failure leaves the plugin where it was.
			old := s.status().State
			s.resetCrashes()
			if err := s.start(ctx, spec); err != nil {
				s.setState(old, err)
				c.done <- fmt.Errorf("%w: %v", ErrRolledBack, err)
				return
			}
			s.recordSwap(spec)
			c.done <- nil
		case cmdDisable:
			_ = s.endRelease(false)
			s.setState(StateDisabled, nil)
			c.done <- nil
		case cmdRelease:
			c.done <- fmt.Errorf("plugin is %s: a release needs a serving stable version", s.status().State)
		case cmdEndRelease:
			if c.promote {
				c.done <- fmt.Errorf("plugin is %s: enable it before promoting", s.status().State)
			} else {
				c.done <- s.endRelease(false)
			}
		}
	}
}

// swap starts spec beside the serving instance, moves new deliveries to it,
// drains the old one, and watches the new one through probation; on any
// failure routing returns to the previous version.
func (s *supervisor) swap(ctx context.Context, spec Spec) error {
	s.mu.Lock()
	old, oldSess, oldSpec := s.inst, s.sess, s.st.Spec
	s.mu.Unlock()
	log := s.log.With("from", oldSpec.Path, "to", spec.Path)
	newInst, err := s.m.launch.Launch(ctx, spec)
	if err != nil {
		s.m.metrics.swaps.WithLabelValues(spec.Name, "rolled_back").Inc()
		log.Warn("swap refused: new version failed to start", "err", err)
		return fmt.Errorf("%w: new version failed to start: %v", ErrRolledBack, err)
	}
	newSess, _, err := s.route.Attach(ctx, newInst)
	if err != nil {
		newInst.Close()
		s.m.metrics.swaps.WithLabelValues(spec.Name, "rolled_back").Inc()
		return fmt.Errorf("%w: %v", ErrRolledBack, err)
	}
	s.mu.Lock()
	s.inst, s.sess = newInst, newSess
	s.st.Version = newInst.Manifest().GetVersion()
	s.mu.Unlock()
	log.Info("swap: new version attached; draining the old one", "version", newInst.Manifest().GetVersion())
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.m.cfg.DrainTimeout)
	if err := oldSess.Drain(dctx); err != nil {
		log.Warn("old version did not drain in time; its unfinished deliveries are redelivered", "err", err)
	}
	cancel()
	old.Close()

	if err := s.probation(ctx, newInst, newSess); err != nil {
		log.Error("new version failed probation; rolling back", "err", err)
		s.route.Detach(newSess)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.m.cfg.DrainTimeout)
		_ = newSess.Drain(dctx)
		cancel()
		newInst.Close()
		s.mu.Lock()
		s.inst, s.sess = nil, nil
		s.mu.Unlock()
		s.m.metrics.swaps.WithLabelValues(spec.Name, "rolled_back").Inc()
		if rerr := s.start(ctx, oldSpec); rerr != nil {
			// The old version will not start either: the run loop's
			// restart and quarantine logic takes over (on the old spec).
			s.setState(StateCrashed, rerr)
			return fmt.Errorf("%w: new version failed probation (%v) and the old one did not restart: %w", ErrRolledBack, err, rerr)
		}
		return fmt.Errorf("%w: new version failed probation: %v", ErrRolledBack, err)
	}
	s.recordSwap(spec)
	s.m.metrics.swaps.WithLabelValues(spec.Name, "done").Inc()
	log.Info("swap done")
	return nil
}

func (s *supervisor) recordSwap(spec Spec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.st.Spec
	s.st.Previous = &prev
	s.st.Spec = spec
	s.st.Swaps++
}

// probation watches a new instance for the probation window.
func (s *supervisor) probation(ctx context.Context, inst Instance, sess *dispatch.Session) error {
	window := time.NewTimer(s.m.cfg.ProbationWindow)
	defer window.Stop()
	tick := time.NewTicker(min(s.m.cfg.HealthInterval, s.m.cfg.ProbationWindow/4+time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-window.C:
			return nil
		case <-ctx.Done():
			return nil // shutting down: not the new version's fault
		case <-sess.Broken():
			return fmt.Errorf("crashed: %w", sess.Err())
		case <-tick.C:
			hctx, cancel := context.WithTimeout(ctx, s.m.cfg.HealthTimeout)
			err := inst.Ping(hctx)
			cancel()
			if err != nil {
				return err
			}
		}
	}
}

// crashed records a crash and reports whether the plugin is now quarantined.
func (s *supervisor) crashed(err error) bool {
	now := time.Now()
	s.mu.Lock()
	keep := s.crashes[:0]
	for _, t := range s.crashes {
		if now.Sub(t) < s.m.cfg.QuarantineWindow {
			keep = append(keep, t)
		}
	}
	s.crashes = append(keep, now)
	n := len(s.crashes)
	s.st.Restarts++
	name := s.st.Name
	s.mu.Unlock()
	s.m.metrics.restarts.WithLabelValues(name).Inc()
	if errors.Is(err, ErrUnverified) {
		s.m.metrics.quarantines.WithLabelValues(name).Inc()
		s.log.Error("plugin quarantined: a file does not match its pin; restore the file, or swap to a spec pinning the new one", "err", err)
		s.setState(StateQuarantined, err)
		return true
	}
	if s.spec().Remote != nil {
		// Quarantine stops a bad local file's restart loop; a remote
		// plugin has no process to restart, only an endpoint to dial
		// again with backoff until its deployment answers.
		s.log.Error("remote plugin unavailable; dialling again", "crashes", n, "err", err)
		s.setState(StateCrashed, err)
		return false
	}
	if n >= s.m.cfg.QuarantineAfter {
		s.m.metrics.quarantines.WithLabelValues(name).Inc()
		s.log.Error("plugin quarantined: enable or swap it to try again", "crashes", n, "window", s.m.cfg.QuarantineWindow.String(), "err", err)
		s.setState(StateQuarantined, err)
		return true
	}
	s.log.Error("plugin crashed; restarting", "err", err)
	s.setState(StateCrashed, err)
	return false
}

func (s *supervisor) resetCrashes() {
	s.mu.Lock()
	s.crashes = nil
	s.mu.Unlock()
}

// wait sleeps for the restart backoff, still answering commands.
func (s *supervisor) wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case c := <-s.cmds:
			switch c.kind {
			case cmdDisable:
				_ = s.endRelease(false)
				s.setState(StateDisabled, nil)
				c.done <- nil
				return
			case cmdRelease:
				c.done <- errors.New("plugin is restarting after a crash: a release needs a serving stable version")
				continue
			case cmdEndRelease:
				if c.promote {
					c.done <- errors.New("plugin is restarting after a crash: promote once it serves again")
				} else {
					c.done <- s.endRelease(false)
				}
				continue
			case cmdSwap:
				// Crashed and waiting: try the new spec right away.
				s.mu.Lock()
				s.st.Spec = c.spec
				s.mu.Unlock()
				c.done <- nil
				return
			default:
				c.done <- nil
				return
			}
		}
	}
}

// kill stops the instance at once (it crashed or hangs); unfinished
// deliveries are nacked and redelivered.
func (s *supervisor) kill() {
	s.mu.Lock()
	inst, sess := s.inst, s.sess
	s.inst, s.sess = nil, nil
	s.mu.Unlock()
	if sess != nil {
		s.route.Detach(sess)
		sess.Close()
	}
	if inst != nil {
		inst.Close()
	}
}

// stop drains the instance (bounded) and stops it.
func (s *supervisor) stop() {
	s.mu.Lock()
	inst, sess := s.inst, s.sess
	s.inst, s.sess = nil, nil
	s.mu.Unlock()
	if sess != nil {
		s.route.Detach(sess)
		ctx, cancel := context.WithTimeout(context.Background(), s.m.cfg.DrainTimeout)
		if err := sess.Drain(ctx); err != nil {
			s.log.Warn("plugin did not drain in time", "err", err)
		}
		cancel()
	}
	if inst != nil {
		inst.Close()
	}
}
