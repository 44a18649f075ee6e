package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/ingest"
	"github.com/larkway/larkway/core/internal/longconn"
)

// Run serves until ctx ends (or a listener or the plugins fail), then
// drains in order, releases everything Build opened and returns. Call it
// once.
func (c *Core) Run(ctx context.Context) error {
	if !c.ran.CompareAndSwap(false, true) {
		return errors.New("app: Run called twice")
	}
	defer c.close()
	srvErr := make(chan error, 3)
	// Metrics first: a scrape sees the core start, and the last one after
	// the drain still finds the listener (it is closed last).
	metricsDone := make(chan error, 1)
	go func() { metricsDone <- c.metrics.Serve(c.metricsLn) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.metrics.Shutdown(sctx)
		if err := <-metricsDone; !errors.Is(err, http.ErrServerClosed) {
			c.logger.Warn("serving metrics", "err", err)
		}
	}()
	c.logger.Info("metrics listening", "addr", c.MetricsAddr())
	go func() { srvErr <- c.public.Serve(c.publicLn) }()
	c.logger.Info("listening", "addr", c.Addr(), "bus", c.cfg.Bus.Kind, "replica", c.cfg.ReplicaID)
	if c.remoteState != nil {
		stateCtx, stopState := context.WithCancel(context.WithoutCancel(ctx))
		stateDone := make(chan error, 1)
		go func() { stateDone <- c.remoteState.Run(stateCtx) }()
		// Stopped after the plugins (deferred first, run last but for metrics):
		// a remote plugin's handler may still use its state while draining.
		defer func() {
			stopState()
			if err := <-stateDone; err != nil {
				c.logger.Warn("remote plugin state server", "err", err)
			}
		}()
		c.logger.Info("remote plugin state store listening", "addr", c.remoteState.Addr())
	}
	if c.admin != nil {
		go func() { srvErr <- c.admin.Serve(c.adminLn) }()
		c.logger.Info("admin API listening", "addr", c.AdminAddr())
	}

	// Plugins: a route and a supervisor each, until pluginCtx ends; the
	// reconciler keeps them at the cluster's desired versions.
	pluginCtx, stopPlugins := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPlugins()
	mgrDone := make(chan error, 1)
	subscribed := make(chan struct{})
	go func() { mgrDone <- c.mgr.Run(pluginCtx, c.specs, func() { close(subscribed) }) }()
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
		c.ready.Store(true)
		c.logger.Info("ready: every plugin is subscribed")
		go func() { recDone <- c.rec.Run(recCtx) }()
		go func() { defer close(lcDone); c.runLongConnections(lcCtx, c.bus, c.ingest) }()
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
	c.ready.Store(false)
	c.rec.SetDraining()
	c.logger.Info("draining")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.public.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		c.logger.Warn("stopping HTTP intake", "err", err)
	}
	stopLC()
	<-lcDone
	stopRec()
	if err := <-recDone; err != nil {
		c.logger.Warn("leaving the cluster registry", "err", err)
	}
	stopPlugins() // dispatch stops pulling, finishes in-flight, then plugins stop
	if err := <-mgrDone; err != nil {
		c.logger.Warn("stopping plugins", "err", err)
	}
	if c.admin != nil {
		_ = c.admin.Shutdown(sctx)
	}
	c.logger.Info("stopped")
	return runErr
}

// runLongConnections keeps Lark's WebSocket connections of every app that
// enables them until ctx ends.
func (c *Core) runLongConnections(ctx context.Context, b bus.Publisher, in *ingest.Server) {
	var wg sync.WaitGroup
	for _, ac := range c.cfg.Apps {
		if !ac.LongConnection.Enabled {
			continue
		}
		lc := longconn.New(longconn.Config{AppID: ac.ID, AppSecret: ac.Secret, BaseURL: ac.BaseURL,
			Connections: ac.LongConnection.Connections, PublishTimeout: c.cfg.Ingest.PublishTimeout.D()},
			b, in, c.logger.With("component", "longconn", "app", ac.ID))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := lc.Run(ctx); err != nil {
				c.logger.Error("long connection stopped", "app", ac.ID, "err", err)
			}
		}()
	}
	wg.Wait()
}

// metricsMux serves /metrics only.
func metricsMux(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

// publicMux serves Lark's paths and the probes, nothing else: metrics and
// the admin API have listeners of their own.
func (c *Core) publicMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !c.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if err := c.bus.Ping(r.Context()); err != nil {
			http.Error(w, "bus: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := c.st.ping(r.Context()); err != nil {
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
		if !c.ready.Load() {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":"starting or draining; retry later","reason":"not_ready"}` + "\n"))
			return
		}
		c.ingest.ServeHTTP(w, r)
	}))
	return mux
}
