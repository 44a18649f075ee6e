package backlog

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/testenv"
)

// fakeBacklog has a backlog per "topic subscription"; others fail.
type fakeBacklog map[string]int64

func (f fakeBacklog) Backlog(_ context.Context, topic, subscription string) (int64, error) {
	n, ok := f[topic+" "+subscription]
	if !ok {
		return 0, errors.New("no stats")
	}
	return n, nil
}

// Each plugin's backlog is read per topic from its own subscription;
// figures that cannot be read are counted, not reported as zero.
func TestCollector(t *testing.T) {
	b := fakeBacklog{"t1 " + dispatch.Subscription("echo"): 7, "t2 " + dispatch.Subscription("echo"): 0, "t1 " + dispatch.Subscription("slow"): 1250}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(b, []string{"t1", "t2"}, func() []string { return []string{"echo", "slow"} }))
	tests := []struct {
		plugin, topic string
		want          float64
	}{
		{"echo", "t1", 7},
		{"echo", "t2", 0},
		{"slow", "t1", 1250},
		{"slow", "t2", -1}, // unreadable: no series
	}
	for _, tt := range tests {
		if got := testenv.MetricValue(t, reg, "larkway_dispatch_backlog_messages", "plugin", tt.plugin, "topic", tt.topic); got != tt.want {
			t.Errorf("backlog of %s on %s = %v, want %v", tt.plugin, tt.topic, got, tt.want)
		}
	}
	if got := testenv.MetricValue(t, reg, "larkway_dispatch_backlog_scrape_errors"); got != 1 {
		t.Errorf("scrape errors = %v, want 1", got)
	}
}
