// Package app turns a validated config into a core (Build: one place for
// every component and default) and runs it (Core.Run: the ordered start
// and drain the conventions ask for: not ready → stop HTTP intake → stop
// pulling from the bus and finish in-flight deliveries → stop plugins →
// close clients and the bus). `larkway serve` and `larkway bench` both
// build their core here, so benchmarks measure what ships.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/action/ratelimit"
	"github.com/larkway/larkway/core/internal/admin"
	"github.com/larkway/larkway/core/internal/backoff"
	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/bus/embedded"
	"github.com/larkway/larkway/core/internal/bus/memory"
	buspulsar "github.com/larkway/larkway/core/internal/bus/pulsar"
	"github.com/larkway/larkway/core/internal/cluster"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/console"
	"github.com/larkway/larkway/core/internal/dedup"
	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/dispatch/backlog"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/ingest"
	"github.com/larkway/larkway/core/internal/lark"
	"github.com/larkway/larkway/core/internal/manager"
	"github.com/larkway/larkway/core/internal/pluginhost"
	"github.com/larkway/larkway/core/internal/remote"
	"github.com/larkway/larkway/core/internal/state"
	"github.com/larkway/larkway/core/internal/telemetry"
)

// Deps are what a core takes from the process that hosts it.
type Deps struct {
	Logger *slog.Logger
	// Registry is the process's one Prometheus registry.
	Registry *prometheus.Registry
	Version  string
	// TracerProvider, if set, replaces the configured tracing (tests
	// record spans in memory).
	TracerProvider trace.TracerProvider
	// WrapExecutor, if set, decorates the action executor the dispatcher
	// calls (the bench counts deliveries with it).
	WrapExecutor func(dispatch.Executor) dispatch.Executor
}

// Core is a built core: every component constructed, every listener
// bound, nothing served yet. Run serves it; Close releases what Build
// opened when Run is never called (and is a no-op after Run).
type Core struct {
	cfg     *config.Config
	logger  *slog.Logger
	version string // the core's, told to each plugin in Describe

	st      *stores
	bus     bus.Bus
	clients []*lark.Client
	exec    *action.Executor
	disp    *dispatch.Dispatcher
	mgr     *manager.Manager
	rec     *cluster.Reconciler
	ingest  *ingest.Server
	specs   []manager.Spec
	// remoteState serves remote plugins' state (nil: not configured).
	remoteState *remote.StateServer
	// remoteInstances counts each remote plugin's instances in its pool.
	remoteInstances *prometheus.GaugeVec

	public, metrics, admin *http.Server
	publicLn, metricsLn    net.Listener
	adminLn                net.Listener
	// tail feeds the console's live tail and rates (nil without a console).
	tail    *console.Hub
	console *console.Console

	tracingShutdown func(context.Context) error
	// background ends what Build started that outlives it (the JWK Set's
	// refresh); close cancels it.
	background context.Context
	stopBg     context.CancelFunc
	ready      atomic.Bool

	ran     atomic.Bool
	release sync.Once
}

