package action

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/lark"
)

// metrics are the executor's larkway_action_* metrics; the rate limiter
// registers its own larkway_action_ratelimit_wait_seconds and
// larkway_action_ratelimit_queue_depth.
type metrics struct {
	executions   *prometheus.CounterVec
	throttled    *prometheus.CounterVec
	breakerState *prometheus.GaugeVec
	retries      *prometheus.CounterVec
	failed       *prometheus.CounterVec
	replays      *prometheus.CounterVec
	fallbacks    *prometheus.CounterVec
}

// newMetrics makes the metrics; countFailed reads the failed-action store's
// size at each scrape (it is shared by the replicas, so every replica
// reports the same number).
func newMetrics(reg prometheus.Registerer, countFailed func(context.Context) (int, error)) *metrics {
	m := &metrics{
		executions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_action_executions_total",
			Help: "Actions by plugin, kind and outcome (done, refused, failed, dead_lettered, retry).",
		}, []string{"plugin", "kind", "outcome"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_action_ratelimit_throttled_total",
			Help: "Calls Lark refused for frequency (99991400, 230020), by app, API and scope (app, target).",
		}, []string{"app_id", "api", "scope"}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "larkway_action_breaker_state",
			Help: "Circuit breaker state as last seen by this process, by app and endpoint: 0 closed, 1 half-open, 2 open.",
		}, []string{"app_id", "endpoint"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_action_retries_total",
			Help: "Calls retried, by app, API and reason (rate_limited, server_error, transport_error, token_invalid, breaker_open).",
		}, []string{"app_id", "api", "reason"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_action_failed_total",
			Help: "Actions that exhausted their retries and were kept as failed actions, by app, plugin and kind.",
		}, []string{"app_id", "plugin", "kind"}),
		replays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_action_failed_replays_total",
			Help: "Replays of failed actions by outcome (done, failed).",
		}, []string{"outcome"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_action_fallback_replies_total",
			Help: "Fallback replies sent for dead-lettered deliveries, by plugin and outcome (done, failed).",
		}, []string{"plugin", "outcome"}),
	}
	for _, o := range []string{"done", "failed"} {
		m.replays.WithLabelValues(o)
	}
	// The last count read stands in while the store does not answer, so
	// that a Redis blip neither fails the scrape nor drops the series.
	var last atomic.Int64
	stored := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "larkway_action_failed_stored",
		Help: "Failed actions kept for inspection and replay (`larkway actions list`), shared by the replicas.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if n, err := countFailed(ctx); err == nil {
			last.Store(int64(n))
		}
		return float64(last.Load())
	})
	if reg != nil {
		reg.MustRegister(m.executions, m.throttled, m.breakerState, m.retries, m.failed, m.replays, m.fallbacks, stored)
	}
	return m
}

// Label values the counters can take, for pre-creating their series.
var (
	metricAPIs = []string{lark.APISend, lark.APIReply, lark.APIUpdateCard, lark.APIDelayedCardUpdate,
		lark.APIAddReaction, lark.APIRemoveReaction, lark.APIRaw}
	// retryReasons are the lark.Outcome values of retryable errors, and
	// breaker_open.
	retryReasons      = []string{"rate_limited", "server_error", "transport_error", "token_invalid", "breaker_open"}
	throttleScopes    = []string{"app", "target"}
	metricKinds       = []string{"send", "reply", "update_card", "delayed_card_update", "add_reaction", "remove_reaction", "raw_call"}
	executionOutcomes = []string{"done", "refused", "failed", "dead_lettered", "retry"}
	fallbackOutcomes  = []string{"done", "failed"}
)

// precreate makes every counter series of the configured apps and plugins
// exist at 0 from the start. A counter series appears only at its first
// increment otherwise, and the dashboards' panels on rare events (retries,
// throttling, dead letters) would read "No data" rather than 0; rate() and
// increase() also miss the first increment of a series that did not exist.
func (m *metrics) precreate(apps, plugins []string) {
	for _, app := range apps {
		for _, api := range metricAPIs {
			for _, r := range retryReasons {
				m.retries.WithLabelValues(app, api, r)
			}
			for _, s := range throttleScopes {
				m.throttled.WithLabelValues(app, api, s)
			}
		}
	}
	for _, p := range plugins {
		for _, k := range metricKinds {
			for _, app := range apps {
				m.failed.WithLabelValues(app, p, k)
			}
			for _, o := range executionOutcomes {
				m.executions.WithLabelValues(p, k, o)
			}
		}
		for _, o := range fallbackOutcomes {
			m.fallbacks.WithLabelValues(p, o)
		}
	}
}
