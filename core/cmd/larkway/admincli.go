package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/larkway/larkway/core/internal/config"
)

// adminClient talks to a core's admin API.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

// adminOptions are the flags of every plugin and dlq command but plugin
// pin: where the admin API is, how to reach it, how to print its answers.
type adminOptions struct {
	base, token string
	json        bool
	tls         adminTLS
}

// register adds the admin flags to c as persistent flags, with their
// defaults from the environment. The token's is read only after parsing,
// so that help never prints it.
func (o *adminOptions) register(c *cobra.Command) {
	base := os.Getenv("LARKWAY_ADMIN_URL")
	if base == "" {
		base = "http://127.0.0.1:8092"
	}
	fs := c.PersistentFlags()
	fs.StringVar(&o.base, "admin", base, "admin API `URL` (env LARKWAY_ADMIN_URL)")
	fs.StringVar(&o.token, "token", "", "admin bearer `TOKEN` (default: env LARKWAY_ADMIN_TOKEN)")
	fs.BoolVar(&o.json, "json", false, "print the API's JSON")
	fs.StringVar(&o.tls.caFile, "ca-file", os.Getenv("LARKWAY_ADMIN_CA_FILE"), "PEM `FILE` of the CAs that signed the admin API's certificate (env LARKWAY_ADMIN_CA_FILE; default: the system roots)")
	fs.StringVar(&o.tls.certFile, "cert-file", os.Getenv("LARKWAY_ADMIN_CERT_FILE"), "client certificate PEM `FILE` for mutual TLS (env LARKWAY_ADMIN_CERT_FILE)")
	fs.StringVar(&o.tls.keyFile, "key-file", os.Getenv("LARKWAY_ADMIN_KEY_FILE"), "client certificate's key PEM `FILE` (env LARKWAY_ADMIN_KEY_FILE)")
	fs.StringVar(&o.tls.serverName, "tls-server-name", os.Getenv("LARKWAY_ADMIN_TLS_SERVER_NAME"),
		"`NAME` to verify the server certificate against, e.g. through kubectl port-forward (env LARKWAY_ADMIN_TLS_SERVER_NAME)")
	for _, f := range []string{"ca-file", "cert-file", "key-file"} {
		_ = c.MarkPersistentFlagFilename(f)
	}
}

// client is the admin API client the flags describe.
func (o *adminOptions) client(c *cobra.Command) (*adminClient, error) {
	token := o.token
	if !c.Flags().Changed("token") {
		token = os.Getenv("LARKWAY_ADMIN_TOKEN")
	}
	return newAdminClient(o.base, token, &o.tls)
}

// adminTLS are the client's TLS settings for an https:// admin API.
type adminTLS struct {
	caFile, certFile, keyFile, serverName string
}

func (o *adminTLS) set() bool {
	return o != nil && (o.caFile != "" || o.certFile != "" || o.keyFile != "" || o.serverName != "")
}

// config builds the client TLS configuration.
func (o *adminTLS) config() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if o == nil {
		return c, nil
	}
	c.ServerName = o.serverName
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("reading --ca-file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s holds no PEM certificate", o.caFile)
		}
	}
	if (o.certFile == "") != (o.keyFile == "") {
		return nil, usagef("--cert-file and --key-file go together")
	}
	if o.certFile != "" {
		kp, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return nil, fmt.Errorf("loading the client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{kp}
	}
	return c, nil
}