// Build constructs a core from cfg (validated by config.Load or Parse).
// It connects to Redis when configured and binds the listeners, so their
// addresses are known before Run; on error everything opened is closed.
func Build(ctx context.Context, cfg *config.Config, deps Deps) (_ *Core, err error) {
	logger := deps.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	c := &Core{cfg: cfg, logger: logger, version: deps.Version}
	c.background, c.stopBg = context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if c.st, err = openStores(ctx, cfg.Redis); err != nil {
		return nil, err
	}

	// A nil tracer tells ingest and dispatch that tracing is off, so they
	// skip building spans altogether.
	var tracer trace.Tracer
	tp := deps.TracerProvider
	if tp == nil {
		tr := cfg.Telemetry.Tracing
		if tp, c.tracingShutdown, err = telemetry.Provider(ctx, telemetry.Config{Enabled: tr.Enabled, Endpoint: tr.Endpoint,
			Insecure: tr.Insecure, SampleRatio: tr.SampleRatio, ServiceVersion: deps.Version}); err != nil {
			return nil, err
		}
	}
	if deps.TracerProvider != nil || cfg.Telemetry.Tracing.Enabled {
		tracer = tp.Tracer("github.com/larkway/larkway/core")
	}

	if c.bus, err = openBus(cfg.Bus, logger.With("component", "bus")); err != nil {
		return nil, fmt.Errorf("opening bus: %w", err)
	}
	if eb, ok := c.bus.(*embedded.Bus); ok && c.st.redis == nil {
		// One machine without Redis: dedup markers, leases and webhook
		// nonces live beside the events on disk, so a restart neither runs
		// a finished handler again nor accepts a replayed request.
		c.st.dedup = dedup.NewDurable(eb.State("dedup"))
		c.st.replay = ingest.NewDurableReplayCache(eb.State("nonce"))
	}

	clients := map[string]action.Client{}
	var topics []string
	var ingestApps []ingest.App
	larkMetrics := lark.NewMetrics(reg)
	var tokens lark.TokenCache // nil: per process
	var shared redis.UniversalClient
	if c.st.redis != nil {
		tokens = lark.NewRedisTokenCache(c.st.redis, cfg.Redis.KeyPrefix+"lark:")
		shared = c.st.redis
	}
	for _, ac := range cfg.Apps {
		cli, err := lark.New(lark.Config{AppID: ac.ID, AppSecret: ac.Secret, BaseURL: ac.BaseURL, Timeout: ac.Timeout.D()},
			lark.Deps{Logger: logger.With("app", ac.ID), Tokens: tokens, Metrics: larkMetrics})
		if err != nil {
			return nil, fmt.Errorf("creating Lark client for %s: %w", ac.ID, err)
		}
		c.clients = append(c.clients, cli)
		clients[ac.ID] = cli
		topics = append(topics, envelope.Topic(ac.ID))
		ingestApps = append(ingestApps, ingest.App{ID: ac.ID, VerificationToken: ac.VerificationToken,
			EncryptKey: ac.EncryptKey, EventPath: ac.EventPath, CardPath: ac.CardPath})
		if ac.EncryptKey == "" {
			logger.Warn("app has no encrypt_key: events are authenticated by verification token only", "app", ac.ID)
		}
	}
	if c.exec, err = action.New(action.Config{KeyPrefix: cfg.Redis.KeyPrefix + "action:", Limits: actionLimits(cfg.Actions.RateLimits)},
		action.Deps{Clients: clients, Redis: shared, Logger: logger, Registerer: reg, Plugins: pluginNames(cfg.Plugins)}); err != nil {
		return nil, fmt.Errorf("creating the action executor: %w", err)
	}
	var exec dispatch.Executor = c.exec
	if cfg.Admin.Listen != "" && !cfg.Admin.Console.Disabled {
		c.tail = console.NewHub()
		exec = c.tail.Executor(exec)
	}
	if deps.WrapExecutor != nil {
		exec = deps.WrapExecutor(exec)
	}
	dc := cfg.Dispatch
	c.disp = dispatch.New(dispatch.Config{
		Topics: topics, Deadline: dc.Deadline.D(), ActionTimeout: dc.ActionTimeout.D(), MaxAttempts: dc.MaxAttempts,
		MaxInFlight: dc.MaxInFlight, Dedup: c.st.dedup, DoneTTL: dc.DoneTTL.D(), DeadLetters: c.st.dlq,
		Callbacks: c.st.cards, Shadows: c.st.shadows, Tracer: tracer, MaxRetryAfter: dc.MaxRetryAfter.D(), Backoff: backoff.Policy{First: dc.RetryBackoff.D(), Max: time.Minute}.Func(),
	}, c.bus, exec, logger, reg)
	if bl, ok := c.bus.(bus.Backlogger); ok {
		names := make([]string, 0, len(cfg.Plugins))
		for _, pc := range cfg.Plugins {
			names = append(names, pc.Name)
		}
		reg.MustRegister(backlog.NewCollector(bl, topics, func() []string { return names }))
	}

	sv := cfg.Supervision
	c.remoteInstances = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "larkway_plugin_remote_instances",
		Help: "Instances of a remote plugin the core holds a stream to (healthy, describing the pool's manifest)."}, []string{"plugin"})
	reg.MustRegister(c.remoteInstances)
	c.mgr = manager.New(manager.Config{
		RestartBackoff: sv.RestartBackoff.D(), RestartBackoffMax: sv.RestartBackoffMax.D(),
		QuarantineAfter: sv.QuarantineAfter, QuarantineWindow: sv.QuarantineWindow.D(),
		HealthInterval: sv.HealthInterval.D(), HealthTimeout: sv.HealthTimeout.D(), HealthFailures: sv.HealthFailures,
		ProbationWindow: sv.ProbationWindow.D(), DrainTimeout: sv.DrainTimeout.D(),
	}, c.disp, manager.LauncherFunc(c.launch), logger, reg)
	for _, pc := range cfg.Plugins {
		if !pc.Disabled {
			files := make([]manager.File, len(pc.Files))
			for i, f := range pc.Files {
				files[i] = manager.File{Path: f.Path, SHA256: f.SHA256}
			}
			spec := manager.Spec{Name: pc.Name, Path: pc.Path, SHA256: pc.SHA256, Files: files, Args: pc.Args, Env: pc.Env}
			if r := pc.Remote; r != nil {
				spec.Remote = &manager.Remote{Address: r.Address, CAFile: r.TLS.CAFile, CertFile: r.TLS.CertFile, KeyFile: r.TLS.KeyFile,
					ServerName: r.TLS.ServerName, ResolveInterval: r.ResolveInterval.D()}
			}
			c.specs = append(c.specs, spec)
		}
	}
	if c.rec, err = cluster.NewReconciler(cluster.Config{ReplicaID: cfg.ReplicaID, Version: deps.Version,
		Interval: cfg.Cluster.ReconcileInterval.D()}, c.st.cluster, c.mgr, logger); err != nil {
		return nil, fmt.Errorf("config: replica_id: %w", err)
	}

	var intake bus.Publisher = c.bus
	if c.tail != nil {
		intake = c.tail.Publisher(c.bus)
	}
	c.ingest = ingest.New(ingest.Config{Apps: ingestApps, MaxBodyBytes: cfg.Ingest.MaxBodyBytes,
		PublishTimeout: cfg.Ingest.PublishTimeout.D(), Replay: c.st.replay, Callbacks: c.st.cards,
		CardBudget: cfg.Ingest.CardBudget.D(), Tracer: tracer,
		MaxInFlight: cfg.Ingest.MaxInFlight, AdmissionWait: cfg.Ingest.AdmissionWait.D()}, intake, logger, reg)

	// Listeners: bound now so a bad address fails the build and their
	// addresses are known before Run.
	if c.metricsLn, err = net.Listen("tcp", cfg.Metrics.Listen); err != nil {
		return nil, fmt.Errorf("listening on %s (metrics): %w", cfg.Metrics.Listen, err)
	}
	c.metrics = &http.Server{Handler: metricsMux(reg), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	if c.publicLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	c.public = &http.Server{Handler: c.publicMux(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	if ps := cfg.PluginState; ps.Listen != "" {
		var remotes []string
		for _, pc := range cfg.Plugins {
			if pc.Remote != nil {
				remotes = append(remotes, pc.Name)
			}
		}
		if c.remoteState, err = remote.NewStateServer(ps.Listen, remote.TLSFiles{CAFile: ps.TLS.CAFile, CertFile: ps.TLS.CertFile, KeyFile: ps.TLS.KeyFile},
			c.st.state, remotes, logger); err != nil {
			return nil, fmt.Errorf("config: plugin_state: %w", err)
		}
		if err := c.remoteState.Listen(); err != nil {
			return nil, err
		}
	}
	if ac := cfg.Admin; ac.Listen != "" {
		if err := c.buildAdmin(cfg, logger, reg); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// buildAdmin builds the admin API: its credentials and roles, the swap
// confinement, TLS, and its listener.
func (c *Core) buildAdmin(cfg *config.Config, logger *slog.Logger, reg prometheus.Gatherer) error {
	ac := cfg.Admin
	acfg := admin.Config{PluginDir: ac.PluginDir, PluginPaths: map[string]string{}, PluginRemotes: map[string]manager.Remote{}}
	for _, pc := range cfg.Plugins {
		acfg.PluginPaths[pc.Name] = pc.Path
	}
	for _, s := range c.specs {
		if s.Remote != nil {
			acfg.PluginRemotes[s.Name] = *s.Remote
		}
	}
	if ac.Token != "" {
		// The single token of older configs keeps its full power.
		acfg.Tokens = append(acfg.Tokens, admin.Token{Name: "admin.token", Secret: ac.Token, Role: admin.RoleOperator})
	}
	for _, t := range ac.Tokens {
		role, err := admin.ParseRole(t.Role)
		if err != nil {
			return fmt.Errorf("config: admin.tokens %s: %w", t.Name, err)
		}
		acfg.Tokens = append(acfg.Tokens, admin.Token{Name: t.Name, Secret: t.Token, Role: role})
	}
	if ac.JWT.Enabled() {
		// The JWK Set's refresh runs until the core is released; keys
		// already read keep verifying during the drain.
		v, err := admin.NewJWT(c.background, admin.JWTConfig{JWKSFile: ac.JWT.JWKSFile, JWKSURL: ac.JWT.JWKSURL,
			Issuer: ac.JWT.Issuer, Audience: ac.JWT.Audience, RoleClaim: ac.JWT.RoleClaim}, logger)
		if err != nil {
			return err
		}
		acfg.JWT = v
	}
	h, err := admin.New(acfg, admin.Deps{Cluster: c.rec, Store: c.st.cluster, Local: c.mgr, DeadLetters: c.st.dlq, Replayer: c.disp,
		FailedActions: c.exec.FailedActions(), ActionReplayer: c.exec, Shadows: c.st.shadows, ShadowReplayer: c}, logger)
	if err != nil {
		return err
	}
	var tlsCfg *tls.Config
	if ac.TLS.Enabled() {
		if tlsCfg, err = admin.ServerTLS(admin.TLSConfig{CertFile: ac.TLS.CertFile, KeyFile: ac.TLS.KeyFile,
			ClientCAFile: ac.TLS.ClientCAFile}, logger); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", ac.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s (admin): %w", ac.Listen, err)
	}
	if tlsCfg != nil {
		// The certificate comes from tlsCfg (reloaded when rotated).
		ln = tls.NewListener(ln, tlsCfg)
	}
	c.adminLn = ln
	var handler http.Handler = h
	if !ac.Console.Disabled {
		// The console serves every path but the API's; it calls the API in
		// process with the caller's credentials.
		if c.console, err = console.New(console.Config{SessionTTL: ac.Console.SessionTTL.D(), SecureCookie: tlsCfg != nil,
			PlaygroundURL: ac.Console.PlaygroundURL}, console.Deps{API: h, Auth: h, Tail: c.tail, Metrics: reg}, logger); err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/v1/", h)
		mux.Handle("/", c.console)
		handler = mux
		scheme := "http"
		if tlsCfg != nil {
			scheme = "https"
		}
		logger.Info("admin console configured", "url", scheme+"://"+ln.Addr().String()+"/")
	}
	// Swaps wait out the probation window: no write timeout here.
	c.admin = &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, TLSConfig: tlsCfg}
	if c.console != nil {
		// Live tails would otherwise hold the shutdown until its deadline.
		c.admin.RegisterOnShutdown(c.console.Close)
	}
	logger.Info("admin API configured", "addr", ln.Addr().String(), "tls", tlsCfg != nil,
		"mtls", tlsCfg != nil && tlsCfg.ClientCAs != nil, "tokens", len(acfg.Tokens), "jwt", acfg.JWT != nil)
	return nil
}

// Addr is the Lark-facing listener's address.
func (c *Core) Addr() string { return c.publicLn.Addr().String() }

// MetricsAddr is the metrics listener's address.
func (c *Core) MetricsAddr() string { return c.metricsLn.Addr().String() }

// AdminAddr is the admin API's address ("" when it is off).
func (c *Core) AdminAddr() string {
	if c.adminLn == nil {
		return ""
	}
	return c.adminLn.Addr().String()
}

// Bus is the core's event bus (the bench publishes backlogs to it).
func (c *Core) Bus() bus.Bus { return c.bus }

// Manager runs the core's plugins (the bench disables, enables and swaps).
func (c *Core) Manager() *manager.Manager { return c.mgr }

// Ready reports whether every plugin is subscribed and intake is open.
func (c *Core) Ready() bool { return c.ready.Load() }

// PluginStateAddr is the remote plugins' state store address ("" when not
// served).
func (c *Core) PluginStateAddr() string {
	if c.remoteState == nil {
		return ""
	}
	return c.remoteState.Addr()
}

// PluginsServing reports whether the core is ready and every enabled
// plugin has a serving instance (before Run none has).
func (c *Core) PluginsServing() bool { return c.ready.Load() && c.mgr.Ready() }

// Close releases what Build opened if Run was never called; after Run it
// does nothing (Run releases on its way out). Idempotent.
func (c *Core) Close() error {
	if !c.ran.Load() {
		c.close()
	}
	return nil
}

// close releases every resource Build may have opened, in the drain's
// order for what is left: listeners, executor, Lark clients, bus, stores,
// tracing. Safe on a partly built core; runs once.
func (c *Core) close() {
	c.release.Do(func() {
		c.stopBg()
		for _, ln := range []net.Listener{c.publicLn, c.metricsLn, c.adminLn} {
			if ln != nil {
				_ = ln.Close()
			}
		}
		if c.remoteState != nil {
			c.remoteState.Close()
		}
		if c.exec != nil {
			_ = c.exec.Close(context.Background())
		}
		for _, cli := range c.clients {
			_ = cli.Close(context.Background())
		}
		if c.bus != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := c.bus.Close(cctx); err != nil {
				c.logger.Warn("closing bus", "err", err)
			}
			cancel()
		}
		if c.st != nil {
			c.st.close()
		}
		if c.tracingShutdown != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = c.tracingShutdown(sctx)
			cancel()
		}
	})
}

