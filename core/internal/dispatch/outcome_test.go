package dispatch

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/larkway/larkway/core/internal/testenv"
)

// The outcome label's values are a contract with dashboards and alerts:
// every Outcome has a name, and the names are exactly those
// docs/operations.md lists for larkway_dispatch_results_total.
func TestOutcomeNamesAreDocumented(t *testing.T) {
	f, err := os.Open(filepath.Join(testenv.ModuleRoot(t), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var documented []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "| `larkway_dispatch_results_total` |") {
			cols := strings.Split(line, "|")
			for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(cols[len(cols)-2], -1) {
				documented = append(documented, m[1])
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for o := range numOutcomes {
		name := Outcome(o).String()
		if strings.HasPrefix(name, "Outcome(") {
			t.Errorf("outcome %d has no name", o)
		}
		names = append(names, name)
	}
	slices.Sort(documented)
	slices.Sort(names)
	if !slices.Equal(documented, names) {
		t.Fatalf("docs/operations.md lists outcomes %v, the code has %v", documented, names)
	}
}

// The outcome is both the metric's label and the delivery span's
// larkway.outcome attribute.
func TestOutcomeLabelsAndSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	h := startWith(t, manifest(), 5*time.Second, func(c *Config) { c.Tracer = tp.Tracer("test") })
	dl := h.deadLetters(t)
	h.publish(t, "oc_1", "hello")
	h.publish(t, "oc_2", "fail")
	receive(t, dl)
	testenv.Eventually(t, 10*time.Second, "no result counted", func() bool {
		return testenv.MetricValue(t, h.reg, "larkway_dispatch_results_total", "plugin", "fake", "outcome", OutcomeDone.String()) == 1
	})
	if got := testenv.MetricValue(t, h.reg, "larkway_dispatch_results_total", "plugin", "fake", "outcome", OutcomeFailed.String()); got != 1 {
		t.Fatalf("failed counted %v times, want 1", got)
	}
	var outcomes []string
	testenv.Eventually(t, 10*time.Second, "delivery spans not ended", func() bool {
		outcomes = outcomes[:0]
		for _, s := range rec.Ended() {
			if s.Name() != "dispatch.deliver" {
				continue
			}
			for _, a := range s.Attributes() {
				if a.Key == "larkway.outcome" {
					outcomes = append(outcomes, a.Value.AsString())
				}
			}
		}
		return len(outcomes) == 2
	})
	slices.Sort(outcomes)
	if want := []string{OutcomeDone.String(), OutcomeFailed.String()}; !slices.Equal(outcomes, want) {
		t.Fatalf("span outcomes %v, want %v", outcomes, want)
	}
}
