// Package app wires the core together from a validated config and runs it
// with the ordered drain the conventions ask for: not ready → stop HTTP
// intake → stop pulling from the bus and finish in-flight deliveries → stop
// plugins → close clients and the bus.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/admin"
	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/bus/memory"
	buspulsar "github.com/larkway/larkway/core/internal/bus/pulsar"
	"github.com/larkway/larkway/core/internal/cluster"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/ingest"
	"github.com/larkway/larkway/core/internal/lark"
	"github.com/larkway/larkway/core/internal/longconn"
	"github.com/larkway/larkway/core/internal/manager"
	"github.com/larkway/larkway/core/internal/pluginhost"
	"github.com/larkway/larkway/core/internal/state"
	"github.com/larkway/larkway/core/internal/telemetry"
)

// App is a running core.
type App struct {
	cfg     *config.Config
	logger  *slog.Logger
	reg     *prometheus.Registry
	version string

	state     state.Store
	tp        trace.TracerProvider
	ready     atomic.Bool
	mgr       atomic.Pointer[manager.Manager]
	addr      chan string
	adminAddr chan string
}

// New prepares a core; it does no I/O. reg is the process's one registry.
func New(cfg *config.Config, logger *slog.Logger, reg *prometheus.Registry, version string) *App {
	return &App{cfg: cfg, logger: logger, reg: reg, version: version, addr: make(chan string, 1), adminAddr: make(chan string, 1)}
}

// SetTracerProvider replaces the configured tracing (tests record spans
// in memory). Call before Run.
func (a *App) SetTracerProvider(tp trace.TracerProvider) { a.tp = tp }

// Addr blocks until the HTTP server listens (or ctx ends) and returns its address.
func (a *App) Addr(ctx context.Context) (string, error) { return waitAddr(ctx, a.addr) }

// AdminAddr is Addr for the admin API (when enabled).
func (a *App) AdminAddr(ctx context.Context) (string, error) { return waitAddr(ctx, a.adminAddr) }

