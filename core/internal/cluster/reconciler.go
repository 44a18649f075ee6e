package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/larkway/larkway/core/internal/manager"
)

// Plugins is what the reconciler needs of the local plugin manager.
type Plugins interface {
	Status() []manager.Status
	Swap(ctx context.Context, name string, spec manager.Spec) error
	Rollback(ctx context.Context, name string) error
	Disable(ctx context.Context, name string) error
	Enable(ctx context.Context, name string) error
	StartRelease(ctx context.Context, name string, rel manager.Release) error
	EndRelease(ctx context.Context, name string, promote bool) error
}

// Config tunes a replica's reconciler.
type Config struct {
	// ReplicaID names this replica (default: hostname-pid, set by the caller).
	ReplicaID string
	// Version is the core's version, reported in heartbeats.
	Version string
	// Interval between reconcile passes and heartbeats (default 2 s).
	Interval time.Duration
	// TTL of a heartbeat (default 3 × Interval).
	TTL time.Duration
}

// Reconciler keeps one replica's plugins at the desired state and reports
// the replica's status.
type Reconciler struct {
	cfg     Config
	store   Store
	plugins Plugins
	logger  *slog.Logger

	// opMu serializes reconcile passes with admin commands on this replica;
	// mu guards the maps.
	opMu     sync.Mutex
	mu       sync.Mutex
	applied  map[string]int64
	errs     map[string]string
	draining atomic.Bool
	kick     chan struct{}
}

// NewReconciler returns a reconciler; it does no I/O.
func NewReconciler(cfg Config, store Store, plugins Plugins, logger *slog.Logger) (*Reconciler, error) {
	if err := validName(cfg.ReplicaID); err != nil {
		return nil, err
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 3 * cfg.Interval
	}
	return &Reconciler{cfg: cfg, store: store, plugins: plugins, logger: logger.With("component", "cluster", "replica", cfg.ReplicaID),
		applied: map[string]int64{}, errs: map[string]string{}, kick: make(chan struct{}, 1)}, nil
}

// Run reconciles and heartbeats every interval until ctx ends, then removes
// the replica from the registry.
func (r *Reconciler) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		r.Reconcile(ctx)
		r.heartbeat(ctx)
		r.evaluate(ctx)
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return r.store.Remove(rctx, r.cfg.ReplicaID)
		case <-t.C:
		case <-r.kick:
		}
	}
}

// SetDraining marks the replica as draining in its heartbeats.
func (r *Reconciler) SetDraining() {
	r.draining.Store(true)
	r.Kick()
}

// Kick asks for a reconcile pass and heartbeat now.
func (r *Reconciler) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Reconcile applies every desired generation this replica has not applied.
func (r *Reconciler) Reconcile(ctx context.Context) {
	desired, err := r.store.Desired(ctx)
	if err != nil {
		r.logger.Warn("reading desired plugin states", "err", err)
		return
	}
	r.opMu.Lock()
	defer r.opMu.Unlock()
	local := map[string]manager.Status{}
	for _, s := range r.plugins.Status() {
		local[s.Name] = s
	}
	for name, d := range desired {
		r.mu.Lock()
		done := d.Generation <= r.applied[name]
		r.mu.Unlock()
		if done {
			continue
		}
		cur, ok := local[name]
		var err error
		if !ok {
			err = errors.New("plugin is not configured on this replica")
		} else {
			err = r.apply(ctx, name, cur, d)
		}
		r.record(name, d.Generation, err)
		if err != nil {
			r.logger.Error("reconciling plugin failed", "plugin", name, "generation", d.Generation, "err", err)
		} else {
			r.logger.Info("plugin reconciled", "plugin", name, "generation", d.Generation, "path", d.Spec.Path)
		}
	}
}

func (r *Reconciler) apply(ctx context.Context, name string, cur manager.Status, d Desired) error {
	if !d.Enabled {
		if cur.State == manager.StateDisabled {
			return nil
		}
		return r.plugins.Disable(ctx, name)
	}
	if cur.State == manager.StateDisabled || cur.State == manager.StateQuarantined {
		if err := r.plugins.Enable(ctx, name); err != nil {
			return err
		}
	}
	// The release first: a promotion makes the candidate's spec the
	// stable one, which then needs no swap.
	promoted, err := r.applyRelease(ctx, name, cur, d)
	if err != nil {
		return err
	}
	if promoted || sameSpec(cur.Spec, d.Spec) {
		return nil
	}
	return r.plugins.Swap(ctx, name, d.Spec)
}

