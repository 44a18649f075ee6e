package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/larkway/larkway/core/internal/config"
)

// adminClient talks to a core's admin API.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

// adminFlags registers --admin and --token (defaults from the environment).
func adminFlags(fs *flag.FlagSet) (*string, *string) {
	base := os.Getenv("LARKWAY_ADMIN_URL")
	if base == "" {
		base = "http://127.0.0.1:8092"
	}
	return fs.String("admin", base, "admin API URL (env LARKWAY_ADMIN_URL)"),
		fs.String("token", os.Getenv("LARKWAY_ADMIN_TOKEN"), "admin bearer token (env LARKWAY_ADMIN_TOKEN)")
}

// adminTLS are the client's TLS settings for an https:// admin API.
type adminTLS struct {
	caFile, certFile, keyFile, serverName *string
}

// adminValueFlags are the admin flags that take a value (for splitArgs).
var adminValueFlags = map[string]bool{"admin": true, "token": true, "ca-file": true, "cert-file": true, "key-file": true, "tls-server-name": true}

// adminTLSFlags registers the client TLS flags (defaults from the environment).
func adminTLSFlags(fs *flag.FlagSet) *adminTLS {
	return &adminTLS{
		caFile:   fs.String("ca-file", os.Getenv("LARKWAY_ADMIN_CA_FILE"), "PEM CA bundle that signed the admin API's certificate (env LARKWAY_ADMIN_CA_FILE; default: the system roots)"),
		certFile: fs.String("cert-file", os.Getenv("LARKWAY_ADMIN_CERT_FILE"), "client certificate (PEM) for mutual TLS (env LARKWAY_ADMIN_CERT_FILE)"),
		keyFile:  fs.String("key-file", os.Getenv("LARKWAY_ADMIN_KEY_FILE"), "client certificate's key (PEM) (env LARKWAY_ADMIN_KEY_FILE)"),
		serverName: fs.String("tls-server-name", os.Getenv("LARKWAY_ADMIN_TLS_SERVER_NAME"),
			"name to verify the server certificate against, e.g. through kubectl port-forward (env LARKWAY_ADMIN_TLS_SERVER_NAME)"),
	}
}

func (o *adminTLS) set() bool {
	return o != nil && (*o.caFile != "" || *o.certFile != "" || *o.keyFile != "" || *o.serverName != "")
}

// config builds the client TLS configuration.
func (o *adminTLS) config() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if o == nil {
		return c, nil
	}
	c.ServerName = *o.serverName
	if *o.caFile != "" {
		pem, err := os.ReadFile(*o.caFile)
		if err != nil {
			return nil, fmt.Errorf("reading --ca-file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s holds no PEM certificate", *o.caFile)
		}
	}
	if (*o.certFile == "") != (*o.keyFile == "") {
		return nil, fmt.Errorf("%w: --cert-file and --key-file go together", errUsage)
	}
	if *o.certFile != "" {
		kp, err := tls.LoadX509KeyPair(*o.certFile, *o.keyFile)
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
		return nil, fmt.Errorf("%w: --admin %q: want http(s)://host:port", errUsage, base)
	}
	if token == "" {
		return nil, fmt.Errorf("%w: an admin token is required (--token or LARKWAY_ADMIN_TOKEN)", errUsage)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if u.Scheme == "http" {
		if tlsOpts.set() {
			return nil, fmt.Errorf("%w: TLS flags need an https:// --admin URL", errUsage)
		}
		// The core serves plain HTTP on loopback only; anywhere else the
		// token would cross the network in clear.
		if !config.IsLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("%w: --admin %q: refusing to send the admin token over plain http to a non-loopback host; use https://", errUsage, base)
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

const pluginUsage = `Usage:
  larkway plugin list                                  every plugin on every replica
  larkway plugin describe NAME                         one plugin, with its manifest
  larkway plugin swap NAME --file PATH --sha256 HEX    swap versions cluster-wide, make-before-break
  larkway plugin rollback NAME                         back to the version before the last swap
  larkway plugin disable NAME | enable NAME            stop / start it cluster-wide
  larkway plugin drain NAME                            stop it on the replica behind --admin only
  larkway plugin pin EXECUTABLE [FILE...]              print the sha256/files: pins to paste into the config
Flags (all subcommands but pin): --admin URL --token TOKEN [--json]
TLS (https:// --admin): --ca-file FILE [--cert-file FILE --key-file FILE] [--tls-server-name NAME]
`

const dlqUsage = `Usage:
  larkway dlq list PLUGIN [--limit N]          dead letters, oldest first
  larkway dlq show PLUGIN ID                   one dead letter with its event
  larkway dlq replay PLUGIN (ID... | --all)    deliver them again, to this plugin only
  larkway dlq purge PLUGIN (ID... | --all)     delete them
Flags (all subcommands): --admin URL --token TOKEN [--json]
TLS (https:// --admin): --ca-file FILE [--cert-file FILE --key-file FILE] [--tls-server-name NAME]
`

// splitArgs separates positional arguments from flags, so flags may follow
// the plugin name as in `larkway plugin swap echo --file x`.
func splitArgs(args []string, valueFlags map[string]bool) (pos, flags []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && (valueFlags[name] || adminValueFlags[name]) && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
			continue
		}
		pos = append(pos, a)
	}
	return pos, flags
}

func pluginCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, pluginUsage)
		if len(args) == 0 {
			return fmt.Errorf("%w: missing subcommand", errUsage)
		}
		return nil
	}
	sub := args[0]
	if sub == "pin" { // local: no admin API
		return pinCmd(args[1:], stdout, stderr)
	}
	fs := newFlags("plugin "+sub, stderr)
	base, token := adminFlags(fs)
	tlsOpts := adminTLSFlags(fs)
	asJSON := fs.Bool("json", false, "print the API's JSON")
	file := fs.String("file", "", "swap: the new plugin file")
	sum := fs.String("sha256", "", "swap: the new file's SHA-256 (hex)")
	pos, flags := splitArgs(args[1:], map[string]bool{"admin": true, "token": true, "file": true, "sha256": true})
	if err := parse(fs, flags); err != nil {
		return err
	}
	want := map[string]int{"list": 0, "describe": 1, "swap": 1, "rollback": 1, "disable": 1, "enable": 1, "drain": 1}
	n, ok := want[sub]
	if !ok {
		return fmt.Errorf("%w: unknown subcommand %q\n%s", errUsage, sub, pluginUsage)
	}
	if len(pos) != n {
		return fmt.Errorf("%w: plugin %s takes %d argument(s)\n%s", errUsage, sub, n, pluginUsage)
	}
	c, err := newAdminClient(*base, *token, tlsOpts)
	if err != nil {
		return err
	}
	var out map[string]any
	switch sub {
	case "list":
		var list listAnswer
		if err := c.call(ctx, http.MethodGet, "/v1/plugins", nil, &list); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, list)
		}
		printPluginTable(stdout, list)
		return nil
	case "describe":
		err = c.call(ctx, http.MethodGet, "/v1/plugins/"+url.PathEscape(pos[0]), nil, &out)
	case "swap":
		if *file == "" || *sum == "" {
			return fmt.Errorf("%w: plugin swap needs --file and --sha256", errUsage)
		}
		err = c.call(ctx, http.MethodPost, "/v1/plugins/"+url.PathEscape(pos[0])+"/swap", map[string]string{"path": *file, "sha256": *sum}, &out)
	default:
		err = c.call(ctx, http.MethodPost, "/v1/plugins/"+url.PathEscape(pos[0])+"/"+sub, nil, &out)
	}
	if err != nil {
		return err
	}
	if sub != "describe" && !*asJSON {
		fmt.Fprintf(stdout, "%s %s: ok\n", sub, pos[0])
		return nil
	}
	return printJSON(stdout, out)
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
		ids := make([]string, 0, len(p.Replicas))
		for id := range p.Replicas {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			r := p.Replicas[id]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", p.Name, id, r.Version, r.State, r.InFlight, r.Restarts, p.DeadLetters, oneLine(r.LastError))
		}
	}
	_ = tw.Flush()
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

func dlqCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, dlqUsage)
		if len(args) == 0 {
			return fmt.Errorf("%w: missing subcommand", errUsage)
		}
		return nil
	}
	sub := args[0]
	fs := newFlags("dlq "+sub, stderr)
	base, token := adminFlags(fs)
	tlsOpts := adminTLSFlags(fs)
	asJSON := fs.Bool("json", false, "print the API's JSON")
	limit := fs.Int("limit", 100, "list: at most this many")
	all := fs.Bool("all", false, "replay/purge: every dead letter of the plugin")
	pos, flags := splitArgs(args[1:], map[string]bool{"admin": true, "token": true, "limit": true})
	if err := parse(fs, flags); err != nil {
		return err
	}
	if len(pos) == 0 {
		return fmt.Errorf("%w: dlq %s needs a plugin name\n%s", errUsage, sub, dlqUsage)
	}
	plugin := url.PathEscape(pos[0])
	c, err := newAdminClient(*base, *token, tlsOpts)
	if err != nil {
		return err
	}
	var out map[string]any
	switch sub {
	case "list":
		if len(pos) != 1 {
			return fmt.Errorf("%w: dlq list takes one plugin name", errUsage)
		}
		if err := c.call(ctx, http.MethodGet, fmt.Sprintf("/v1/dlq/%s?limit=%d", plugin, *limit), nil, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, out)
		}
		printDLQTable(stdout, out)
		return nil
	case "show":
		if len(pos) != 2 {
			return fmt.Errorf("%w: dlq show takes a plugin name and an id", errUsage)
		}
		err = c.call(ctx, http.MethodGet, "/v1/dlq/"+plugin+"/"+url.PathEscape(pos[1]), nil, &out)
	case "replay", "purge":
		ids := pos[1:]
		if *all == (len(ids) > 0) {
			return fmt.Errorf("%w: dlq %s takes ids or --all", errUsage, sub)
		}
		body := map[string]any{"ids": ids}
		if *all {
			body = map[string]any{"all": true}
		}
		method, path := http.MethodPost, "/v1/dlq/"+plugin+"/replay"
		if sub == "purge" {
			method, path = http.MethodDelete, "/v1/dlq/"+plugin
		}
		err = c.call(ctx, method, path, body, &out)
	default:
		return fmt.Errorf("%w: unknown subcommand %q\n%s", errUsage, sub, dlqUsage)
	}
	if err != nil {
		return err
	}
	return printJSON(stdout, out)
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
