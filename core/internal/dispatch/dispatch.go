// Package dispatch streams events from the bus to plugin instances and turns
// their results into actions, acks, retries and dead letters. Each plugin has
// its own bus subscription, so its backlog, retries and position are its own.
//
// A Route consumes a plugin's subscription and runs its workers (route.go);
// each delivery goes through the pipeline in pipeline.go (claim → deliver →
// card answer → execute → settle) to the plugin's current Session, whose
// stream is package stream. Per-chat order is package keyed, matching
// package match, card tagging package cardtag; dead letters are indexed and
// replayed by package dlq.
package dispatch

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/callback"
	"github.com/larkway/larkway/core/internal/dedup"
	"github.com/larkway/larkway/core/internal/dlq"
	"github.com/larkway/larkway/core/internal/shadow"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Plugin is a running plugin instance.
type Plugin interface {
	Manifest() *pluginv1.Manifest
	Service() pluginv1.PluginServiceClient
}

// Executor performs a result's actions, and the manifest's fallback reply
// when an event is dead-lettered.
type Executor interface {
	Execute(ctx context.Context, req action.Request) ([]*pluginv1.RefusedAction, error)
	SendFallback(ctx context.Context, plugin string, ev *pluginv1.Event, text string) error
}

// DefaultMaxRetryAfter is Config.MaxRetryAfter's default: the longest
// redelivery delay bus.DefaultBackoff reaches.
const DefaultMaxRetryAfter = time.Minute

// Config tunes delivery.
type Config struct {
	// Topics to consume (one per app).
	Topics []string
	// Deadline for each delivery.
	Deadline time.Duration
	// ActionTimeout bounds performing one result's actions (default 30 s).
	ActionTimeout time.Duration
	// MaxAttempts before an event goes to the plugin's dead letters.
	MaxAttempts int
	// MaxInFlight when the manifest sets none.
	MaxInFlight int
	// Backoff is the redelivery delay per attempt (nil: bus default).
	Backoff func(attempt int) time.Duration
	// MaxRetryAfter caps the delay a plugin may ask for with a RETRY
	// result's retry_after (default DefaultMaxRetryAfter). The redelivery
	// waits for the longer of the backoff and retry_after so capped.
	MaxRetryAfter time.Duration
	// AfterFunc runs f once d has passed and returns a function that stops
	// it, as time.AfterFunc does (nil: time.AfterFunc). It holds a retry the
	// plugin asked to delay; tests pass a fake clock. It must not run f
	// before it returns.
	AfterFunc func(d time.Duration, f func()) (stop func() bool)
	// Dedup claims (plugin, dedup key) around each delivery (nil: in-process).
	Dedup dedup.Store
	// DoneTTL is how long a handled event is remembered (default 24 h).
	DoneTTL time.Duration
	// Tracer traces deliveries and their actions (nil: no tracing).
	Tracer trace.Tracer
	// Callbacks carries card responses back to waiting callbacks (nil: none).
	Callbacks callback.Hub
	// DeadLetters indexes dead letters for the admin API (nil: not indexed).
	DeadLetters dlq.Store
	// Shadows records shadow candidates' results (nil: counted, not kept).
	Shadows shadow.Store
}

// Dispatcher delivers events to plugins.
type Dispatcher struct {
	cfg Config
	bus interface {
		bus.Publisher
		bus.Subscriber
	}
	exec    Executor
	logger  *slog.Logger
	metrics *metrics
	tracing bool // a tracer was configured
}

// New returns a dispatcher; it does no I/O.
func New(cfg Config, b interface {
	bus.Publisher
	bus.Subscriber
}, exec Executor, logger *slog.Logger, reg prometheus.Registerer) *Dispatcher {
	if cfg.ActionTimeout <= 0 {
		cfg.ActionTimeout = 30 * time.Second
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if cfg.AfterFunc == nil {
		cfg.AfterFunc = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	tracing := cfg.Tracer != nil
	if !tracing {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if cfg.Dedup == nil {
		cfg.Dedup = dedup.NewMemory()
	}
	if cfg.DoneTTL <= 0 {
		cfg.DoneTTL = dedup.DefaultDoneTTL
	}
	return &Dispatcher{cfg: cfg, bus: b, exec: exec, logger: logger.With("component", "dispatch"), metrics: newMetrics(reg), tracing: tracing}
}

// Subscription is the bus subscription name of a plugin.
func Subscription(plugin string) string { return "plugin-" + plugin }

// DeadLetterTopic is where a plugin's failed events of topic go.
func DeadLetterTopic(topic, plugin string) string { return topic + "-" + Subscription(plugin) + "-DLQ" }

// Replay publishes a dead letter back to its topic for its plugin alone
// and removes it from the index.
func (d *Dispatcher) Replay(ctx context.Context, e dlq.Entry) error {
	return dlq.Replay(ctx, d.bus, d.cfg.DeadLetters, e)
}

// backoff is the bus's redelivery delay after a Nack of attempt.
func (d *Dispatcher) backoff(attempt int) time.Duration {
	return bus.SubscribeOptions{Backoff: d.cfg.Backoff}.BackoffFor(attempt)
}