func openBus(cfg config.Bus, logger *slog.Logger) (bus.Bus, error) {
	switch cfg.Kind {
	case "pulsar":
		return buspulsar.New(buspulsar.Config{
			URL:              cfg.Pulsar.URL,
			AdminURL:         cfg.Pulsar.AdminURL,
			OperationTimeout: cfg.Pulsar.OperationTimeout.D(),
			Batching:         cfg.Pulsar.Batching,
		}, logger)
	case "embedded":
		return embedded.Open(embedded.Config{
			Dir:            cfg.Embedded.Dir,
			RetentionAge:   cfg.Embedded.Retention.Age.D(),
			RetentionBytes: int64(cfg.Embedded.Retention.SizeMB) << 20,
			MinFreeBytes:   int64(cfg.Embedded.MinFreeMB) << 20,
		}, logger)
	default:
		return memory.New(logger, memory.WithBudget(int64(cfg.Memory.BudgetMB)<<20)), nil
	}
}

// actionLimits are Lark's documented limits with the config's overrides.
func actionLimits(rl config.RateLimits) ratelimit.Limits {
	limits := ratelimit.DefaultLimits()
	limits.Disabled = rl.Disabled
	if rl.AppPerSecond > 0 {
		limits.AppPerSecond = ratelimit.Limit{Count: rl.AppPerSecond, Window: time.Second}
	}
	if rl.AppPerMinute > 0 {
		limits.AppPerMinute = ratelimit.Limit{Count: rl.AppPerMinute, Window: time.Minute}
	}
	if rl.PerChat > 0 {
		limits.PerChat = ratelimit.Limit{Count: rl.PerChat, Window: time.Second}
	}
	if rl.PerUser > 0 {
		limits.PerUser = ratelimit.Limit{Count: rl.PerUser, Window: time.Second}
	}
	return limits
}

