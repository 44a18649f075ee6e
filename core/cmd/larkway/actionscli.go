package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// newActionsCmd is `larkway actions`: the failed actions (actions whose
// Lark call finally failed), which are not the event dead letters of
// `larkway dlq`.
func newActionsCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &adminOptions{}
	c := &cobra.Command{
		Use:   "actions",
		Short: "Inspect and replay failed actions",
		Long: `Lists, shows, replays and purges failed actions through a core's admin API.

A failed action is an action a plugin returned whose Lark call still failed
after its retries on the event's last delivery (a Lark outage, say). They are
kept in one list for every plugin, newest first (at most 10000), apart from
the events a plugin could not handle ("larkway dlq"). A replay performs the
action again with the idempotency uuid of the first calls, so a send or reply
that in fact reached Lark within the hour is not posted twice; a replayed
action leaves the list.

` + adminLong,
	}
	groupCmd(c, stderr)
	o.register(c)
	var limit int
	var plugin string
	list := adminCmd(o, "list", "Failed actions, newest first", noArgs,
		func(ctx context.Context, c *adminClient, _ []string) error {
			q := url.Values{"limit": {fmt.Sprint(limit)}}
			if plugin != "" {
				q.Set("plugin", plugin)
			}
			var out map[string]any
			if err := c.call(ctx, http.MethodGet, "/v1/actions/failed?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			if o.json {
				return printJSON(stdout, out)
			}
			printFailedTable(stdout, out)
			return nil
		})
	list.Flags().IntVar(&limit, "limit", 100, "at most this many")
	list.Flags().StringVar(&plugin, "plugin", "", "only the plugin `NAME`'s")
	show := adminCmd(o, "show ID", "One failed action, with the action", exactArgs("ID"),
		func(ctx context.Context, c *adminClient, args []string) error {
			var out map[string]any
			if err := c.call(ctx, http.MethodGet, "/v1/actions/failed/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			return printJSON(stdout, out)
		})
	// some is replay's and purge's: failed actions by id, or --all (of
	// --plugin).
	some := func(use, short, method, path string) *cobra.Command {
		var all bool
		var plugin string
		c := adminCmd(o, use+" (ID... | --all [--plugin NAME])", short, func(_ *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return usagef("give either ids or --all")
			}
			if plugin != "" && !all {
				return usagef("--plugin goes with --all")
			}
			return nil
		}, func(ctx context.Context, c *adminClient, args []string) error {
			body := map[string]any{"ids": args}
			if all {
				body = map[string]any{"all": true}
				if plugin != "" {
					body["plugin"] = plugin
				}
			}
			var out map[string]any
			if err := c.call(ctx, method, "/v1/actions/failed"+path, body, &out); err != nil {
				return err
			}
			return printJSON(stdout, out)
		})
		c.Flags().BoolVar(&all, "all", false, "every failed action")
		c.Flags().StringVar(&plugin, "plugin", "", "with --all: only the plugin `NAME`'s")
		return c
	}
	c.AddCommand(list, show,
		some("replay", "Perform them again (same idempotency uuid); done ones leave the list", http.MethodPost, "/replay"),
		some("purge", "Delete them", http.MethodDelete, ""))
	return c
}

func printFailedTable(w io.Writer, out map[string]any) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAT\tAPP\tPLUGIN\tKIND\tEVENT ID\tATTEMPTS\tERROR")
	list, _ := out["failed_actions"].([]any)
	for _, x := range list {
		f, _ := x.(map[string]any)
		fmt.Fprintf(tw, "%v\t%v\t%v\t%v\t%v\t%v\t%v\t%s\n", f["id"], f["at"], f["app_id"], f["plugin"], f["kind"], f["event_id"], f["attempts"], oneLine(fmt.Sprint(f["error"])))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "%v failed action(s) in total\n", out["total"])
}
