package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/larkway/larkway/core/internal/app"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/telemetry"
	"github.com/larkway/larkway/core/internal/testenv"
)

// One trace spans webhook → bus (Pulsar) → plugin → Lark call: the core's
// spans share a trace id, and the plugin's handler continues the same trace.
func TestOneTraceFromWebhookToLark(t *testing.T) {
	t.Parallel()
	appID := uniqueApp(t, "trace")
	emu, emuAddr := emulator(t, appID)
	counter := testenv.BuildPlugin(t, "./core/internal/app/testdata/counter", t.TempDir())
	cfg, err := config.Parse(strings.NewReader(clusterYAML(t, appID, emuAddr, appID+":", "r0",
		fmt.Sprintf("  - {name: counter, path: %s}", counter))))
	if err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	a, err := app.Build(context.Background(), cfg, app.Deps{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		Registry: prometheus.NewRegistry(), Version: "test", TracerProvider: telemetry.NewSDKProvider(rec, 1, "test")})
	if err != nil {
		t.Fatalf("building the core: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	addr := a.Addr()
	testenv.Eventually(t, 30*time.Second, "not serving", func() bool { return a.Ready() && a.PluginsServing() })
	c := &runningCore{addr: addr}
	if code, err := c.post(messageEvent(appID, "ev_trace", "om_trace", "oc_trace", "/trace")); err != nil || code != 200 {
		t.Fatalf("post %d %v", code, err)
	}
	testenv.Eventually(t, 30*time.Second, "no reply", func() bool { return len(emu.Messages()) == 1 })
	var ended []sdktrace.ReadOnlySpan
	testenv.Eventually(t, 10*time.Second, "spans not ended", func() bool {
		ended = rec.Ended()
		return len(ended) >= 3
	})
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range ended {
		byName[s.Name()] = s
	}
	for _, name := range []string{"ingest.webhook", "dispatch.deliver", "action.execute"} {
		if byName[name] == nil {
			t.Fatalf("no %s span among %d", name, len(ended))
		}
	}
	traceID := byName["ingest.webhook"].SpanContext().TraceID()
	for name, s := range byName {
		if s.SpanContext().TraceID() != traceID {
			t.Errorf("%s is in trace %s, not %s", name, s.SpanContext().TraceID(), traceID)
		}
	}
	if p := byName["dispatch.deliver"].Parent(); p.SpanID() != byName["ingest.webhook"].SpanContext().SpanID() {
		t.Errorf("dispatch span's parent is %s, not the webhook span", p.SpanID())
	}
	if got := emu.Messages()[0].Content; !strings.Contains(got, "trace: "+traceID.String()) {
		t.Errorf("the plugin continued another trace: %s (want %s)", got, traceID)
	}
}
