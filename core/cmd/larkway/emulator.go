package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/larkway/larkway/core/larkemu"
	"github.com/larkway/larkway/core/larkemu/playground"
)

// emulatorOptions are emulator's flags.
type emulatorOptions struct {
	listen, level string
	apps          []string // ID=SECRET
	unlimited     bool
	tokenTTL      time.Duration
	// pg configures the playground; on when pg.EventURL is set.
	pg playground.Config
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
Lark's rate limits are enforced unless --unlimited.

With --playground-core it also serves the playground at http://ADDR/playground:
a chat window where you type as a Lark user and see the bot's replies and cards;
its events go to that core webhook as the --playground-app app's (signed and
encrypted when --playground-encrypt-key is set).`,
		Example: `  larkway emulator
  larkway emulator --app cli_demo=demo-secret --token-ttl 5m --unlimited
  larkway emulator --playground-core http://127.0.0.1:8090/lark/events --playground-app cli_demo`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			opts, err := emulatorConfig(o, stderr)
			if err != nil {
				return err
			}
			opts.Logger.Info("Lark emulator listening", "addr", o.listen, "messages", "http://"+o.listen+"/_emu/messages",
				"apps", len(opts.Apps), "unlimited", opts.Unlimited, "token_ttl", opts.TokenTTL.String())
			if opts.Wrap != nil {
				opts.Logger.Info("playground", "url", "http://"+o.listen+"/playground", "core", o.pg.EventURL, "app", o.pg.AppID)
			}
			return run(c.Context(), opts, o.listen)
		},
	}
	fs := c.Flags()
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8091", "`ADDR` to serve the emulated Lark OpenAPI on")
	fs.StringArrayVar(&o.apps, "app", nil, "an app `ID=SECRET` the token endpoint accepts (repeat for more; none: any app, any non-empty secret)")
	fs.BoolVar(&o.unlimited, "unlimited", false, "turn Lark's rate limits off")
	fs.DurationVar(&o.tokenTTL, "token-ttl", larkemu.DefaultTokenTTL, "validity of a new tenant_access_token")
	fs.StringVar(&o.level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.pg.EventURL, "playground-core", "", "serve the playground at /playground, posting events to this core event webhook `URL` (e.g. http://127.0.0.1:8090/lark/events)")
	fs.StringVar(&o.pg.AppID, "playground-app", "cli_demo", "the playground's app `ID` (as in the core's apps[].id)")
	fs.StringVar(&o.pg.VerificationToken, "playground-verification-token", "demo-verification-token", "the app's verification `TOKEN`")
	fs.StringVar(&o.pg.EncryptKey, "playground-encrypt-key", "", "the app's encrypt `KEY` (empty: plain events)")
	fs.StringVar(&o.pg.ConsoleURL, "playground-console", "", "the admin console's `URL`, linked from the playground")
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
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	opts := larkemu.Options{Logger: logger, Apps: apps, Unlimited: o.unlimited, TokenTTL: o.tokenTTL}
	if o.pg.EventURL != "" {
		if u, err := url.Parse(o.pg.EventURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return larkemu.Options{}, usagef("--playground-core %q: want the core's event webhook URL, http://HOST:PORT/PATH", o.pg.EventURL)
		}
		if o.pg.AppID == "" {
			return larkemu.Options{}, usagef("--playground-app: required with --playground-core")
		}
		cfg := o.pg
		// Checked here, so New cannot fail later.
		if _, err := playground.New(cfg, larkemu.New(larkemu.Options{}), logger); err != nil {
			return larkemu.Options{}, err
		}
		opts.Wrap = func(e *larkemu.Emulator, h http.Handler) http.Handler {
			pg, _ := playground.New(cfg, e, logger)
			return pg.Handler(h)
		}
	}
	return opts, nil
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
