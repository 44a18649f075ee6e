package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/bus/memory"
	buspulsar "github.com/larkway/larkway/core/internal/bus/pulsar"
	"github.com/larkway/larkway/core/internal/callback"
	"github.com/larkway/larkway/core/internal/dedup"
	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/ingest"
	"github.com/larkway/larkway/core/internal/lark"
	"github.com/larkway/larkway/core/internal/manager"
	"github.com/larkway/larkway/core/internal/pluginhost"
	"github.com/larkway/larkway/core/internal/state"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// PluginSpec is a plugin the in-process core runs.
type PluginSpec struct {
	Name string
	Path string
	Args []string
	Env  []string
}

// CoreOptions configure an in-process core.
type CoreOptions struct {
	// Bus is "memory" or "pulsar" (with PulsarURL).
	Bus       string
	PulsarURL string
	App       App
	// LarkURL is the OpenAPI base URL (the emulator).
	LarkURL string
	Plugins []PluginSpec
	// UnlimitedActions turns the executor's client-side rate limits off
	// (action.Limits.Disabled), as against an unlimited emulator.
	UnlimitedActions bool
	// MaxInFlight is the dispatcher's delivery workers per plugin (default 64).
	MaxInFlight int
	// MaxRetainedBytes bounds the memory bus (0: its default).
	MaxRetainedBytes int64
	// ProbationWindow is the plugin manager's (0: its default).
	ProbationWindow time.Duration
	// Observe, if set, is called once per delivery that reached the
	// executor (the plugin answered DONE), after its actions ran.
	Observe func(plugin string, req action.Request, err error)
	Logger  *slog.Logger
}

// Core is larkway's data path assembled in this process from the same
// packages `larkway serve` wires in core/internal/app — ingest, bus,
// dispatch, the plugin manager and host, the action executor and the Lark
// client, with in-process stores — but with the executor's rate limits
// settable, which the YAML config does not expose yet. It leaves out what
// does not carry events: admin API, cluster registry, long connections,
// tracing.
type Core struct {
	URL  string
	Bus  bus.Bus
	Mgr  *manager.Manager
	Exec *action.Executor

	srv     *http.Server
	srvDone chan error
	stop    context.CancelFunc
	mgrDone chan error
	once    sync.Once
	err     error
}

// observed decorates the executor to see every delivery that reached it.
type observed struct {
	next dispatch.Executor
	fn   func(plugin string, req action.Request, err error)
}

func (o observed) SendFallback(ctx context.Context, plugin string, ev *pluginv1.Event, text string) error {
	return o.next.SendFallback(ctx, plugin, ev, text)
}

func (o observed) Execute(ctx context.Context, req action.Request) ([]*pluginv1.RefusedAction, error) {
	refused, err := o.next.Execute(ctx, req)
	o.fn(req.Plugin, req, err)
	return refused, err
}