func sameSpec(a, b manager.Spec) bool {
	return a.Path == b.Path && a.SHA256 == b.SHA256 && slices.Equal(a.Args, b.Args) && slices.Equal(a.Env, b.Env) &&
		slices.Equal(a.Files, b.Files) && // a swap that only re-pins files must reach every replica
		(a.Remote == nil) == (b.Remote == nil) && (a.Remote == nil || *a.Remote == *b.Remote) // a remote plugin's new endpoint too
}

// ErrNotApplied wraps a local failure: the desired state was not changed.
var ErrNotApplied = errors.New("not applied")

// Swap swaps the plugin on this replica first; only if that succeeds is the
// new spec made the desired state for every replica.
func (r *Reconciler) Swap(ctx context.Context, name string, spec manager.Spec) error {
	spec.Name = name
	return r.change(ctx, name, true, func() (Desired, error) {
		if err := r.plugins.Swap(ctx, name, spec); err != nil {
			return Desired{}, err
		}
		return Desired{Spec: spec, Enabled: true}, nil
	})
}

// Rollback rolls the plugin back on this replica, then everywhere.
func (r *Reconciler) Rollback(ctx context.Context, name string) error {
	return r.change(ctx, name, true, func() (Desired, error) {
		if err := r.plugins.Rollback(ctx, name); err != nil {
			return Desired{}, err
		}
		return Desired{Spec: r.localSpec(name), Enabled: true}, nil
	})
}

// Disable drains and disables the plugin on every replica.
func (r *Reconciler) Disable(ctx context.Context, name string) error {
	return r.change(ctx, name, false, func() (Desired, error) {
		if err := r.plugins.Disable(ctx, name); err != nil {
			return Desired{}, err
		}
		return Desired{Spec: r.localSpec(name), Enabled: false}, nil
	})
}

// Enable enables the plugin on every replica.
func (r *Reconciler) Enable(ctx context.Context, name string) error {
	return r.change(ctx, name, true, func() (Desired, error) {
		if err := r.plugins.Enable(ctx, name); err != nil {
			return Desired{}, err
		}
		return Desired{Spec: r.localSpec(name), Enabled: true}, nil
	})
}

func (r *Reconciler) localSpec(name string) manager.Spec {
	for _, s := range r.plugins.Status() {
		if s.Name == name {
			return s.Spec
		}
	}
	return manager.Spec{Name: name}
}

func (r *Reconciler) record(name string, gen int64, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied[name] = gen
	if err != nil {
		r.errs[name] = err.Error()
	} else {
		delete(r.errs, name)
	}
}

// change applies a change on this replica (local), then records the
// desired state it returns for the cluster, keeping the plugin's running
// release if keepRelease (disabling ends it) and its last release's end.
func (r *Reconciler) change(ctx context.Context, name string, keepRelease bool, local func() (Desired, error)) error {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	prev, err := r.store.Desired(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotApplied, err)
	}
	d, err := local()
	if err != nil {
		return fmt.Errorf("%w on replica %s: %w", ErrNotApplied, r.cfg.ReplicaID, err)
	}
	if p, ok := prev[name]; ok {
		if keepRelease && d.Release == nil {
			d.Release = p.Release
		}
		if d.LastRelease == nil {
			d.LastRelease = p.LastRelease
		}
	}
	stored, err := r.store.SetDesired(ctx, name, d)
	if err != nil {
		return fmt.Errorf("applied on replica %s but not recorded for the cluster: %w", r.cfg.ReplicaID, err)
	}
	r.record(name, stored.Generation, nil)
	r.Kick()
	return nil
}

// Status is this replica's current report.
func (r *Reconciler) Status() ReplicaStatus {
	r.mu.Lock()
	applied := make(map[string]int64, len(r.applied))
	for k, v := range r.applied {
		applied[k] = v
	}
	errs := make(map[string]string, len(r.errs))
	for k, v := range r.errs {
		errs[k] = v
	}
	r.mu.Unlock()
	state := "serving"
	if r.draining.Load() {
		state = "draining"
	}
	return ReplicaStatus{ID: r.cfg.ReplicaID, Version: r.cfg.Version, State: state, Plugins: r.plugins.Status(),
		Heartbeat: time.Now(), Applied: applied, ApplyErrors: errs}
}

func (r *Reconciler) heartbeat(ctx context.Context) {
	if err := r.store.Heartbeat(ctx, r.Status(), r.cfg.TTL); err != nil {
		r.logger.Warn("heartbeat failed", "err", err)
	}
}
