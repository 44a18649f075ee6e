// Package backlog exports each plugin's subscription backlog as a metric,
// read from the bus at scrape time.
package backlog

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/dispatch"
)

// Collector exports each plugin's backlog per topic at scrape time, read
// from the bus (Pulsar's topic stats), so autoscaling and alerts see the
// queue rather than guess.
type Collector struct {
	b       bus.Backlogger
	topics  []string
	plugins func() []string
	desc    *prometheus.Desc
	failed  *prometheus.Desc
}

// NewCollector reports backlog for plugins() on topics.
func NewCollector(b bus.Backlogger, topics []string, plugins func() []string) *Collector {
	return &Collector{b: b, topics: topics, plugins: plugins,
		desc: prometheus.NewDesc("larkway_dispatch_backlog_messages", "Messages a plugin's subscription has not yet acknowledged, per topic.",
			[]string{"plugin", "topic"}, nil),
		failed: prometheus.NewDesc("larkway_dispatch_backlog_scrape_errors", "Backlog figures that could not be read in this scrape.", nil, nil)}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc; ch <- c.failed }

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	failed := 0
	for _, p := range c.plugins() {
		for _, t := range c.topics {
			n, err := c.b.Backlog(ctx, t, dispatch.Subscription(p))
			if err != nil {
				failed++
				continue
			}
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), p, t)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.failed, prometheus.GaugeValue, float64(failed))
}
