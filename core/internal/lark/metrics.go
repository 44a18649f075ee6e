package lark

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the lark_* Prometheus metrics, shared by every app's Client.
// A nil *Metrics records nothing.
type Metrics struct {
	tokenFetches *prometheus.CounterVec
	calls        *prometheus.CounterVec
	duration     *prometheus.HistogramVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered). Call it once per registry and pass the result to every
// Client.
//
//	larkway_lark_token_fetches_total{app_id,outcome}      calls to the token endpoint (ok, error)
//	larkway_lark_calls_total{app_id,api,outcome}          OpenAPI calls by outcome (see Outcome)
//	larkway_lark_call_duration_seconds{app_id,api}        OpenAPI call latency, token retry included
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		tokenFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_lark_token_fetches_total",
			Help: "Calls to the tenant_access_token endpoint, by app and outcome (ok, error).",
		}, []string{"app_id", "outcome"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_lark_calls_total",
			Help: "OpenAPI calls by app, API and outcome (ok, business_error, rate_limited, server_error, token_invalid, transport_error, invalid_request, canceled).",
		}, []string{"app_id", "api", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "larkway_lark_call_duration_seconds",
			Help:    "OpenAPI call latency by app and API, including a token refetch.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"app_id", "api"}),
	}
	if reg != nil {
		reg.MustRegister(m.tokenFetches, m.calls, m.duration)
	}
	return m
}

func (m *Metrics) observeTokenFetch(appID string, err error) {
	if m == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.tokenFetches.WithLabelValues(appID, outcome).Inc()
}

func (m *Metrics) observeCall(appID, api string, err error, d time.Duration) {
	if m == nil {
		return
	}
	m.calls.WithLabelValues(appID, api, Outcome(err)).Inc()
	m.duration.WithLabelValues(appID, api).Observe(d.Seconds())
}

// Outcome names the class of a call's error for metrics and logs: ok,
// invalid_request, canceled, transport_error, rate_limited, token_invalid,
// server_error or business_error.
func Outcome(err error) string {
	if err == nil {
		return "ok"
	}
	if errors.Is(err, ErrInvalidRequest) || errors.Is(err, ErrClosed) {
		return "invalid_request"
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return "canceled"
	}
	if errors.Is(err, ErrTransport) {
		return "transport_error"
	}
	var ae *APIError
	if errors.As(err, &ae) {
		switch {
		case ae.RateLimited():
			return "rate_limited"
		case ae.TokenInvalid():
			return "token_invalid"
		case ae.ServerError():
			return "server_error"
		}
	}
	return "business_error"
}