func waitAddr(ctx context.Context, ch chan string) (string, error) {
	select {
	case s := <-ch:
		ch <- s
		return s, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Ready reports whether every plugin is subscribed and intake is open.
func (a *App) Ready() bool { return a.ready.Load() }

// PluginsServing reports whether every enabled plugin has a serving instance.
func (a *App) PluginsServing() bool {
	m := a.mgr.Load()
	return m != nil && m.Ready()
}

func (a *App) openBus() (bus.Bus, error) {
	switch a.cfg.Bus.Kind {
	case "pulsar":
		return buspulsar.New(buspulsar.Config{
			URL:              a.cfg.Bus.Pulsar.URL,
			AdminURL:         a.cfg.Bus.Pulsar.AdminURL,
			OperationTimeout: a.cfg.Bus.Pulsar.OperationTimeout.D(),
			Batching:         !a.cfg.Bus.Pulsar.DisableBatching,
		}, a.logger.With("component", "bus"))
	default:
		return memory.New(a.logger.With("component", "bus"), memory.WithMaxRetainedBytes(int64(a.cfg.Bus.Memory.MaxRetainedMB)<<20)), nil
	}
}

// Run serves until ctx ends, then drains in order and returns.
func (a *App) Run(ctx context.Context) error {
	cfg := a.cfg
	st, err := a.openStores(ctx)
	if err != nil {
		return err
	}
	defer st.close()
	a.state = st.state
	// A nil tracer tells ingest and dispatch that tracing is off, so they
	// skip building spans altogether.
	tracingOn := a.tp != nil || cfg.Telemetry.Tracing.Enabled
	if a.tp == nil {
		tr := cfg.Telemetry.Tracing
		tp, shutdown, err := telemetry.Provider(ctx, telemetry.Config{Enabled: tr.Enabled, Endpoint: tr.Endpoint,
			Insecure: tr.Insecure, SampleRatio: tr.SampleRatio, ServiceVersion: a.version})
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = shutdown(sctx)
		}()
		a.tp = tp
	}
	var tracer trace.Tracer
	if tracingOn {
		tracer = a.tp.Tracer("github.com/larkway/larkway/core")
	}
	b, err := a.openBus()
	if err != nil {
		return fmt.Errorf("opening bus: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(cctx); err != nil {
			a.logger.Warn("closing bus", "err", err)
		}
	}()

	clients := map[string]action.Client{}
	var topics []string
	var ingestApps []ingest.App
	larkMetrics := lark.NewMetrics(a.reg)
	var tokens lark.TokenCache // nil: per process
	var shared redis.UniversalClient
	if st.redis != nil {
		tokens = lark.NewRedisTokenCache(st.redis, cfg.Redis.KeyPrefix+"lark:")
		shared = st.redis
	}
	for _, ac := range cfg.Apps {
		cli, err := lark.New(lark.Config{AppID: ac.ID, AppSecret: ac.Secret, BaseURL: ac.BaseURL, Timeout: ac.Timeout.D()},
			lark.Deps{Logger: a.logger.With("app", ac.ID), Tokens: tokens, Metrics: larkMetrics})
		if err != nil {
			return fmt.Errorf("creating Lark client for %s: %w", ac.ID, err)
		}
		defer cli.Close(context.Background())
		clients[ac.ID] = cli
		topics = append(topics, envelope.Topic(ac.ID))
		ingestApps = append(ingestApps, ingest.App{ID: ac.ID, VerificationToken: ac.VerificationToken,
			EncryptKey: ac.EncryptKey, EventPath: ac.EventPath, CardPath: ac.CardPath})
		if ac.EncryptKey == "" {
			a.logger.Warn("app has no encrypt_key: events are authenticated by verification token only", "app", ac.ID)
		}
	}
	rl := cfg.Actions.RateLimits
	limits := action.DefaultLimits()
	limits.Disabled = rl.Disabled
	if rl.AppPerSecond > 0 {
		limits.AppPerSecond = action.Limit{Count: rl.AppPerSecond, Window: time.Second}
	}
	if rl.AppPerMinute > 0 {
		limits.AppPerMinute = action.Limit{Count: rl.AppPerMinute, Window: time.Minute}
	}
	if rl.PerChat > 0 {
		limits.PerChat = action.Limit{Count: rl.PerChat, Window: time.Second}
	}
	if rl.PerUser > 0 {
		limits.PerUser = action.Limit{Count: rl.PerUser, Window: time.Second}
	}
	exec, err := action.New(action.Config{KeyPrefix: cfg.Redis.KeyPrefix + "action:", Limits: limits},
		action.Deps{Clients: clients, Redis: shared, Logger: a.logger, Registerer: a.reg})
	if err != nil {
		return fmt.Errorf("creating the action executor: %w", err)
	}
	defer exec.Close(context.Background()) // after the dispatcher drained: waiting calls end
	backoff := cfg.Dispatch.RetryBackoff.D()
	disp := dispatch.New(dispatch.Config{
		Topics: topics, Deadline: cfg.Dispatch.Deadline.D(), ActionTimeout: cfg.Dispatch.ActionTimeout.D(), MaxAttempts: cfg.Dispatch.MaxAttempts,
		MaxInFlight: cfg.Dispatch.MaxInFlight, Dedup: st.dedup, DoneTTL: cfg.Dispatch.DoneTTL.D(), DeadLetters: st.dlq,
		Callbacks: st.cards, Tracer: tracer,
		Backoff: func(attempt int) time.Duration {
			d := backoff
			for i := 1; i < attempt && d < time.Minute; i++ {
				d *= 2
			}
			return min(d, time.Minute)
		},
	}, b, exec, a.logger, a.reg)

	if bl, ok := b.(dispatch.Backlogger); ok {
		names := make([]string, 0, len(cfg.Plugins))
		for _, pc := range cfg.Plugins {
			names = append(names, pc.Name)
		}
		a.reg.MustRegister(dispatch.NewBacklogCollector(bl, topics, func() []string { return names }))
	}
	sv := cfg.Supervision
	mgr := manager.New(manager.Config{
		RestartBackoff: sv.RestartBackoff.D(), RestartBackoffMax: sv.RestartBackoffMax.D(),
		QuarantineAfter: sv.QuarantineAfter, QuarantineWindow: sv.QuarantineWindow.D(),
		HealthInterval: sv.HealthInterval.D(), HealthTimeout: sv.HealthTimeout.D(), HealthFailures: sv.HealthFailures,
		ProbationWindow: sv.ProbationWindow.D(), DrainTimeout: sv.DrainTimeout.D(),
	}, disp, manager.LauncherFunc(a.launch), a.logger, a.reg)
	a.mgr.Store(mgr)
	rec, err := cluster.NewReconciler(cluster.Config{ReplicaID: cfg.ReplicaID, Version: a.version,
		Interval: cfg.Cluster.ReconcileInterval.D()}, st.cluster, mgr, a.logger)
	if err != nil {
		return fmt.Errorf("config: replica_id: %w", err)
	}

	in := ingest.New(ingest.Config{Apps: ingestApps, MaxBodyBytes: cfg.Ingest.MaxBodyBytes,
		PublishTimeout: cfg.Ingest.PublishTimeout.D(), Replay: st.replay, Callbacks: st.cards,
		CardBudget: cfg.Ingest.CardBudget.D(), Tracer: tracer}, b, a.logger, a.reg)

	srv := &http.Server{Handler: a.publicMux(in, b, st), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	a.addr <- ln.Addr().String()
	a.logger.Info("listening", "addr", ln.Addr().String(), "bus", cfg.Bus.Kind, "replica", cfg.ReplicaID)
	srvErr := make(chan error, 2)
	go func() { srvErr <- srv.Serve(ln) }()

	var adminSrv *http.Server
	if cfg.Admin.Listen != "" {
		h, err := admin.New(cfg.Admin.Token, admin.Deps{Cluster: rec, Store: st.cluster, Local: mgr, DeadLetters: st.dlq, Replayer: disp}, a.logger)
		if err != nil {
			_ = srv.Close()
			return err
		}
		aln, err := net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			_ = srv.Close()
			return fmt.Errorf("listening on %s (admin): %w", cfg.Admin.Listen, err)
		}
		a.adminAddr <- aln.Addr().String()
		// Swaps wait out the probation window: no write timeout here.
		adminSrv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second}
		go func() { srvErr <- adminSrv.Serve(aln) }()
		a.logger.Info("admin API listening", "addr", aln.Addr().String())
	}

	// Plugins: a route and a supervisor each, until pluginCtx ends; the
	// reconciler keeps them at the cluster's desired versions.
	specs := make([]manager.Spec, 0, len(cfg.Plugins))
	for _, pc := range cfg.Plugins {
		if !pc.Disabled {
			files := make([]manager.File, len(pc.Files))
			for i, f := range pc.Files {
				files[i] = manager.File{Path: f.Path, SHA256: f.SHA256}
			}
			specs = append(specs, manager.Spec{Name: pc.Name, Path: pc.Path, SHA256: pc.SHA256, Files: files, Args: pc.Args, Env: pc.Env})
		}
	}
	pluginCtx, stopPlugins := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPlugins()
	mgrDone := make(chan error, 1)
	subscribed := make(chan struct{})
	go func() { mgrDone <- mgr.Run(pluginCtx, specs, func() { close(subscribed) }) }()
	recCtx, stopRec := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRec()
	recDone := make(chan error, 1)

	// Long connections are intake like the webhook: opened once plugins are
	// subscribed, closed first on drain.
	lcCtx, stopLC := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLC()
	lcDone := make(chan struct{})
	var runErr error
	select {
	case <-subscribed:
		a.ready.Store(true)
		a.logger.Info("ready: every plugin is subscribed")
		go func() { recDone <- rec.Run(recCtx) }()
		go func() { defer close(lcDone); a.runLongConnections(lcCtx, b, in) }()
		select {
		case <-ctx.Done():
		case err := <-srvErr:
			runErr = fmt.Errorf("serving HTTP: %w", err)
		case err := <-mgrDone:
			mgrDone <- err
			runErr = fmt.Errorf("plugins stopped: %w", err)
		}
	case <-ctx.Done():
		recDone <- nil
		close(lcDone)
	case err := <-srvErr:
		recDone <- nil
		close(lcDone)
		runErr = fmt.Errorf("serving HTTP: %w", err)
	case err := <-mgrDone:
		recDone <- nil
		close(lcDone)
		mgrDone <- err
		runErr = fmt.Errorf("starting plugins: %w", err)
	}

	// Ordered drain.
	a.ready.Store(false)
	rec.SetDraining()
	a.logger.Info("draining")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.logger.Warn("stopping HTTP intake", "err", err)
	}
	stopLC()
	<-lcDone
	stopRec()
	if err := <-recDone; err != nil {
		a.logger.Warn("leaving the cluster registry", "err", err)
	}
	stopPlugins() // dispatch stops pulling, finishes in-flight, then plugins stop
	if err := <-mgrDone; err != nil {
		a.logger.Warn("stopping plugins", "err", err)
	}
	if adminSrv != nil {
		_ = adminSrv.Shutdown(sctx)
	}
	a.logger.Info("stopped")
	return runErr
}

