package pulsar

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	pulsarlog "github.com/apache/pulsar-client-go/pulsar/log"
)

// The client's log lines reach slog with their fields at enabled levels, and
// the remembered fields of one entry never leak into a sibling's.
func TestClientLoggerFields(t *testing.T) {
	tests := []struct {
		name string
		log  func(l pulsarlog.Logger)
		want []string // substrings of the output; nil: nothing logged
	}{
		{"fields on an enabled line", func(l pulsarlog.Logger) {
			l.WithField("count", 3).WithFields(pulsarlog.Fields{"max": 7}).Warn("route ", "to DLQ")
		}, []string{"level=WARN", `msg="route to DLQ"`, "count=3", "max=7"}},
		{"formatted", func(l pulsarlog.Logger) { l.WithError(errors.New("boom")).Errorf("closing %s", "x") },
			[]string{"level=ERROR", `msg="closing x"`, "error=boom"}},
		{"sub-logger fields bound", func(l pulsarlog.Logger) {
			l.SubLogger(pulsarlog.Fields{"topic": "t"}).WithField("id", 1).Info("created")
		}, []string{"topic=t", "id=1", "msg=created"}},
		{"debug below the handler's level", func(l pulsarlog.Logger) {
			l.WithField("msgId", "1:2").Debug("Should route to DLQ?")
			l.Debugf("write %d", 5)
		}, nil},
		{"siblings do not share fields", func(l pulsarlog.Logger) {
			base := l.WithField("a", 1)
			base.WithField("b", 2).Info("first")
			base.WithField("c", 3).Info("second")
		}, []string{"a=1 b=2", "msg=second a=1 c=3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			h := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})
			tt.log(newClientLogger(slog.New(h)))
			out := buf.String()
			if tt.want == nil && out != "" {
				t.Fatalf("logged %q, want nothing", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output %q lacks %q", out, w)
				}
			}
			if strings.Contains(out, "c=3") && strings.Contains(strings.SplitN(out, "\n", 2)[0], "c=3") {
				t.Errorf("a sibling's field leaked into the first line: %q", out)
			}
		})
	}
}

// A debug line the handler drops costs the client no formatting: WithField
// on the hot path (the dead-letter router's per-message line) stays cheap.
func TestClientLoggerDisabledDebugAllocs(t *testing.T) {
	l := newClientLogger(slog.New(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelInfo})))
	count, limit := uint32(1), uint32(5)
	allocs := testing.AllocsPerRun(100, func() {
		l.WithField("count", count).WithField("max", limit).WithField("msgId", "1:2:3").Debug("Should route to DLQ?")
	})
	// The boxed values and the three field slices; slog.Logger.With would
	// add a handler clone and its formatted attributes per field.
	t.Logf("%.0f allocs", allocs)
	if allocs > 6 {
		t.Errorf("%.0f allocations per disabled debug line, want at most 6", allocs)
	}
}
