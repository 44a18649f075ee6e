package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/manager"
)

// DefaultMinDeliveries is how many deliveries a canary must have had,
// summed over replicas, before its error rate can roll it back: a single
// early failure must not.
const DefaultMinDeliveries = 20

// DefaultMaxErrorRate is a canary's error budget when none is given.
const DefaultMaxErrorRate = 0.05

// Release is a canary or shadow every replica runs, with its policy.
type Release struct {
	manager.Release
	// A canary is promoted once it has had PromoteAfterDeliveries
	// deliveries (summed over replicas) or run for PromoteAfterDuration,
	// whichever comes first, within its error budget. Neither: promoted by
	// hand only.
	PromoteAfterDeliveries int64  `json:"promote_after_deliveries,omitempty"`
	PromoteAfterDuration   string `json:"promote_after_duration,omitempty"`
	// MaxErrorRate is the error budget: errors / deliveries above it, once
	// MinDeliveries were made, roll the canary back.
	MaxErrorRate  float64   `json:"max_error_rate"`
	MinDeliveries int64     `json:"min_deliveries"`
	Started       time.Time `json:"started"`
}

// ReleaseEnd is how the last release of a plugin ended.
type ReleaseEnd struct {
	Mode dispatch.Mode `json:"mode"`
	Spec manager.Spec  `json:"spec"`
	// Result is promoted, rolled_back (the error budget was breached or the
	// candidate crashed) or aborted (by an operator).
	Result string                `json:"result"`
	Reason string                `json:"reason,omitempty"`
	At     time.Time             `json:"at"`
	Stats  dispatch.VersionStats `json:"stats"`
}

// Release results.
const (
	ResultPromoted   = "promoted"
	ResultRolledBack = "rolled_back"
	ResultAborted    = "aborted"
)

// Validate checks a release's policy and fills its defaults.
func (r *Release) Validate() error {
	if r.Mode != dispatch.ModeCanary && r.Mode != dispatch.ModeShadow {
		return fmt.Errorf("mode must be canary or shadow, not %q", r.Mode)
	}
	if r.Percent < 0 || r.Percent > 100 {
		return fmt.Errorf("chats percentage must be 0..100, not %v", r.Percent)
	}
	if r.Mode == dispatch.ModeCanary && r.Percent == 0 && len(r.Chats) == 0 {
		return errors.New("a canary needs a percentage of chats or a list of chats")
	}
	if r.Mode == dispatch.ModeShadow && r.Percent == 0 && len(r.Chats) == 0 {
		r.Percent = 100 // a shadow sees every chat unless told otherwise
	}
	if r.PromoteAfterDuration != "" {
		if d, err := time.ParseDuration(r.PromoteAfterDuration); err != nil || d <= 0 {
			return fmt.Errorf("promote_after_duration %q is not a positive duration", r.PromoteAfterDuration)
		}
	}
	if r.PromoteAfterDeliveries < 0 || r.MinDeliveries < 0 {
		return errors.New("promote_after_deliveries and min_deliveries must not be negative")
	}
	if r.MaxErrorRate < 0 || r.MaxErrorRate > 1 {
		return fmt.Errorf("max_error_rate must be 0..1, not %v", r.MaxErrorRate)
	}
	if r.MaxErrorRate == 0 {
		r.MaxErrorRate = DefaultMaxErrorRate
	}
	if r.MinDeliveries == 0 {
		r.MinDeliveries = DefaultMinDeliveries
	}
	return nil
}

// Verdict is what the evidence says to do with a canary.
type Verdict string

// Verdicts.
const (
	VerdictWait     Verdict = ""
	VerdictPromote  Verdict = "promote"
	VerdictRollback Verdict = "rollback"
)