func newAdminClient(base, token string, tlsOpts *adminTLS) (*adminClient, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("--admin %q: want http(s)://host:port", base)
	}
	if token == "" {
		return nil, usagef("an admin token is required (--token or LARKWAY_ADMIN_TOKEN)")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if u.Scheme == "http" {
		if tlsOpts.set() {
			return nil, usagef("TLS flags need an https:// --admin URL")
		}
		// The core serves plain HTTP on loopback only; anywhere else the
		// token would cross the network in clear.
		if !config.IsLoopbackHost(u.Hostname()) {
			return nil, usagef("--admin %q: refusing to send the admin token over plain http to a non-loopback host; use https://", base)
		}
	} else {
		if tr.TLSClientConfig, err = tlsOpts.config(); err != nil {
			return nil, err
		}
	}
	// Swaps wait for the new version's probation window.
	return &adminClient{base: strings.TrimRight(base, "/"), token: token, http: &http.Client{Timeout: 5 * time.Minute, Transport: tr}}, nil
}

// call sends a request and decodes a JSON answer into out (if not nil).
// Non-2xx answers become errors carrying the API's message.
func (c *adminClient) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("calling the admin API: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return fmt.Errorf("reading the admin API's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error, Reason string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s (%s, HTTP %d)", e.Error, e.Reason, resp.StatusCode)
		}
		return fmt.Errorf("admin API answered %s", resp.Status)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decoding the admin API's answer: %w", err)
	}
	return nil
}

// adminCmd is a command that calls the admin API: its RunE gets the client
// the flags describe.
func adminCmd(o *adminOptions, use, short string, args cobra.PositionalArgs,
	run func(ctx context.Context, c *adminClient, args []string) error) *cobra.Command {
	return &cobra.Command{
		Use:               use,
		Short:             short,
		Args:              args,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			return run(cmd.Context(), c, args)
		},
	}
}

const adminLong = `The admin API is --admin (default from LARKWAY_ADMIN_URL, else
http://127.0.0.1:8092), called with the bearer token --token (default
LARKWAY_ADMIN_TOKEN). For an https:// --admin: --ca-file, --cert-file and
--key-file for mutual TLS, --tls-server-name; each has an environment
variable too (see the flags). A token is never sent over plain http to
anything but loopback.`

func newPluginCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &adminOptions{}
	c := &cobra.Command{
		Use:   "plugin",
		Short: "Manage plugins through the admin API",
		Long:  "Lists, swaps, rolls back, disables, enables and drains plugins through a core's admin API;\n`plugin pin` runs locally.\n\n" + adminLong,
	}
	groupCmd(c, stderr)
	o.register(c)
	name := exactArgs("NAME")
	// run calls POST /v1/plugins/NAME/<sub> and says ok.
	run := func(sub string, body func() any) func(context.Context, *adminClient, []string) error {
		return func(ctx context.Context, c *adminClient, args []string) error {
			var out map[string]any
			var b any
			if body != nil {
				b = body()
			}
			if err := c.call(ctx, http.MethodPost, "/v1/plugins/"+url.PathEscape(args[0])+"/"+sub, b, &out); err != nil {
				return err
			}
			if o.json {
				return printJSON(stdout, out)
			}
			fmt.Fprintf(stdout, "%s %s: ok\n", sub, args[0])
			return nil
		}
	}
	var file, address string
	var sum sha256Hex
	swap := adminCmd(o, "swap NAME (--file PATH --sha256 HEX | --address ADDR)", "Swap versions cluster-wide, make-before-break", name,
		run("swap", func() any {
			if address != "" {
				return map[string]string{"address": address}
			}
			return map[string]string{"path": file, "sha256": string(sum)}
		}))
	swap.Long = `Swaps the plugin NAME to the file PATH on every replica: each starts the new
version beside the old one and moves traffic to it once it passes probation;
a failing version is rolled back. PATH must lie in the plugin's directory
(or admin.plugin_dir) on the replicas; HEX is its SHA-256.

A remote plugin (plugins[].remote) is swapped to a new endpoint with
--address instead, the same way; its TLS settings stay the configured ones.`
	swap.Example = "  larkway plugin swap echo --file bin/plugins/echo2 --sha256 $(sha256sum bin/plugins/echo2 | cut -d' ' -f1)\n" +
		"  larkway plugin swap triage --address dns:///triage-v2.plugins.svc.cluster.local:7443"
	swap.Flags().StringVar(&file, "file", "", "the new plugin file's `PATH` (on the replicas)")
	swap.Flags().Var(&sum, "sha256", "the new file's SHA-256, 64 hex digits")
	swap.Flags().StringVar(&address, "address", "", "a remote plugin's new endpoint `ADDR` (host:port, dns:///host:port or a list)")
	swap.MarkFlagsRequiredTogether("file", "sha256")
	swap.MarkFlagsOneRequired("file", "address")
	swap.MarkFlagsMutuallyExclusive("file", "address")
	_ = swap.MarkFlagFilename("file")
	c.AddCommand(
		adminCmd(o, "list", "Every plugin on every replica", noArgs, func(ctx context.Context, c *adminClient, _ []string) error {
			var list listAnswer
			if err := c.call(ctx, http.MethodGet, "/v1/plugins", nil, &list); err != nil {
				return err
			}
			if o.json {
				return printJSON(stdout, list)
			}
			printPluginTable(stdout, list)
			return nil
		}),
		adminCmd(o, "describe NAME", "One plugin, with its manifest", name, func(ctx context.Context, c *adminClient, args []string) error {
			var out map[string]any
			if err := c.call(ctx, http.MethodGet, "/v1/plugins/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			return printJSON(stdout, out)
		}),
		swap,
		adminCmd(o, "rollback NAME", "Back to the version before the last swap", name, run("rollback", nil)),
		adminCmd(o, "disable NAME", "Stop it cluster-wide", name, run("disable", nil)),
		adminCmd(o, "enable NAME", "Start it cluster-wide", name, run("enable", nil)),
		adminCmd(o, "drain NAME", "Stop it on the replica behind --admin only", name, run("drain", nil)),
		newPinCmd(stdout),
		newReleaseCmd(o, stdout, "canary"),
		newReleaseCmd(o, stdout, "shadow"),
	)
	return c
}

