package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// releaseFlags are a canary's or shadow's flags.
type releaseFlags struct {
	file          string
	address       string
	sum           sha256Hex
	chats         string
	chat          []string
	promoteAfter  string
	maxErrorRate  float64
	minDeliveries int64
}

// body is the admin API's request.
func (f *releaseFlags) body() (map[string]any, error) {
	b := map[string]any{"path": f.file, "sha256": string(f.sum)}
	if f.address != "" {
		b = map[string]any{"address": f.address}
	}
	if f.chats != "" {
		p, err := strconv.ParseFloat(strings.TrimSuffix(f.chats, "%"), 64)
		if err != nil || p <= 0 || p > 100 {
			return nil, usagef("--chats %q: want a percentage of chats, 0 < PERCENT ≤ 100", f.chats)
		}
		b["percent"] = p
	}
	if len(f.chat) > 0 {
		b["chats"] = f.chat
	}
	if f.promoteAfter != "" {
		b["promote_after"] = f.promoteAfter
	}
	if f.maxErrorRate != 0 {
		b["max_error_rate"] = f.maxErrorRate
	}
	if f.minDeliveries != 0 {
		b["min_deliveries"] = f.minDeliveries
	}
	return b, nil
}

func (f *releaseFlags) register(c *cobra.Command, canary bool) {
	fs := c.Flags()
	fs.StringVar(&f.file, "file", "", "the candidate plugin file's `PATH` (on the replicas)")
	fs.Var(&f.sum, "sha256", "the candidate file's SHA-256, 64 hex digits")
	fs.StringVar(&f.address, "address", "", "a remote plugin's candidate endpoint `ADDR` (host:port, dns:///host:port or a list), instead of --file")
	fs.StringVar(&f.chats, "chats", "", "`PERCENT` of chats, chosen by a hash of the chat id (the same on every replica; a chat in 5 % stays in 10 %)")
	fs.StringArrayVar(&f.chat, "chat", nil, "a chat `ID` to include (repeat for more)")
	// A launched plugin's candidate is a pinned file, a remote one's an
	// endpoint (dialled with the configured TLS settings), as for swap.
	c.MarkFlagsRequiredTogether("file", "sha256")
	c.MarkFlagsOneRequired("file", "address")
	c.MarkFlagsMutuallyExclusive("file", "address")
	_ = c.MarkFlagFilename("file")
	if canary {
		fs.StringVar(&f.promoteAfter, "promote-after", "", "promote after `N|DURATION`: N deliveries (summed over replicas) or a duration such as 30m, within the error budget (default: promote by hand)")
		fs.Float64Var(&f.maxErrorRate, "max-error-rate", 0, "error budget `R` (0..1): errors / deliveries above it roll the canary back (default 0.05)")
		fs.Int64Var(&f.minDeliveries, "min-deliveries", 0, "deliveries before the error rate can roll back (default 20)")
	}
}

