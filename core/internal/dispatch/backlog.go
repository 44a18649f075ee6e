package dispatch

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Backlogger reports a subscription's unacknowledged messages.
type Backlogger interface {
	Backlog(ctx context.Context, topic, subscription string) (int64, error)
}

// BacklogCollector exports each plugin's backlog per topic at scrape time,
// read from the bus (Pulsar's topic stats), so autoscaling and alerts see
// the queue rather than guess.
type BacklogCollector struct {
	b       Backlogger
	topics  []string
	plugins func() []string
	desc    *prometheus.Desc
	failed  *prometheus.Desc
}

// NewBacklogCollector reports backlog for plugins() on topics.
func NewBacklogCollector(b Backlogger, topics []string, plugins func() []string) *BacklogCollector {
	return &BacklogCollector{b: b, topics: topics, plugins: plugins,
		desc: prometheus.NewDesc("larkway_dispatch_backlog_messages", "Messages a plugin's subscription has not yet acknowledged, per topic.",
			[]string{"plugin", "topic"}, nil),
		failed: prometheus.NewDesc("larkway_dispatch_backlog_scrape_errors", "Backlog figures that could not be read in this scrape.", nil, nil)}
}

// Describe implements prometheus.Collector.
func (c *BacklogCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc; ch <- c.failed }

// Collect implements prometheus.Collector.
func (c *BacklogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	failed := 0
	for _, p := range c.plugins() {
		for _, t := range c.topics {
			n, err := c.b.Backlog(ctx, t, Subscription(p))
			if err != nil {
				failed++
				continue
			}
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), p, t)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.failed, prometheus.GaugeValue, float64(failed))
}