// sha256Hex is a flag holding a SHA-256 in hex, checked as it is parsed.
type sha256Hex string

func (h *sha256Hex) String() string { return string(*h) }
func (h *sha256Hex) Type() string   { return "HEX" }

func (h *sha256Hex) Set(v string) error {
	if b, err := hex.DecodeString(v); err != nil || len(b) != sha256.Size {
		return errors.New("want 64 hex digits")
	}
	*h = sha256Hex(v)
	return nil
}

type listAnswer struct {
	Plugins []struct {
		Name     string `json:"name"`
		Replicas map[string]struct {
			State     string `json:"state"`
			Version   string `json:"version"`
			InFlight  int    `json:"in_flight"`
			Restarts  int    `json:"restarts"`
			LastError string `json:"last_error"`
			Spec      struct {
				Path string `json:"path"`
			} `json:"spec"`
			Release *struct {
				Mode    string       `json:"mode"`
				Version string       `json:"version"`
				State   string       `json:"state"`
				Percent float64      `json:"percent"`
				Chats   []string     `json:"chats"`
				Stats   versionStats `json:"stats"`
			} `json:"release"`
		} `json:"replicas"`
		DeadLetters int `json:"dead_letters"`
	} `json:"plugins"`
	Replicas []struct {
		ID          string            `json:"id"`
		State       string            `json:"state"`
		ApplyErrors map[string]string `json:"apply_errors"`
	} `json:"replicas"`
}

