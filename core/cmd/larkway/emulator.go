package main

import (
	"context"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/larkway/larkway/core/larkemu"
)

// emulatorOptions are emulator's flags.
type emulatorOptions struct {
	listen, level string
	apps          []string // ID=SECRET
	unlimited     bool
	tokenTTL      time.Duration
}

func newEmulatorCmd(stderr io.Writer) *cobra.Command {
	return emulatorCmd(stderr, func(ctx context.Context, opts larkemu.Options, listen string) error {
		return larkemu.New(opts).Run(ctx, listen)
	})
}

// emulatorCmd is the emulator command serving with run, which tests
// replace to see the options the flags give.
func emulatorCmd(stderr io.Writer, run func(context.Context, larkemu.Options, string) error) *cobra.Command {
	var o emulatorOptions
	c := &cobra.Command{
		Use:   "emulator [flags]",
		Short: "Run the Lark OpenAPI emulator",
		Long: `Serves an emulated Lark OpenAPI for development: point an app's base_url at it
and read the bot's messages at http://ADDR/_emu/messages.

Without --app any app id gets a token with any non-empty secret; with --app
only the listed apps do, and a wrong secret gets Lark's error (code 10014).
Lark's rate limits are enforced unless --unlimited.`,
		Example: `  larkway emulator
  larkway emulator --app cli_demo=demo-secret --token-ttl 5m --unlimited`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			opts, err := emulatorConfig(o, stderr)
			if err != nil {
				return err
			}
			opts.Logger.Info("Lark emulator listening", "addr", o.listen, "messages", "http://"+o.listen+"/_emu/messages",
				"apps", len(opts.Apps), "unlimited", opts.Unlimited, "token_ttl", opts.TokenTTL.String())
			return run(c.Context(), opts, o.listen)
		},
	}
	fs := c.Flags()
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8091", "`ADDR` to serve the emulated Lark OpenAPI on")
	fs.StringArrayVar(&o.apps, "app", nil, "an app `ID=SECRET` the token endpoint accepts (repeat for more; none: any app, any non-empty secret)")
	fs.BoolVar(&o.unlimited, "unlimited", false, "turn Lark's rate limits off")
	fs.DurationVar(&o.tokenTTL, "token-ttl", larkemu.DefaultTokenTTL, "validity of a new tenant_access_token")
	fs.StringVar(&o.level, "log-level", "info", "debug, info, warn or error")
	return c
}

// emulatorConfig checks the flags and turns them into the emulator's options.
func emulatorConfig(o emulatorOptions, stderr io.Writer) (larkemu.Options, error) {
	lvl, err := parseLogLevel(o.level)
	if err != nil {
		return larkemu.Options{}, err
	}
	if o.tokenTTL <= 0 {
		return larkemu.Options{}, usagef("--token-ttl %s: want > 0", o.tokenTTL)
	}
	apps := map[string]string{}
	for _, a := range o.apps {
		id, secret, ok := strings.Cut(a, "=")
		if !ok || id == "" || secret == "" {
			return larkemu.Options{}, usagef("--app %q: want ID=SECRET", a)
		}
		if _, dup := apps[id]; dup {
			return larkemu.Options{}, usagef("--app %q: app %s given twice", a, id)
		}
		apps[id] = secret
	}
	return larkemu.Options{
		Logger:    slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl})),
		Apps:      apps,
		Unlimited: o.unlimited,
		TokenTTL:  o.tokenTTL,
	}, nil
}

// logLevels are the levels every command and the config accept.
var logLevels = map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}

// parseLogLevel reads a --log-level flag, refusing anything but the four
// levels (slog would also take "INFO+2" and the like).
func parseLogLevel(s string) (slog.Level, error) {
	if l, ok := logLevels[s]; ok {
		return l, nil
	}
	names := make([]string, 0, len(logLevels))
	for n := range logLevels {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return logLevels[names[i]] < logLevels[names[j]] })
	return 0, usagef("--log-level %q: want %s", s, strings.Join(names, ", "))
}
