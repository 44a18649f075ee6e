// Package manager supervises plugin instances: it launches each configured
// plugin, attaches it to its dispatch route, health-checks it, restarts it
// with exponential backoff when it dies, quarantines it after repeated
// crashes, and swaps versions make-before-break: the new instance must
// describe itself and pass its health check before it gets any delivery,
// the old one finishes what it holds, and a new version that dies within the
// probation window is rolled back.
//
// Every change to one plugin (crash, swap, disable, …) runs on that plugin's
// own supervisor goroutine, so its state changes are serialized.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/dispatch"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Errors callers match on.
var (
	ErrUnknownPlugin = errors.New("unknown plugin")
	ErrRolledBack    = errors.New("swap rolled back")
	ErrStopped       = errors.New("manager stopped")
	// ErrUnverified is wrapped by a Launcher refusing a file that does not
	// match its pin. Restarting cannot help until the file or the pin
	// changes, so the supervisor quarantines the plugin at once.
	ErrUnverified = errors.New("plugin file does not match its pin")
)

// Spec is what to run for a plugin.
type Spec struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	SHA256 string `json:"sha256,omitempty"`
	// Remote, if set, dials the plugin's own deployment instead of
	// launching Path; a swap changes the desired endpoint.
	Remote *Remote `json:"remote,omitempty"`
	// Files pins more files the plugin runs (an interpreter's script),
	// checked at every launch like SHA256.
	Files []File   `json:"files,omitempty"`
	Args  []string `json:"args,omitempty"`
	Env   []string `json:"env,omitempty"`
	// StateNamespace, if set, is the state store namespace instead of
	// Name (a shadow candidate's own, see ShadowNamespace).
	StateNamespace string `json:"state_namespace,omitempty"`
}

// File is one pinned file of a Spec.
type File struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// Remote is a plugin served by its own deployment.
type Remote struct {
	Address         string        `json:"address"`
	CAFile          string        `json:"ca_file"`
	CertFile        string        `json:"cert_file"`
	KeyFile         string        `json:"key_file"`
	ServerName      string        `json:"server_name,omitempty"`
	ResolveInterval time.Duration `json:"resolve_interval,omitempty"`
}

// GetAddress is r's address, or "" for a launched plugin (nil r).
func (r *Remote) GetAddress() string {
	if r == nil {
		return ""
	}
	return r.Address
}

// Instance is a running plugin process.
type Instance interface {
	dispatch.Plugin
	Ping(ctx context.Context) error
	Close()
}

// Launcher starts plugin processes (pluginhost in production).
type Launcher interface {
	Launch(ctx context.Context, s Spec) (Instance, error)
}

// LauncherFunc adapts a function.
type LauncherFunc func(ctx context.Context, s Spec) (Instance, error)

// Launch implements Launcher.
func (f LauncherFunc) Launch(ctx context.Context, s Spec) (Instance, error) { return f(ctx, s) }

// State is a plugin's lifecycle state.
type State string

// Lifecycle states.
const (
	StateStarting    State = "starting"
	StateServing     State = "serving"
	StateDraining    State = "draining"
	StateStopped     State = "stopped"
	StateCrashed     State = "crashed"
	StateQuarantined State = "quarantined"
	StateDisabled    State = "disabled"
)

// Config tunes supervision.
type Config struct {
	// RestartBackoff is the first restart delay, doubling to RestartBackoffMax.
	RestartBackoff    time.Duration
	RestartBackoffMax time.Duration
	// QuarantineAfter crashes within QuarantineWindow quarantine a plugin
	// until an admin enables or swaps it.
	QuarantineAfter  int
	QuarantineWindow time.Duration
	// HealthInterval between health checks; HealthTimeout bounds each;
	// HealthFailures consecutive failures count as a crash.
	HealthInterval time.Duration
	HealthTimeout  time.Duration
	HealthFailures int
	// ProbationWindow after a swap during which a crash rolls back.
	ProbationWindow time.Duration
	// DrainTimeout bounds how long an old or stopping instance may finish
	// its in-flight deliveries.
	DrainTimeout time.Duration
}