// newReleaseCmd is `plugin canary` or `plugin shadow` (mode) with its
// subcommands.
func newReleaseCmd(o *adminOptions, stdout io.Writer, mode string) *cobra.Command {
	f := &releaseFlags{}
	name := exactArgs("NAME")
	start := func(ctx context.Context, c *adminClient, args []string) error {
		if mode == "canary" && f.chats == "" && len(f.chat) == 0 {
			return usagef("a canary needs --chats PERCENT or --chat ID")
		}
		body, err := f.body()
		if err != nil {
			return err
		}
		var out map[string]any
		if err := c.call(ctx, http.MethodPost, "/v1/plugins/"+url.PathEscape(args[0])+"/"+mode, body, &out); err != nil {
			return err
		}
		if o.json {
			return printJSON(stdout, out)
		}
		fmt.Fprintf(stdout, "%s %s: started\n", mode, args[0])
		return nil
	}
	var cmd *cobra.Command
	if mode == "canary" {
		cmd = adminCmd(o, "canary NAME (--file PATH --sha256 HEX | --address ADDR) (--chats PERCENT | --chat ID...) [--promote-after N|DURATION] [--max-error-rate R]",
			"Run a new version for a slice of chats; promote or roll back on its numbers", name, start)
		cmd.Long = `Starts the file PATH beside plugin NAME's stable version on every replica; the
chats --chats PERCENT selects (by a hash of the chat id, the same on every
replica) and the chats --chat names go to it, every other chat stays on the
stable version. Each chat is on one version at a time, so its order holds.
Running it again with a larger --chats grows the slice.

Its deliveries, errors, retries, dead letters and latency are counted per
version. Once it served --promote-after deliveries (or ran that long) with
an error rate within --max-error-rate, it is promoted on every replica; once
its error rate breaches the budget (after --min-deliveries), or it crashes,
it is rolled back: its chats return to the stable version, and deliveries it
had not finished are redelivered there.

A remote plugin (plugins[].remote) gets --address ADDR instead: the
candidate is its deployment at that endpoint, dialled with the configured
TLS settings (its certificate must name the plugin). Promotion makes ADDR
the plugin's endpoint; an abort or rollback leaves the stable endpoint.`
		cmd.Example = "  larkway plugin canary echo --file bin/plugins/echo2 --sha256 $(sha256sum bin/plugins/echo2 | cut -d' ' -f1) --chats 5 --promote-after 1000 --max-error-rate 0.01\n" +
			"  larkway plugin canary triage --address dns:///triage-v2.plugins.svc.cluster.local:7443 --chats 10"
	} else {
		cmd = adminCmd(o, "shadow NAME (--file PATH --sha256 HEX | --address ADDR) [--chats PERCENT | --chat ID...]",
			"Give a new version a copy of live traffic; record, never perform, its actions", name, start)
		cmd.Long = `Starts the file PATH beside plugin NAME's stable version on every replica. After
the stable version handled a delivery of a selected chat (default: every
chat), the shadow gets a copy; its outcome settles nothing and its actions
are checked against its manifest and recorded, never performed. It keeps
state in a namespace of its own. 'plugin shadow report NAME' pairs each
event's stable and shadow actions and marks the differences.

A remote plugin (plugins[].remote) gets --address ADDR instead: the shadow
is its deployment at that endpoint, dialled with the configured TLS
settings (its certificate must name the plugin). The state server knows
plugins by certificate, so such a shadow's state calls reach the stable
version's keys: shadow a stateful remote plugin only with a candidate that
does not write state.`
	}
	f.register(cmd, mode == "canary")
	// It runs and holds commands: the usage shows both.
	cmd.SetUsageTemplate(strings.Replace(usageTemplate(true), "{{.CommandPath}} COMMAND{{else}}",
		"{{.UseLine}}\n  {{.CommandPath}} COMMAND NAME{{else}}", 1))
	end := func(sub, done string) func(context.Context, *adminClient, []string) error {
		return func(ctx context.Context, c *adminClient, args []string) error {
			var out map[string]any
			if err := c.call(ctx, http.MethodPost, "/v1/plugins/"+url.PathEscape(args[0])+"/"+sub, nil, &out); err != nil {
				return err
			}
			if o.json {
				return printJSON(stdout, out)
			}
			fmt.Fprintf(stdout, "%s %s: %s\n", mode, args[0], done)
			return nil
		}
	}
	status := adminCmd(o, "status NAME", "The release across replicas: totals, error rate, verdict", name,
		func(ctx context.Context, c *adminClient, args []string) error {
			var v releaseView
			if err := c.call(ctx, http.MethodGet, "/v1/plugins/"+url.PathEscape(args[0])+"/release", nil, &v); err != nil {
				return err
			}
			if o.json {
				return printJSON(stdout, v)
			}
			printRelease(stdout, v)
			return nil
		})
	if mode == "canary" {
		cmd.AddCommand(status,
			adminCmd(o, "promote NAME", "Make the canary the stable version on every replica", name, end("promote", "promoted")),
			adminCmd(o, "abort NAME", "Roll the canary back: every chat returns to the stable version", name, end("abort", "aborted")))
		return cmd
	}
	var limit int
	report := adminCmd(o, "report NAME", "Per event: the stable version's and the shadow's actions, and their differences (JSON)", name,
		func(ctx context.Context, c *adminClient, args []string) error {
			var out map[string]any
			if err := c.call(ctx, http.MethodGet, fmt.Sprintf("/v1/plugins/%s/shadow/report?limit=%d", url.PathEscape(args[0]), limit), nil, &out); err != nil {
				return err
			}
			return printJSON(stdout, out)
		})
	report.Flags().IntVar(&limit, "limit", 100, "at most this many events, newest first")
	cmd.AddCommand(status, report,
		adminCmd(o, "stop NAME", "Stop the shadow on every replica", name, end("abort", "stopped")))
	return cmd
}