func printPluginTable(w io.Writer, l listAnswer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PLUGIN\tREPLICA\tVERSION\tSTATE\tIN FLIGHT\tRESTARTS\tDEAD LETTERS\tLAST ERROR")
	for _, p := range l.Plugins {
		for _, id := range slices.Sorted(maps.Keys(p.Replicas)) {
			r := p.Replicas[id]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", p.Name, id, r.Version, r.State, r.InFlight, r.Restarts, p.DeadLetters, oneLine(r.LastError))
		}
	}
	_ = tw.Flush()
	for _, p := range l.Plugins {
		for _, id := range slices.Sorted(maps.Keys(p.Replicas)) {
			if r := p.Replicas[id].Release; r != nil {
				fmt.Fprintf(w, "%s on %s: %s %s (%s) on %g%% of chats", p.Name, id, r.Mode, r.Version, r.State, r.Percent)
				if len(r.Chats) > 0 {
					fmt.Fprintf(w, " and %d named chat(s)", len(r.Chats))
				}
				fmt.Fprintf(w, ", %d deliveries, %d errors\n", r.Stats.Deliveries, r.Stats.Errors)
			}
		}
	}
	for _, r := range l.Replicas {
		for name, e := range r.ApplyErrors {
			fmt.Fprintf(w, "replica %s could not apply %s: %s\n", r.ID, name, oneLine(e))
		}
	}
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newDLQCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &adminOptions{}
	c := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect and replay dead letters",
		Long:  "Lists, shows, replays and purges a plugin's dead letters through a core's admin API.\n\n" + adminLong,
	}
	groupCmd(c, stderr)
	o.register(c)
	var limit int
	list := adminCmd(o, "list PLUGIN", "Dead letters, oldest first", exactArgs("PLUGIN"),
		func(ctx context.Context, c *adminClient, args []string) error {
			var out map[string]any
			if err := c.call(ctx, http.MethodGet, fmt.Sprintf("/v1/dlq/%s?limit=%d", url.PathEscape(args[0]), limit), nil, &out); err != nil {
				return err
			}
			if o.json {
				return printJSON(stdout, out)
			}
			printDLQTable(stdout, out)
			return nil
		})
	list.Flags().IntVar(&limit, "limit", 100, "at most this many")
	show := adminCmd(o, "show PLUGIN ID", "One dead letter with its event", exactArgs("PLUGIN", "ID"),
		func(ctx context.Context, c *adminClient, args []string) error {
			var out map[string]any
			if err := c.call(ctx, http.MethodGet, "/v1/dlq/"+url.PathEscape(args[0])+"/"+url.PathEscape(args[1]), nil, &out); err != nil {
				return err
			}
			return printJSON(stdout, out)
		})
	// some is replay's and purge's: dead letters by id, or --all.
	some := func(use, short, method, path string) *cobra.Command {
		var all bool
		c := adminCmd(o, use+" PLUGIN (ID... | --all)", short, func(c *cobra.Command, args []string) error {
			if err := minArgs("PLUGIN")(c, args); err != nil {
				return err
			}
			if all == (len(args) > 1) {
				return usagef("give either ids or --all")
			}
			return nil
		}, func(ctx context.Context, c *adminClient, args []string) error {
			body := map[string]any{"ids": args[1:]}
			if all {
				body = map[string]any{"all": true}
			}
			var out map[string]any
			if err := c.call(ctx, method, "/v1/dlq/"+url.PathEscape(args[0])+path, body, &out); err != nil {
				return err
			}
			return printJSON(stdout, out)
		})
		c.Flags().BoolVar(&all, "all", false, "every dead letter of the plugin")
		return c
	}
	c.AddCommand(list, show,
		some("replay", "Deliver them again, to this plugin only", http.MethodPost, "/replay"),
		some("purge", "Delete them", http.MethodDelete, ""))
	return c
}

func printDLQTable(w io.Writer, out map[string]any) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tDEAD AT\tEVENT TYPE\tEVENT ID\tREASON")
	list, _ := out["dead_letters"].([]any)
	for _, x := range list {
		e, _ := x.(map[string]any)
		fmt.Fprintf(tw, "%v\t%v\t%v\t%v\t%s\n", e["id"], e["dead_at"], e["event_type"], e["event_id"], oneLine(fmt.Sprint(e["reason"])))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "%v dead letter(s) in total\n", out["total"])
}
