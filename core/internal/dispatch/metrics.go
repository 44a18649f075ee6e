package dispatch

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/dispatch/stream"
)

type metrics struct {
	deliveries *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	inFlight   *prometheus.GaugeVec
	dead       *prometheus.CounterVec
	dedupHits  *prometheus.CounterVec
	// Per version: a canary is judged against its stable version.
	versionResults *prometheus.CounterVec
	versionLatency *prometheus.HistogramVec
	versionDead    *prometheus.CounterVec
	shadowActions  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
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
		versionResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_dispatch_version_results_total", Help: "Delivery outcomes by plugin, version and role (stable, canary, shadow).",
		}, []string{"plugin", "version", "role", "outcome"}),
		versionLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "larkway_dispatch_version_duration_seconds", Help: "Time from delivery to result, by plugin, version and role.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"plugin", "version", "role"}),
		versionDead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_dispatch_version_dead_letters_total", Help: "Events dead-lettered, by plugin, version and role.",
		}, []string{"plugin", "version", "role"}),
		shadowActions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_shadow_actions_total", Help: "Actions a shadow candidate returned, recorded instead of performed, by plugin and verdict (allowed, refused).",
		}, []string{"plugin", "verdict"}),
	}
	if reg != nil {
		reg.MustRegister(m.deliveries, m.latency, m.inFlight, m.dead, m.dedupHits, m.versionResults, m.versionLatency, m.versionDead, m.shadowActions)
	}
	return m
}

// pluginMetrics are one plugin's series, resolved once: WithLabelValues
// hashes its labels on every call, several times per delivery otherwise.
type pluginMetrics struct {
	outcomes             [numOutcomes]prometheus.Counter
	dedupDone, dedupBusy prometheus.Counter
	dead                 prometheus.Counter
	stream               stream.Metrics
}

// forPlugin resolves name's series, which also starts them at zero.
func (m *metrics) forPlugin(name string) *pluginMetrics {
	// A shadow's series exist at 0 before any shadow runs.
	m.shadowActions.WithLabelValues(name, "allowed")
	m.shadowActions.WithLabelValues(name, "refused")
	pm := &pluginMetrics{
		dedupDone: m.dedupHits.WithLabelValues(name, "done"), dedupBusy: m.dedupHits.WithLabelValues(name, "busy"),
		dead: m.dead.WithLabelValues(name),
	}
	for o := range numOutcomes {
		pm.outcomes[o] = m.deliveries.WithLabelValues(name, Outcome(o).String())
	}
	pm.stream = stream.Metrics{InFlight: m.inFlight.WithLabelValues(name), Latency: m.latency.WithLabelValues(name),
		UnknownResults: pm.outcomes[OutcomeUnknownResult]}
	return pm
}

// versionMetrics are one session's per-version series.
type versionMetrics struct {
	outcomes [numOutcomes]prometheus.Counter
	latency  prometheus.Observer
	dead     prometheus.Counter
}

func (m *metrics) forVersion(plugin, version, role string) *versionMetrics {
	vm := &versionMetrics{latency: m.versionLatency.WithLabelValues(plugin, version, role),
		dead: m.versionDead.WithLabelValues(plugin, version, role)}
	for o := range numOutcomes {
		vm.outcomes[o] = m.versionResults.WithLabelValues(plugin, version, role, Outcome(o).String())
	}
	return vm
}
