package ratelimit

import "github.com/prometheus/client_golang/prometheus"

// metrics are the Scheduler's larkway_action_ratelimit_* metrics (named
// after the executor they were first part of; dashboards use the names).
type metrics struct {
	rateWait   *prometheus.HistogramVec
	queueDepth *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rateWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "larkway_action_ratelimit_wait_seconds",
			Help:    "Time an OpenAPI call waited in the rate-limit queue, by app and API.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"app_id", "api"}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "larkway_action_ratelimit_queue_depth",
			Help: "Calls waiting in this process's rate-limit queue, by app.",
		}, []string{"app_id"}),
	}
	if reg != nil {
		reg.MustRegister(m.rateWait, m.queueDepth)
	}
	return m
}
