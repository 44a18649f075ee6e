package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/larkway/larkway/core/internal/app"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/pluginhost"
	"github.com/larkway/larkway/core/internal/remote"
)

func newServeCmd(stdout, stderr io.Writer) *cobra.Command {
	var path string
	var check bool
	c := &cobra.Command{
		Use:   "serve --config FILE [--check]",
		Short: "Run the core (or only validate the config)",
		Long: `Runs the core with the config FILE until SIGTERM or SIGINT, then drains.
With --check it only loads and validates the config, checks that every
enabled plugin's executable and pinned files exist and match their sha256,
and prints a summary.`,
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
		if err := checkPluginFiles(cfg.Plugins); err != nil {
			return err
		}
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
	if cfg.Bus.Kind == "memory" && os.Getenv("GOMEMLIMIT") == "" {
		// The budget is the whole process's memory: the collector keeps
		// the process under it, and the bus refuses events before the
		// held ones leave the collector too little room (bus/memory).
		limit := int64(cfg.Bus.Memory.BudgetMB) << 20
		debug.SetMemoryLimit(limit)
		logger.Info("memory bus: Go memory limit set to bus.memory.budget_mb", "limit_mb", limit>>20)
	}
	core, err := app.Build(ctx, cfg, app.Deps{Logger: logger, Registry: reg, Version: version})
	if err != nil {
		return err
	}
	return core.Run(ctx)
}

// checkPluginFiles does what a launch does before it starts a plugin —
// find the executable ($PATH when it has no slash), hash it and its pinned
// files; for a remote plugin, load its TLS files — so --check catches a
// missing or changed file before a deploy. A
// disabled plugin is not launched, so it is not checked. All problems are
// reported, each naming its plugins[i] key.
func checkPluginFiles(plugins []config.Plugin) error {
	var errs []error
	for i, p := range plugins {
		if p.Disabled {
			continue
		}
		key := fmt.Sprintf("plugins[%d]", i)
		if r := p.Remote; r != nil {
			// Nothing to hash: the TLS files the core dials with must load.
			if _, err := remote.ClientTLS(p.Name, remote.TLSFiles{CAFile: r.TLS.CAFile, CertFile: r.TLS.CertFile, KeyFile: r.TLS.KeyFile}); err != nil {
				errs = append(errs, fmt.Errorf("%s.remote.tls: %w", key, err))
			}
			continue
		}
		path := p.Path
		if !strings.ContainsRune(path, '/') {
			found, err := exec.LookPath(path)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.path: %w", key, err))
				continue
			}
			path = found
		}
		if err := checkFile(path, p.SHA256); err != nil {
			errs = append(errs, fmt.Errorf("%s.path: %w", key, err))
		}
		for j, f := range p.Files {
			if err := checkFile(f.Path, f.SHA256); err != nil {
				errs = append(errs, fmt.Errorf("%s.files[%d]: %w", key, j, err))
			}
		}
	}
	return errors.Join(errs...)
}

// checkFile hashes path with the launcher's own function and compares it
// with want (hex; "" only requires the file to be readable).
func checkFile(path, want string) error {
	got, err := pluginhost.FileSHA256(path)
	if err != nil {
		return err
	}
	if want != "" && !strings.EqualFold(got, want) {
		return fmt.Errorf("%w: file %s: expected sha256 %s, actual %s", pluginhost.ErrChecksum, path, strings.ToLower(want), got)
	}
	return nil
}

// newLogger logs JSON at level, which config.Validate has checked is one
// of logLevels.
func newLogger(w io.Writer, level string) *slog.Logger {
	l := logLevels[level]
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
