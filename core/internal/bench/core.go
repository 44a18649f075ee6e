package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/app"
	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/manager"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// PluginSpec is a plugin the in-process core runs.
type PluginSpec struct {
	Name string
	Path string
	Args []string
	Env  []string
	// Remote, if set, dials the plugin at Remote.Address with its TLS
	// files instead of launching Path.
	Remote *RemoteSpec
}

// RemoteSpec is a remote plugin's plugins[].remote.
type RemoteSpec struct {
	Address string
	PKI     PKI
}

// CoreOptions are the bench's overrides of a core's config.
type CoreOptions struct {
	// Bus is "memory", "embedded" (in DataDir) or "pulsar" (with PulsarURL).
	Bus       string
	PulsarURL string
	// DataDir holds the embedded bus's store (empty: a temporary
	// directory, removed by Close).
	DataDir string
	App     App
	// LarkURL is the OpenAPI base URL (the emulator).
	LarkURL string
	Plugins []PluginSpec
	// UnlimitedActions turns the executor's client-side rate limits off
	// (actions.rate_limits.disabled), as against an unlimited emulator.
	UnlimitedActions bool
	// MaxInFlight is dispatch.max_in_flight (0: the config's default).
	MaxInFlight int
	// BudgetMB is bus.memory.budget_mb (0: the default).
	BudgetMB int
	// AdmissionWait is ingest.admission_wait (0: the default).
	AdmissionWait time.Duration
	// ProbationWindow is supervision.probation_window (0: the default).
	ProbationWindow time.Duration
	// Observe, if set, is called once per delivery that reached the
	// executor (the plugin answered DONE), after its actions ran.
	Observe func(plugin string, req action.Request, err error)
	Logger  *slog.Logger
}

// Core is the core `larkway serve` runs, built by app.Build from a config
// that differs from a deployment's only in the overrides above, running
// in this process with its plugins as real child processes.
type Core struct {
	URL string
	Bus bus.Bus
	Mgr *manager.Manager

	core    *app.Core
	stop    context.CancelFunc
	done    chan error
	once    sync.Once
	err     error
	tempDir string // removed by Close
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

// coreConfig is the YAML a bench core runs on, parsed and validated by
// the same loader as `larkway serve --config`.
func coreConfig(o CoreOptions) (*config.Config, error) {
	busCfg := map[string]any{"kind": "memory"}
	switch o.Bus {
	case "pulsar":
		busCfg = map[string]any{"kind": "pulsar", "pulsar": map[string]any{"url": o.PulsarURL, "operation_timeout": "5s"}}
	case "embedded":
		busCfg = map[string]any{"kind": "embedded", "embedded": map[string]any{"dir": o.DataDir}}
	case "memory", "":
		if o.BudgetMB > 0 {
			busCfg["memory"] = map[string]any{"budget_mb": o.BudgetMB}
		}
	default:
		return nil, fmt.Errorf("bench: unknown bus %q", o.Bus)
	}
	plugins := []map[string]any{}
	for _, p := range o.Plugins {
		if r := p.Remote; r != nil {
			plugins = append(plugins, map[string]any{"name": p.Name, "remote": map[string]any{"address": r.Address,
				"tls": map[string]any{"ca_file": r.PKI.CAFile, "cert_file": r.PKI.CoreCert, "key_file": r.PKI.CoreKey}}})
			continue
		}
		plugins = append(plugins, map[string]any{"name": p.Name, "path": p.Path, "args": p.Args, "env": p.Env})
	}
	doc := map[string]any{
		"listen":  "127.0.0.1:0",
		"metrics": map[string]any{"listen": "127.0.0.1:0"},
		"bus":     busCfg,
		"apps": []map[string]any{{"id": o.App.ID, "secret": "bench-secret", "verification_token": o.App.VerificationToken,
			"encrypt_key": o.App.EncryptKey, "base_url": o.LarkURL, "event_path": "/lark/events", "card_path": "/lark/cards"}},
		"plugins": plugins,
		"actions": map[string]any{"rate_limits": map[string]any{"disabled": o.UnlimitedActions}},
	}
	if o.MaxInFlight > 0 {
		doc["dispatch"] = map[string]any{"max_in_flight": o.MaxInFlight}
	}
	if o.AdmissionWait > 0 {
		doc["ingest"] = map[string]any{"admission_wait": o.AdmissionWait.String()}
	}
	if o.ProbationWindow > 0 {
		doc["supervision"] = map[string]any{"probation_window": o.ProbationWindow.String()}
	}
	text, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Parse(strings.NewReader(string(text)))
	if err != nil {
		return nil, fmt.Errorf("bench core config: %w", err)
	}
	return cfg, nil
}

// NewCore builds and starts a core and returns once every plugin serves.
func NewCore(ctx context.Context, o CoreOptions) (_ *Core, err error) {
	var tempDir string
	if o.Bus == "embedded" && o.DataDir == "" {
		if tempDir, err = os.MkdirTemp("", "larkway-bench-bus-"); err != nil {
			return nil, err
		}
		o.DataDir = tempDir
		defer func() {
			if err != nil {
				_ = os.RemoveAll(tempDir)
			}
		}()
	}
	cfg, err := coreConfig(o)
	if err != nil {
		return nil, err
	}
	deps := app.Deps{Logger: o.Logger, Registry: prometheus.NewRegistry(), Version: "bench"}
	if o.Observe != nil {
		deps.WrapExecutor = func(next dispatch.Executor) dispatch.Executor { return observed{next: next, fn: o.Observe} }
	}
	ac, err := app.Build(ctx, cfg, deps)
	if err != nil {
		return nil, err
	}
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	c := &Core{URL: "http://" + ac.Addr() + "/lark/events", Bus: ac.Bus(), Mgr: ac.Manager(), core: ac, stop: stop, done: make(chan error, 1)}
	c.tempDir, tempDir = tempDir, "" // Close removes it now
	go func() { c.done <- ac.Run(rctx) }()
	// Serving means every plugin is subscribed and has an instance.
	for deadline := time.Now().Add(60 * time.Second); !ac.Ready() || !ac.PluginsServing(); {
		select {
		case err := <-c.done:
			c.done <- err
			_ = c.Close()
			if err == nil {
				err = errors.New("it returned without an error")
			}
			return nil, fmt.Errorf("the core stopped while starting: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			status := ac.Manager().Status()
			_ = c.Close()
			return nil, fmt.Errorf("plugins did not serve within 60 s: %+v", status)
		}
	}
	return c, nil
}

// Close drains the core in its shipped order and waits for it. Idempotent.
func (c *Core) Close() error {
	c.once.Do(func() {
		c.stop()
		c.err = <-c.done
		if c.tempDir != "" {
			_ = os.RemoveAll(c.tempDir)
		}
	})
	return c.err
}