// Decide judges a canary on its deliveries summed over replicas: roll back
// when a replica's candidate failed or the error rate breaches the budget
// after the minimum number of deliveries; promote once the quota is served
// within it; otherwise wait. A shadow is never decided automatically.
func Decide(r Release, total dispatch.VersionStats, failed bool, now time.Time) (Verdict, string) {
	if r.Mode != dispatch.ModeCanary {
		return VerdictWait, ""
	}
	if failed {
		return VerdictRollback, "the candidate failed on a replica"
	}
	minimum := r.MinDeliveries
	if r.PromoteAfterDeliveries > 0 {
		minimum = min(minimum, r.PromoteAfterDeliveries)
	}
	if total.Deliveries >= max(minimum, 1) && total.ErrorRate() > r.MaxErrorRate {
		return VerdictRollback, fmt.Sprintf("error rate %.3f > budget %.3f over %d deliveries", total.ErrorRate(), r.MaxErrorRate, total.Deliveries)
	}
	if q := r.PromoteAfterDeliveries; q > 0 && total.Deliveries >= q {
		return VerdictPromote, fmt.Sprintf("served %d deliveries with error rate %.3f (budget %.3f)", total.Deliveries, total.ErrorRate(), r.MaxErrorRate)
	}
	if d, err := time.ParseDuration(r.PromoteAfterDuration); err == nil && d > 0 && now.Sub(r.Started) >= d {
		return VerdictPromote, fmt.Sprintf("ran %s with error rate %.3f over %d deliveries (budget %.3f)", d, total.ErrorRate(), total.Deliveries, r.MaxErrorRate)
	}
	return VerdictWait, ""
}

// ReleaseView is a plugin's release across the cluster (the admin API's
// /v1/plugins/{name}/release).
type ReleaseView struct {
	Plugin string `json:"plugin"`
	// Release is the desired release (nil: none running).
	Release *Release `json:"release,omitempty"`
	// Replicas are each replica's view of it.
	Replicas map[string]*manager.ReleaseStatus `json:"replicas"`
	// Total and StableTotal sum the candidate's and the stable version's
	// deliveries over the replicas running the release.
	Total       dispatch.VersionStats `json:"total"`
	StableTotal dispatch.VersionStats `json:"stable_total"`
	ErrorRate   float64               `json:"error_rate"`
	// Failed is set when the candidate failed on some replica.
	Failed bool `json:"failed"`
	// Verdict is what the evidence says now (promote, rollback or "").
	Verdict Verdict `json:"verdict,omitempty"`
	Reason  string  `json:"reason,omitempty"`
	// Last is how the previous release ended.
	Last *ReleaseEnd `json:"last,omitempty"`
}

// View sums a release's state over the replicas in reps.
func View(name string, d Desired, reps []ReplicaStatus, now time.Time) ReleaseView {
	v := ReleaseView{Plugin: name, Release: d.Release, Replicas: map[string]*manager.ReleaseStatus{}, Last: d.LastRelease}
	if d.Release == nil {
		return v
	}
	for _, rep := range reps {
		for _, p := range rep.Plugins {
			// Only this run's reports: a replica still reporting an earlier
			// run of the same candidate must not count toward this one.
			if p.Name != name || p.Release == nil || p.Release.ID != d.Release.ID {
				continue
			}
			v.Replicas[rep.ID] = p.Release
			v.Total = v.Total.Add(p.Release.Stats)
			v.StableTotal = v.StableTotal.Add(p.Release.StableStats)
			v.Failed = v.Failed || p.Release.State == manager.ReleaseFailed
		}
	}
	v.ErrorRate = v.Total.ErrorRate()
	v.Verdict, v.Reason = Decide(*d.Release, v.Total, v.Failed, now)
	return v
}

// applyRelease brings this replica's release of name to the desired one
// (reconcile pass; opMu held). It reports whether the local candidate was
// promoted.
func (r *Reconciler) applyRelease(ctx context.Context, name string, cur manager.Status, d Desired) (bool, error) {
	local := cur.Release
	switch {
	case d.Release == nil && local == nil:
		return false, nil
	case d.Release == nil:
		// Ended: promoted if the desired spec is the candidate's.
		promote := local.Mode == dispatch.ModeCanary && local.State == manager.ReleaseRunning && sameSpec(local.Spec, d.Spec)
		if err := r.plugins.EndRelease(ctx, name, promote); err != nil {
			return false, err
		}
		return promote, nil
	case local != nil && local.ID == d.Release.ID && local.State == manager.ReleaseFailed:
		return false, nil // failed here; evaluate rolls it back everywhere
	case local != nil && local.ID == d.Release.ID && manager.SameRelease(local.Release, d.Release.Release) && sameSplit(local.Split, d.Release.Split):
		return false, nil
	default:
		return false, r.plugins.StartRelease(ctx, name, d.Release.Release)
	}
}

func sameSplit(a, b dispatch.Split) bool {
	return a.Percent == b.Percent && slices.Equal(a.Chats, b.Chats)
}

