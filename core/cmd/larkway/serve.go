package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/larkway/larkway/core/internal/app"
	"github.com/larkway/larkway/core/internal/config"
)

func newServeCmd(stdout, stderr io.Writer) *cobra.Command {
	var path string
	var check bool
	c := &cobra.Command{
		Use:   "serve --config FILE [--check]",
		Short: "Run the core (or only validate the config)",
		Long: `Runs the core with the config FILE until SIGTERM or SIGINT, then drains.
With --check it only loads and validates the config and prints a summary.`,
		Example: `  larkway serve --config config.example.yaml --check
  larkway serve --config my.yaml`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return serve(c.Context(), path, check, stdout, stderr)
		},
	}
	c.Flags().StringVar(&path, "config", "", "YAML config `FILE` (see config.example.yaml)")
	c.Flags().BoolVar(&check, "check", false, "validate the config and exit")
	_ = c.MarkFlagRequired("config")
	_ = c.MarkFlagFilename("config", "yaml", "yml")
	return c
}

func serve(ctx context.Context, path string, check bool, stdout, stderr io.Writer) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	if check {
		fmt.Fprintf(stdout, "%s: ok (%d apps, %d plugins, bus %s)\n", path, len(cfg.Apps), len(cfg.Plugins), cfg.Bus.Kind)
		if cfg.Admin.Listen != "" {
			fmt.Fprintln(stdout, adminSummary(cfg.Admin))
		}
		return nil
	}
	logger := newLogger(stderr, cfg.LogLevel)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	logger.Info("starting larkway", "version", version, "config", path)
	core, err := app.Build(ctx, cfg, app.Deps{Logger: logger, Registry: reg, Version: version})
	if err != nil {
		return err
	}
	return core.Run(ctx)
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	if w == nil {
		w = os.Stderr
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// adminSummary says how the admin API is exposed and who may call it.
func adminSummary(a config.Admin) string {
	transport := "plain HTTP (loopback)"
	switch {
	case a.TLS.ClientCAFile != "":
		transport = "HTTPS with client certificates"
	case a.TLS.Enabled():
		transport = "HTTPS"
	}
	var who []string
	if a.Token != "" {
		who = append(who, "admin.token (operator)")
	}
	for _, t := range a.Tokens {
		who = append(who, t.Name+" ("+t.Role+")")
	}
	if a.JWT.Enabled() {
		who = append(who, "JWTs from "+a.JWT.Issuer+" for "+a.JWT.Audience)
	}
	dir := a.PluginDir
	if dir == "" {
		dir = "each plugin's own directory"
	}
	return fmt.Sprintf("admin API: %s on %s; callers: %s; swaps from %s", transport, a.Listen, strings.Join(who, ", "), dir)
}