// runLongConnections keeps Lark's WebSocket connections of every app that
// enables them until ctx ends.
func (a *App) runLongConnections(ctx context.Context, b bus.Publisher, in *ingest.Server) {
	var wg sync.WaitGroup
	for _, ac := range a.cfg.Apps {
		if !ac.LongConnection.Enabled {
			continue
		}
		c := longconn.New(longconn.Config{AppID: ac.ID, AppSecret: ac.Secret, BaseURL: ac.BaseURL,
			Connections: ac.LongConnection.Connections, PublishTimeout: a.cfg.Ingest.PublishTimeout.D()},
			b, in, a.logger.With("component", "longconn", "app", ac.ID))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Run(ctx); err != nil {
				a.logger.Error("long connection stopped", "app", ac.ID, "err", err)
			}
		}()
	}
	wg.Wait()
}

// publicMux serves the webhooks, metrics and probes.
func (a *App) publicMux(in http.Handler, b bus.Bus, st *stores) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if err := b.Ping(r.Context()); err != nil {
			http.Error(w, "bus: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := st.ping(r.Context()); err != nil {
			http.Error(w, "redis: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		// Plugin health is deliberately not part of readiness: events for a
		// crashed or quarantined plugin wait in its subscription, and taking
		// every replica out of service would stop the other plugins' events
		// too. Plugin states are metrics and alerts (larkway_plugin_state).
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Until every plugin has its subscription, an accepted event could
		// reach no subscriber: Lark gets a 503 and retries.
		if !a.ready.Load() {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":"starting or draining; retry later","reason":"not_ready"}` + "\n"))
			return
		}
		in.ServeHTTP(w, r)
	}))
	return mux
}

// launch starts a plugin process for the manager.
func (a *App) launch(ctx context.Context, s manager.Spec) (manager.Instance, error) {
	files := make([]pluginhost.File, len(s.Files))
	for i, f := range s.Files {
		files[i] = pluginhost.File{Path: f.Path, SHA256: f.SHA256}
	}
	inst, err := pluginhost.Launch(ctx, pluginhost.Config{Path: s.Path, Args: s.Args, SHA256: s.SHA256, Files: files, Env: s.Env,
		State: state.NewService(a.state, func() string { return s.Name })}, a.logger.With("plugin", s.Name))
	if errors.Is(err, pluginhost.ErrChecksum) {
		return nil, fmt.Errorf("%w: %w", manager.ErrUnverified, err) // the supervisor quarantines
	}
	if err != nil {
		return nil, err
	}
	return inst, nil
}
