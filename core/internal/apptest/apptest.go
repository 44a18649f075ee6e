// Package apptest runs a whole core, built by app.Build as `larkway serve`
// builds it, for the length of a test.
package apptest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/app"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/testenv"
)

// Start builds a core from cfg and runs it until the test ends, when it
// drains and must stop without error; it returns once the core is ready.
// A nil logger discards the core's logs.
func Start(t testing.TB, cfg *config.Config, logger *slog.Logger) *app.Core {
	t.Helper()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := app.Build(ctx, cfg, app.Deps{Logger: logger, Registry: prometheus.NewRegistry(), Version: "test"})
	if err != nil {
		cancel()
		t.Fatalf("building the core: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("core stopped with %v", err)
		}
	})
	testenv.Eventually(t, 30*time.Second, "the core never became ready", c.Ready)
	return c
}