// releaseView is the part of GET /v1/plugins/{name}/release printed.
type releaseView struct {
	Plugin  string `json:"plugin"`
	Release *struct {
		Mode                   string      `json:"mode"`
		Percent                float64     `json:"percent"`
		Chats                  []string    `json:"chats"`
		Spec                   releaseSpec `json:"spec"`
		PromoteAfterDeliveries int64       `json:"promote_after_deliveries"`
		PromoteAfterDuration   string      `json:"promote_after_duration"`
		MaxErrorRate           float64     `json:"max_error_rate"`
	} `json:"release"`
	Replicas map[string]struct {
		Version string       `json:"version"`
		State   string       `json:"state"`
		Stats   versionStats `json:"stats"`
	} `json:"replicas"`
	Total       versionStats `json:"total"`
	StableTotal versionStats `json:"stable_total"`
	ErrorRate   float64      `json:"error_rate"`
	Verdict     string       `json:"verdict"`
	Reason      string       `json:"reason"`
	Last        *struct {
		Mode   string      `json:"mode"`
		Result string      `json:"result"`
		Reason string      `json:"reason"`
		Spec   releaseSpec `json:"spec"`
	} `json:"last"`
}

// releaseSpec is a candidate: a file, or a remote plugin's endpoint.
type releaseSpec struct {
	Path   string `json:"path"`
	Remote *struct {
		Address string `json:"address"`
	} `json:"remote"`
}

func (s releaseSpec) String() string {
	if s.Remote != nil {
		return s.Remote.Address
	}
	return s.Path
}

type versionStats struct {
	Deliveries  int64 `json:"deliveries"`
	Errors      int64 `json:"errors"`
	Retries     int64 `json:"retries"`
	DeadLetters int64 `json:"dead_letters"`
	LatencyMS   int64 `json:"latency_ms"`
}

