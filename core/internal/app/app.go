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
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/bus/memory"
	buspulsar "github.com/larkway/larkway/core/internal/bus/pulsar"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/ingest"
	"github.com/larkway/larkway/core/internal/lark"
	"github.com/larkway/larkway/core/internal/manager"
	"github.com/larkway/larkway/core/internal/pluginhost"
)

// App is a running core.
type App struct {
	cfg    *config.Config
	logger *slog.Logger
	reg    *prometheus.Registry

	mgr     *manager.Manager
	ready   atomic.Bool
	addr    chan string
	addrVal atomic.Value
}

// New prepares a core; it does no I/O. reg is the process's one registry.
func New(cfg *config.Config, logger *slog.Logger, reg *prometheus.Registry) *App {
	return &App{cfg: cfg, logger: logger, reg: reg, addr: make(chan string, 1)}
}

// Addr blocks until the HTTP server listens (or ctx ends) and returns its address.
func (a *App) Addr(ctx context.Context) (string, error) {
	select {
	case s := <-a.addr:
		a.addr <- s
		return s, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Ready reports whether every plugin is subscribed and intake is open.
func (a *App) Ready() bool { return a.ready.Load() }

func (a *App) openBus() (bus.Bus, error) {
	switch a.cfg.Bus.Kind {
	case "pulsar":
		return buspulsar.New(buspulsar.Config{
			URL:              a.cfg.Bus.Pulsar.URL,
			OperationTimeout: a.cfg.Bus.Pulsar.OperationTimeout.D(),
		}, a.logger.With("component", "bus"))
	default:
		return memory.New(a.logger.With("component", "bus")), nil
	}
}

// Run serves until ctx ends, then drains in order and returns.
func (a *App) Run(ctx context.Context) error {
	cfg := a.cfg
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
	for _, ac := range cfg.Apps {
		cli, err := lark.New(lark.Config{AppID: ac.ID, AppSecret: ac.Secret, BaseURL: ac.BaseURL, Timeout: ac.Timeout.D()},
			a.logger.With("component", "lark", "app", ac.ID))
		if err != nil {
			return fmt.Errorf("creating Lark client for %s: %w", ac.ID, err)
		}
		defer cli.Close(context.Background())
		clients[ac.ID] = cli
		topics = append(topics, envelope.Topic(ac.ID))
		ingestApps = append(ingestApps, ingest.App{ID: ac.ID, VerificationToken: ac.VerificationToken,
			EncryptKey: ac.EncryptKey, EventPath: ac.EventPath})
		if ac.EncryptKey == "" {
			a.logger.Warn("app has no encrypt_key: events are authenticated by verification token only", "app", ac.ID)
		}
	}
	exec := action.New(clients, a.logger, a.reg)
	backoff := cfg.Dispatch.RetryBackoff.D()
	disp := dispatch.New(dispatch.Config{
		Topics: topics, Deadline: cfg.Dispatch.Deadline.D(), MaxAttempts: cfg.Dispatch.MaxAttempts,
		MaxInFlight: cfg.Dispatch.MaxInFlight,
		Backoff: func(attempt int) time.Duration {
			d := backoff
			for i := 1; i < attempt && d < time.Minute; i++ {
				d *= 2
			}
			return min(d, time.Minute)
		},
	}, b, exec, a.logger, a.reg)

	in := ingest.New(ingest.Config{Apps: ingestApps, MaxBodyBytes: cfg.Ingest.MaxBodyBytes,
		PublishTimeout: cfg.Ingest.PublishTimeout.D()}, b, a.logger, a.reg)

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
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	a.addr <- ln.Addr().String()
	a.logger.Info("listening", "addr", ln.Addr().String(), "bus", cfg.Bus.Kind)
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ln) }()

	// Plugins: a route and a supervisor each, until ctx ends.
	specs := make([]manager.Spec, 0, len(cfg.Plugins))
	for _, pc := range cfg.Plugins {
		if !pc.Disabled {
			specs = append(specs, manager.Spec{Name: pc.Name, Path: pc.Path, SHA256: pc.SHA256, Args: pc.Args, Env: pc.Env})
		}
	}
	a.mgr = manager.New(manager.Config{}, disp, manager.LauncherFunc(a.launch), a.logger, a.reg)
	pluginCtx, stopPlugins := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPlugins()
	mgrDone := make(chan error, 1)
	subscribed := make(chan struct{})
	go func() { mgrDone <- a.mgr.Run(pluginCtx, specs, func() { close(subscribed) }) }()
	select {
	case <-subscribed:
		a.ready.Store(true)
		a.logger.Info("ready: every plugin is subscribed")
	case <-ctx.Done():
	case err := <-srvErr:
		stopPlugins()
		<-mgrDone
		return fmt.Errorf("serving HTTP: %w", err)
	case err := <-mgrDone:
		_ = srv.Close()
		return fmt.Errorf("starting plugins: %w", err)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-srvErr:
		runErr = fmt.Errorf("serving HTTP: %w", err)
	}
	// Ordered drain.
	a.ready.Store(false)
	a.logger.Info("draining")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.logger.Warn("stopping HTTP intake", "err", err)
	}
	stopPlugins() // dispatch stops pulling, finishes in-flight, then plugins stop
	if err := <-mgrDone; err != nil {
		a.logger.Warn("stopping plugins", "err", err)
	}
	a.logger.Info("stopped")
	return runErr
}

// launch starts a plugin process for the manager.
func (a *App) launch(ctx context.Context, s manager.Spec) (manager.Instance, error) {
	inst, err := pluginhost.Launch(ctx, pluginhost.Config{Path: s.Path, Args: s.Args, SHA256: s.SHA256, Env: s.Env},
		a.logger.With("plugin", s.Name))
	if err != nil {
		return nil, err
	}
	return inst, nil
}