// launch starts a plugin process for the manager, or dials a remote
// plugin's instances.
func (c *Core) launch(ctx context.Context, s manager.Spec) (manager.Instance, error) {
	if r := s.Remote; r != nil {
		p, err := remote.Dial(ctx, remote.Config{Name: s.Name, Address: r.Address, ResolveInterval: r.ResolveInterval, CoreVersion: c.version,
			Instances: c.remoteInstances.WithLabelValues(s.Name),
			TLS:       remote.TLSFiles{CAFile: r.CAFile, CertFile: r.CertFile, KeyFile: r.KeyFile, ServerName: r.ServerName}}, c.logger.With("plugin", s.Name))
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	files := make([]pluginhost.File, len(s.Files))
	for i, f := range s.Files {
		files[i] = pluginhost.File{Path: f.Path, SHA256: f.SHA256}
	}
	ns := s.Name
	if s.StateNamespace != "" {
		ns = s.StateNamespace
	}
	inst, err := pluginhost.Launch(ctx, pluginhost.Config{Path: s.Path, Args: s.Args, SHA256: s.SHA256, Files: files, Env: s.Env,
		State: state.NewService(c.st.state, func() string { return ns }), CoreVersion: c.version}, c.logger.With("plugin", s.Name))
	if errors.Is(err, pluginhost.ErrChecksum) {
		return nil, fmt.Errorf("%w: %w", manager.ErrUnverified, err) // the supervisor quarantines
	}
	if err != nil {
		return nil, err
	}
	return inst, nil
}

// pluginNames are the configured plugins' names.
func pluginNames(ps []config.Plugin) []string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	return names
}

// ReplayToShadow feeds the events stored on every app's topic in [from,
// to) into plugin name's shadow, beside a baseline of its stable version
// (admin.ShadowReplayer).
func (c *Core) ReplayToShadow(ctx context.Context, name string, from, to time.Time, split dispatch.Split) (dispatch.ReplayStats, error) {
	h, ok := c.bus.(bus.Historian)
	if !ok {
		return dispatch.ReplayStats{}, fmt.Errorf("replaying into %s's shadow on the %s bus: %w", name, c.cfg.Bus.Kind, bus.ErrNoHistory)
	}
	return c.mgr.ReplayToShadow(ctx, name, split, func(ctx context.Context, fn func(bus.Message) error) error {
		for _, ac := range c.cfg.Apps {
			if err := h.History(ctx, envelope.Topic(ac.ID), from, to, func(m bus.Message, _ time.Time) error { return fn(m) }); err != nil {
				return err
			}
		}
		return nil
	})
}