func printRelease(w io.Writer, v releaseView) {
	if v.Release == nil {
		fmt.Fprintf(w, "%s: no canary or shadow running\n", v.Plugin)
	} else {
		r := v.Release
		fmt.Fprintf(w, "%s: %s of %s on %g%% of chats", v.Plugin, r.Mode, r.Spec, r.Percent)
		if len(r.Chats) > 0 {
			fmt.Fprintf(w, " and %d named chat(s)", len(r.Chats))
		}
		fmt.Fprintln(w)
		if r.Mode == "canary" {
			promote := "by hand"
			switch {
			case r.PromoteAfterDeliveries > 0:
				promote = fmt.Sprintf("after %d deliveries", r.PromoteAfterDeliveries)
			case r.PromoteAfterDuration != "":
				promote = "after " + r.PromoteAfterDuration
			}
			fmt.Fprintf(w, "promotion %s; error budget %.3f; now %.3f over %d deliveries (stable: %d deliveries, %d errors)\n",
				promote, r.MaxErrorRate, v.ErrorRate, v.Total.Deliveries, v.StableTotal.Deliveries, v.StableTotal.Errors)
			if v.Verdict != "" {
				fmt.Fprintf(w, "verdict: %s (%s)\n", v.Verdict, v.Reason)
			}
		}
		ids := make([]string, 0, len(v.Replicas))
		for id := range v.Replicas {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REPLICA\tVERSION\tSTATE\tDELIVERIES\tERRORS\tRETRIES\tDEAD LETTERS")
		for _, id := range ids {
			r := v.Replicas[id]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\n", id, r.Version, r.State, r.Stats.Deliveries, r.Stats.Errors, r.Stats.Retries, r.Stats.DeadLetters)
		}
		_ = tw.Flush()
	}
	if l := v.Last; l != nil {
		fmt.Fprintf(w, "last %s (%s): %s", l.Mode, l.Spec, l.Result)
		if l.Reason != "" {
			fmt.Fprintf(w, ", %s", l.Reason)
		}
		fmt.Fprintln(w)
	}
}

// parseReplayTime reads an RFC 3339 time, "now", or a duration before now
// ("24h" or "-24h").
func parseReplayTime(flag, s string, now time.Time) (time.Time, error) {
	if s == "now" {
		return now, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(strings.TrimPrefix(s, "-")); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, usagef("--%s %q: want an RFC 3339 time, now, or a duration before now such as 24h", flag, s)
}

func newReplayCmd(stdout io.Writer) *cobra.Command {
	o := &adminOptions{}
	var plugin, from, to, chats string
	var chat []string
	var toShadow bool
	c := adminCmd(o, "replay --plugin NAME --to-shadow --from T --to T [--chats PERCENT | --chat ID...]",
		"Feed stored events into a plugin's shadow, to judge it on real history", noArgs,
		func(ctx context.Context, c *adminClient, _ []string) error {
			if !toShadow {
				return usagef("history is replayed into a shadow only: give --to-shadow")
			}
			now := time.Now()
			f, err := parseReplayTime("from", from, now)
			if err != nil {
				return err
			}
			t, err := parseReplayTime("to", to, now)
			if err != nil {
				return err
			}
			body := map[string]any{"to_shadow": true, "from": f.Format(time.RFC3339Nano), "to": t.Format(time.RFC3339Nano)}
			rf := releaseFlags{chats: chats, chat: chat}
			sel, err := rf.body()
			if err != nil {
				return err
			}
			for _, k := range []string{"percent", "chats"} {
				if v, ok := sel[k]; ok {
					body[k] = v
				}
			}
			var out map[string]any
			if err := c.call(ctx, http.MethodPost, "/v1/plugins/"+url.PathEscape(plugin)+"/replay", body, &out); err != nil {
				return err
			}
			if o.json {
				return printJSON(stdout, out)
			}
			fmt.Fprintf(stdout, "replayed %v of %v stored events into %s's shadow; %v differ (see larkway plugin shadow report %s)\n",
				out["replayed"], out["events"], plugin, out["differ"], plugin)
			return nil
		})
	c.Long = `Reads the events stored between --from and --to (the embedded bus's log, or
what Pulsar's retention keeps, through a reader) and hands those of the
selected chats (default: all) to plugin NAME's running shadow and to a
baseline instance of its stable version started for the replay. Neither
version's actions are performed, both keep state in namespaces of their own;
each event's pair lands in 'plugin shadow report' with source "replay".

` + adminLong
	c.Example = "  larkway plugin shadow echo --file bin/plugins/echo2 --sha256 $HEX\n  larkway replay --plugin echo --to-shadow --from 24h --to now"
	o.register(c)
	fs := c.Flags()
	fs.StringVar(&plugin, "plugin", "", "the plugin `NAME` whose shadow gets the events")
	fs.BoolVar(&toShadow, "to-shadow", false, "replay into the plugin's shadow (the only target)")
	fs.StringVar(&from, "from", "", "start `T`: RFC 3339, now, or a duration before now (24h)")
	fs.StringVar(&to, "to", "now", "end `T` (exclusive)")
	fs.StringVar(&chats, "chats", "", "`PERCENT` of chats, by the same hash as canaries")
	fs.StringArrayVar(&chat, "chat", nil, "a chat `ID` to replay (repeat for more)")
	for _, n := range []string{"plugin", "from", "to-shadow"} {
		_ = c.MarkFlagRequired(n)
	}
	return c
}