func (c *Config) defaults() {
	if c.RestartBackoff <= 0 {
		c.RestartBackoff = 200 * time.Millisecond
	}
	if c.RestartBackoffMax <= 0 {
		c.RestartBackoffMax = 30 * time.Second
	}
	if c.QuarantineAfter <= 0 {
		c.QuarantineAfter = 5
	}
	if c.QuarantineWindow <= 0 {
		c.QuarantineWindow = 5 * time.Minute
	}
	if c.HealthInterval <= 0 {
		c.HealthInterval = 5 * time.Second
	}
	if c.HealthTimeout <= 0 {
		c.HealthTimeout = 2 * time.Second
	}
	if c.HealthFailures <= 0 {
		c.HealthFailures = 3
	}
	if c.ProbationWindow <= 0 {
		c.ProbationWindow = 10 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
}

// Status is one plugin's state on this replica.
type Status struct {
	Name      string    `json:"name"`
	State     State     `json:"state"`
	Version   string    `json:"version,omitempty"`
	Spec      Spec      `json:"spec"`
	Previous  *Spec     `json:"previous,omitempty"`
	InFlight  int       `json:"in_flight"`
	Restarts  int       `json:"restarts"`
	Swaps     int       `json:"swaps"`
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"since"`
	// Release is the canary or shadow beside the stable version, if any.
	Release *ReleaseStatus `json:"release,omitempty"`
}

// Manager supervises every plugin of one core replica.
type Manager struct {
	cfg     Config
	disp    *dispatch.Dispatcher
	launch  Launcher
	logger  *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	plugins map[string]*supervisor
	running bool
	stopped bool
}

type metrics struct {
	restarts    *prometheus.CounterVec
	swaps       *prometheus.CounterVec
	quarantines *prometheus.CounterVec
	state       *prometheus.GaugeVec
}

// New returns a manager; it does no I/O.
func New(cfg Config, disp *dispatch.Dispatcher, launch Launcher, logger *slog.Logger, reg prometheus.Registerer) *Manager {
	cfg.defaults()
	m := &metrics{
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_plugin_restarts_total", Help: "Plugin instance restarts after a crash or failed health checks.",
		}, []string{"plugin"}),
		swaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_plugin_swaps_total", Help: "Plugin version swaps by result (done, rolled_back).",
		}, []string{"plugin", "result"}),
		quarantines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_plugin_quarantines_total", Help: "Plugins quarantined after repeated crashes.",
		}, []string{"plugin"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "larkway_plugin_state", Help: "1 for the plugin's current lifecycle state.",
		}, []string{"plugin", "state"}),
	}
	if reg != nil {
		reg.MustRegister(m.restarts, m.swaps, m.quarantines, m.state)
	}
	return &Manager{cfg: cfg, disp: disp, launch: launch, logger: logger.With("component", "manager"),
		metrics: m, plugins: map[string]*supervisor{}}
}

// Run starts a route and a supervisor per spec and blocks until ctx ends.
// ready is called once every route is subscribed (events can no longer be
// missed). On return every route has stopped reading and finished what it
// held, and every instance has drained and stopped.
func (m *Manager) Run(ctx context.Context, specs []Spec, ready func()) error {
	m.mu.Lock()
	if m.running || m.stopped {
		m.mu.Unlock()
		return errors.New("manager: Run called twice")
	}
	m.running = true
	sups := make([]*supervisor, 0, len(specs))
	for _, s := range specs {
		if _, dup := m.plugins[s.Name]; dup {
			m.mu.Unlock()
			return fmt.Errorf("manager: plugin %q configured twice", s.Name)
		}
		sup := newSupervisor(m, s)
		m.plugins[s.Name] = sup
		sups = append(sups, sup)
	}
	m.mu.Unlock()

	// Routes read until ctx ends; supervisors outlive them so in-hand
	// deliveries can still reach an instance during the drain.
	routeCtx, stopRoutes := context.WithCancel(ctx)
	defer stopRoutes()
	supCtx, stopSups := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSups()
	var routes, supers sync.WaitGroup
	var subscribed sync.WaitGroup
	errs := make(chan error, len(sups))
	for _, sup := range sups {
		subscribed.Add(1)
		var once sync.Once
		done := func() { once.Do(subscribed.Done) }
		routes.Add(1)
		go func() {
			defer routes.Done()
			defer done()
			if err := sup.route.Run(routeCtx, done); err != nil {
				errs <- err
			}
		}()
		supers.Add(1)
		go func() { defer supers.Done(); sup.run(supCtx) }()
	}
	allSubscribed := make(chan struct{})
	go func() { subscribed.Wait(); close(allSubscribed) }()
	select {
	case <-allSubscribed:
		if ctx.Err() == nil && ready != nil {
			ready()
		}
	case <-ctx.Done():
	}
	<-ctx.Done()
	routes.Wait() // stop reading, finish in-hand deliveries
	stopSups()    // then drain and stop instances
	supers.Wait()
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

func (m *Manager) get(name string) (*supervisor, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return nil, ErrStopped
	}
	s, ok := m.plugins[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownPlugin, name)
	}
	return s, nil
}

// Swap replaces name's instance with spec make-before-break and blocks
// until the new version has passed probation (nil), or failed and was
// rolled back (ErrRolledBack), or ctx ends.
func (m *Manager) Swap(ctx context.Context, name string, spec Spec) error {
	spec.Name = name
	return m.command(ctx, name, command{kind: cmdSwap, spec: spec})
}

// Rollback swaps back to the spec before the last swap.
func (m *Manager) Rollback(ctx context.Context, name string) error {
	return m.command(ctx, name, command{kind: cmdRollback})
}

// Disable drains and stops the plugin; its events wait in its subscription.
func (m *Manager) Disable(ctx context.Context, name string) error {
	return m.command(ctx, name, command{kind: cmdDisable})
}

// Enable starts a disabled or quarantined plugin again.
func (m *Manager) Enable(ctx context.Context, name string) error {
	return m.command(ctx, name, command{kind: cmdEnable})
}

// Drain stops new deliveries to the plugin, lets in-flight ones finish and
// stops it, like Disable; it returns once the instance has stopped.
func (m *Manager) Drain(ctx context.Context, name string) error {
	return m.command(ctx, name, command{kind: cmdDisable})
}

func (m *Manager) command(ctx context.Context, name string, c command) error {
	sup, err := m.get(name)
	if err != nil {
		return err
	}
	c.done = make(chan error, 1)
	select {
	case sup.cmds <- c:
	case <-sup.exited:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.done:
		return err
	case <-sup.exited:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status lists every plugin's state, sorted by name.
func (m *Manager) Status() []Status {
	m.mu.Lock()
	sups := make([]*supervisor, 0, len(m.plugins))
	for _, s := range m.plugins {
		sups = append(sups, s)
	}
	m.mu.Unlock()
	out := make([]Status, 0, len(sups))
	for _, s := range sups {
		out = append(out, s.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Manifest returns the current instance's manifest, if one is serving.
func (m *Manager) Manifest(name string) (*pluginv1.Manifest, error) {
	sup, err := m.get(name)
	if err != nil {
		return nil, err
	}
	sup.mu.Lock()
	defer sup.mu.Unlock()
	if sup.inst == nil {
		return nil, fmt.Errorf("plugin %s has no running instance (state %s)", name, sup.st.State)
	}
	return sup.inst.Manifest(), nil
}

// Ready reports whether every enabled plugin has a serving instance.
func (m *Manager) Ready() bool {
	for _, s := range m.Status() {
		if s.State != StateServing && s.State != StateDisabled {
			return false
		}
	}
	return true
}