// StartCore starts a core and returns once every plugin serves.
func StartCore(ctx context.Context, o CoreOptions) (*Core, error) {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 64
	}
	reg := prometheus.NewRegistry()
	var b bus.Bus
	switch o.Bus {
	case "pulsar":
		pb, err := buspulsar.New(buspulsar.Config{URL: o.PulsarURL, OperationTimeout: 5 * time.Second, Batching: true}, logger.With("component", "bus"))
		if err != nil {
			return nil, fmt.Errorf("opening the Pulsar bus: %w", err)
		}
		b = pb
	case "memory", "":
		var opts []memory.Option
		if o.MaxRetainedBytes > 0 {
			opts = append(opts, memory.WithMaxRetainedBytes(o.MaxRetainedBytes))
		}
		b = memory.New(logger.With("component", "bus"), opts...)
	default:
		return nil, fmt.Errorf("bench: unknown bus %q", o.Bus)
	}
	c := &Core{Bus: b, srvDone: make(chan error, 1), mgrDone: make(chan error, 1)}
	fail := func(err error) (*Core, error) {
		_ = c.Close()
		return nil, err
	}
	cli, err := lark.New(lark.Config{AppID: o.App.ID, AppSecret: "bench-secret", BaseURL: o.LarkURL, Timeout: 10 * time.Second},
		lark.Deps{Logger: logger, Metrics: lark.NewMetrics(reg)})
	if err != nil {
		return fail(fmt.Errorf("creating the Lark client: %w", err))
	}
	exec, err := action.New(action.Config{Limits: action.Limits{Disabled: o.UnlimitedActions}},
		action.Deps{Clients: map[string]action.Client{o.App.ID: cli}, Logger: logger, Registerer: reg})
	if err != nil {
		return fail(fmt.Errorf("creating the executor: %w", err))
	}
	c.Exec = exec
	var ex dispatch.Executor = exec
	if o.Observe != nil {
		ex = observed{next: exec, fn: o.Observe}
	}
	topic := envelope.Topic(o.App.ID)
	cards := callback.NewMemory()
	disp := dispatch.New(dispatch.Config{
		Topics: []string{topic}, Deadline: 10 * time.Second, MaxAttempts: 5, MaxInFlight: o.MaxInFlight,
		Dedup: dedup.NewMemory(), Callbacks: cards,
		Backoff: func(attempt int) time.Duration { return min(time.Duration(attempt)*time.Second, time.Minute) },
	}, b, ex, logger, reg)
	store := state.NewMemory()
	mgr := manager.New(manager.Config{ProbationWindow: o.ProbationWindow}, disp, manager.LauncherFunc(func(ctx context.Context, s manager.Spec) (manager.Instance, error) {
		inst, err := pluginhost.Launch(ctx, pluginhost.Config{Path: s.Path, Args: s.Args, Env: s.Env,
			State: state.NewService(store, func() string { return s.Name })}, logger.With("plugin", s.Name))
		if err != nil {
			return nil, err
		}
		return inst, nil
	}), logger, reg)
	c.Mgr = mgr
	specs := make([]manager.Spec, 0, len(o.Plugins))
	for _, p := range o.Plugins {
		specs = append(specs, manager.Spec{Name: p.Name, Path: p.Path, Args: p.Args, Env: p.Env})
	}
	pctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	c.stop = stop
	subscribed := make(chan struct{})
	go func() { c.mgrDone <- mgr.Run(pctx, specs, func() { close(subscribed) }) }()
	select {
	case <-subscribed:
	case err := <-c.mgrDone:
		c.mgrDone <- err
		return fail(fmt.Errorf("starting plugins: %w", err))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	// Serving means every plugin has an instance on its route.
	for deadline := time.Now().Add(60 * time.Second); !mgr.Ready(); {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fail(fmt.Errorf("plugins did not serve within 60 s: %+v", mgr.Status()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	in := ingest.New(ingest.Config{Apps: []ingest.App{{ID: o.App.ID, VerificationToken: o.App.VerificationToken,
		EncryptKey: o.App.EncryptKey, EventPath: "/lark/events", CardPath: "/lark/cards"}},
		MaxBodyBytes: 1 << 20, PublishTimeout: 2 * time.Second, Callbacks: cards}, b, logger, reg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	c.URL = "http://" + ln.Addr().String() + "/lark/events"
	c.srv = &http.Server{Handler: in, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	go func() { c.srvDone <- c.srv.Serve(ln) }()
	return c, nil
}

// Close drains in the core's order: stop HTTP intake, stop pulling from the
// bus and finish in-flight deliveries, stop plugins, close the executor and
// the bus. It is idempotent.
func (c *Core) Close() error {
	c.once.Do(func() {
		var errs []error
		if c.srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := c.srv.Shutdown(ctx); err != nil {
				errs = append(errs, err)
			}
			cancel()
			if err := <-c.srvDone; !errors.Is(err, http.ErrServerClosed) {
				errs = append(errs, err)
			}
		}
		if c.stop != nil {
			c.stop()
			if err := <-c.mgrDone; err != nil {
				errs = append(errs, err)
			}
		}
		if c.Exec != nil {
			_ = c.Exec.Close(context.Background())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := c.Bus.Close(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
		c.err = errors.Join(errs...)
	})
	return c.err
}