// StartRelease starts a canary or shadow on this replica first; only if
// that succeeds is it made the desired state for every replica. A release
// of the same candidate changes its split (a canary's percentage grows).
func (r *Reconciler) StartRelease(ctx context.Context, name string, rel Release) error {
	if err := rel.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotApplied, err)
	}
	rel.Spec.Name = name
	return r.change(ctx, name, false, func() (Desired, error) {
		prev, err := r.store.Desired(ctx)
		if err != nil {
			return Desired{}, err
		}
		if p, ok := prev[name]; ok && p.Release != nil && manager.SameRelease(p.Release.Release, rel.Release) &&
			!sameSplit(p.Release.Split, rel.Split) {
			// Growing the split is the same run: same stats, same clock.
			// The very same request again starts a new run (after the
			// candidate failed, say).
			rel.ID, rel.Started = p.Release.ID, p.Release.Started
		} else {
			rel.Started = time.Now()
			rel.ID = strconv.FormatInt(rel.Started.UnixNano(), 36)
		}
		if err := r.plugins.StartRelease(ctx, name, rel.Release); err != nil {
			return Desired{}, err
		}
		return Desired{Spec: r.localSpec(name), Enabled: true, Release: &rel}, nil
	})
}

// EndRelease promotes (promote) or aborts name's release on this replica,
// then everywhere.
func (r *Reconciler) EndRelease(ctx context.Context, name string, promote bool) error {
	desired, err := r.store.Desired(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotApplied, err)
	}
	d := desired[name]
	if d.Release == nil {
		return fmt.Errorf("%w: %w", ErrNotApplied, manager.ErrNoRelease)
	}
	view := r.view(ctx, name, d)
	result := ResultAborted
	if promote {
		result = ResultPromoted
	}
	return r.change(ctx, name, false, func() (Desired, error) {
		if err := r.plugins.EndRelease(ctx, name, promote); err != nil {
			return Desired{}, err
		}
		end := &ReleaseEnd{Mode: d.Release.Mode, Spec: d.Release.Spec, Result: result, Reason: "by an operator", At: time.Now(), Stats: view.Total}
		return Desired{Spec: r.localSpec(name), Enabled: true, LastRelease: end}, nil
	})
}

// ReleaseView is name's release across the cluster.
func (r *Reconciler) ReleaseView(ctx context.Context, name string) (ReleaseView, error) {
	desired, err := r.store.Desired(ctx)
	if err != nil {
		return ReleaseView{}, err
	}
	return r.view(ctx, name, desired[name]), nil
}

// view reads every replica's report (this one's fresh) into a ReleaseView.
func (r *Reconciler) view(ctx context.Context, name string, d Desired) ReleaseView {
	reps, err := r.store.Replicas(ctx)
	if err != nil {
		r.logger.Warn("listing replicas for a release", "err", err)
	}
	self := r.Status()
	out := []ReplicaStatus{self}
	for _, rep := range reps {
		if rep.ID != self.ID {
			out = append(out, rep)
		}
	}
	return View(name, d, out, time.Now())
}

// evaluate decides every running canary on the cluster's evidence: when
// its verdict is promote or rollback, the desired state changes (if no
// other replica changed it first) and every replica's reconciler applies
// it, this one's at once.
func (r *Reconciler) evaluate(ctx context.Context) {
	desired, err := r.store.Desired(ctx)
	if err != nil {
		return
	}
	decided := false
	for name, d := range desired {
		if d.Release == nil || d.Release.Mode != dispatch.ModeCanary {
			continue
		}
		v := r.view(ctx, name, d)
		if v.Verdict == VerdictWait {
			continue
		}
		next := Desired{Spec: d.Spec, Enabled: d.Enabled}
		end := &ReleaseEnd{Mode: d.Release.Mode, Spec: d.Release.Spec, Result: ResultRolledBack, Reason: v.Reason, At: time.Now(), Stats: v.Total}
		if v.Verdict == VerdictPromote {
			next.Spec, end.Result = d.Release.Spec, ResultPromoted
		}
		next.LastRelease = end
		_, ok, err := r.store.SetDesiredIf(ctx, name, next, d.Generation)
		switch {
		case err != nil:
			r.logger.Warn("recording a canary's verdict", "plugin", name, "err", err)
		case ok:
			decided = true
			r.logger.Info("canary decided", "plugin", name, "verdict", string(v.Verdict), "reason", v.Reason,
				"deliveries", v.Total.Deliveries, "errors", v.Total.Errors)
		}
	}
	if decided {
		r.Kick()
	}
}
