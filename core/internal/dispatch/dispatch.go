// Package dispatch streams events from the bus to plugin instances and turns
// their results into actions, acks, retries and dead letters. Each plugin has
// its own bus subscription, so its backlog, retries and position are its own.
package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/callback"
	"github.com/larkway/larkway/core/internal/dedup"
	"github.com/larkway/larkway/core/internal/dlq"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// ErrStreamBroken is returned when the plugin's Handle stream fails: the
// process died or stopped answering. Unfinished deliveries are redelivered.
var ErrStreamBroken = errors.New("plugin stream broken")

// Message properties the dispatcher sets.
const (
	// PropDeadLetterReason says why a message was dead-lettered.
	PropDeadLetterReason = "larkway-dead-letter-reason"
	// PropOnlyPlugin limits a replayed event to the plugin it was replayed for.
	PropOnlyPlugin = "larkway-only-plugin"
)

// DeadLetterIndexSubscription is the subscription copying dead letters into
// the index.
const DeadLetterIndexSubscription = "larkway-dlq-index"

// Plugin is a running plugin instance.
type Plugin interface {
	Manifest() *pluginv1.Manifest
	Service() pluginv1.PluginServiceClient
}

// Executor performs a result's actions.
type Executor interface {
	Execute(ctx context.Context, req action.Request) ([]*pluginv1.RefusedAction, error)
}

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
	seq     atomic.Uint64
	tracing bool // a tracer was configured
}

type metrics struct {
	deliveries *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	inFlight   *prometheus.GaugeVec
	dead       *prometheus.CounterVec
	dedupHits  *prometheus.CounterVec
}

// New returns a dispatcher; it does no I/O.
func New(cfg Config, b interface {
	bus.Publisher
	bus.Subscriber
}, exec Executor, logger *slog.Logger, reg prometheus.Registerer) *Dispatcher {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_dispatch_results_total", Help: "Delivery outcomes by plugin.",
		}, []string{"plugin", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "larkway_dispatch_plugin_duration_seconds", Help: "Time from delivery to result, by plugin.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"plugin"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "larkway_dispatch_in_flight", Help: "Deliveries awaiting a result, by plugin.",
		}, []string{"plugin"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_dispatch_dead_letters_total", Help: "Events dead-lettered, by plugin.",
		}, []string{"plugin"}),
		dedupHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_dispatch_dedup_hits_total", Help: "Redeliveries skipped or deferred by the dedup store, by plugin and state.",
		}, []string{"plugin", "state"}),
	}
	if reg != nil {
		reg.MustRegister(m.deliveries, m.latency, m.inFlight, m.dead, m.dedupHits)
	}
	if cfg.ActionTimeout <= 0 {
		cfg.ActionTimeout = 30 * time.Second
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
	return &Dispatcher{cfg: cfg, bus: b, exec: exec, logger: logger.With("component", "dispatch"), metrics: m, tracing: tracing}
}

// Subscription is the bus subscription name of a plugin.
func Subscription(plugin string) string { return "plugin-" + plugin }

// DeadLetterTopic is where a plugin's failed events of topic go.
func DeadLetterTopic(topic, plugin string) string { return topic + "-" + Subscription(plugin) + "-DLQ" }

// sessionMetrics are one plugin's series, resolved once: WithLabelValues
// hashes its labels on every call, several times per delivery otherwise.
type sessionMetrics struct {
	done, retry, failed, timeout, streamError, actionRetry, unknownResult prometheus.Counter
	dedupDone, dedupBusy                                                  prometheus.Counter
	inFlight                                                              prometheus.Gauge
	latency                                                               prometheus.Observer
}

func (m *metrics) forPlugin(name string) sessionMetrics {
	o := func(outcome string) prometheus.Counter { return m.deliveries.WithLabelValues(name, outcome) }
	return sessionMetrics{
		done: o("done"), retry: o("retry"), failed: o("failed"), timeout: o("timeout"),
		streamError: o("stream_error"), actionRetry: o("action_retry"), unknownResult: o("unknown_result"),
		dedupDone: m.dedupHits.WithLabelValues(name, "done"), dedupBusy: m.dedupHits.WithLabelValues(name, "busy"),
		inFlight: m.inFlight.WithLabelValues(name), latency: m.latency.WithLabelValues(name),
	}
}
