package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
)

// pageNames are the templates in web/, each rendered inside layout.html.
var pageNames = []string{"login", "overview", "plugin", "confirm", "result", "dlq", "dlqlist", "dlqshow", "tail", "error"}

var funcs = template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12] + "…"
		}
		return s
	},
	"rate": func(f float64) string { return fmt.Sprintf("%.1f/s", f) },
	"path": url.PathEscape,
}

func parsePages() (map[string]*template.Template, error) {
	out := map[string]*template.Template{}
	for _, n := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(webFS, "web/layout.html", "web/"+n+".html")
		if err != nil {
			return nil, fmt.Errorf("parsing console page %s: %w", n, err)
		}
		out[n] = t
	}
	return out, nil
}

// page is what every template gets.
type page struct {
	Title      string
	P          principalInfo
	Playground string
	Operator   bool
	Data       any
	// Fragment renders only the page's live part (an htmx refresh).
	Fragment bool
}

// render writes a page; data may be a map or a struct the template knows.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	p := principalOf(r)
	pg := page{Title: name, P: p, Playground: c.cfg.PlaygroundURL, Operator: p.Role == "operator", Data: data,
		Fragment: r.Header.Get("HX-Request") == "true" && r.Header.Get("HX-Target") == "live"}
	var b bytes.Buffer
	tmpl := "layout.html"
	if pg.Fragment {
		tmpl = "live"
	}
	if err := c.pages[name].ExecuteTemplate(&b, tmpl, pg); err != nil {
		c.logger.Error("rendering console page", "page", name, "err", err)
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// fail renders an error page with the status.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	c.render(w, r, status, "error", map[string]any{"Status": status, "StatusText": http.StatusText(status), "Message": msg})
}

// pluginRow is one plugin on the overview.
type pluginRow struct {
	Name                        string
	Versions, States            string
	Serving, Replicas           int
	InFlight, Restarts, Backlog int
	DeadLetters                 int
	LastError                   string
	Enabled                     bool
	HasDesired                  bool
	DesiredPath, DesiredSHA256  string
	DesiredGeneration           int64
	// CurrentPath prefills the swap form: the desired path, else a
	// replica's.
	CurrentPath   string
	ReplicaStatus []replicaPlugin
}

// replicaPlugin is a plugin on one replica.
type replicaPlugin struct {
	Replica                      string
	State, Version, Path, SHA256 string
	InFlight, Restarts, Swaps    int
	LastError                    string
	Since                        time.Time
	Previous                     string
}

func uniq(vals []string) string {
	slices.Sort(vals)
	vals = slices.Compact(vals)
	return strings.Join(slices.DeleteFunc(vals, func(s string) bool { return s == "" }), ", ")
}

func (c *Console) rows(l pluginList, backlog map[string]int) []pluginRow {
	out := make([]pluginRow, 0, len(l.Plugins))
	for _, v := range l.Plugins {
		row := pluginRow{Name: v.Name, Replicas: len(v.Replicas), DeadLetters: v.DeadLetters, Backlog: backlog[v.Name], Enabled: true}
		var versions, states []string
		ids := make([]string, 0, len(v.Replicas))
		for id := range v.Replicas {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			s := v.Replicas[id]
			versions, states = append(versions, s.Version), append(states, string(s.State))
			if s.State == "serving" {
				row.Serving++
			}
			row.InFlight += s.InFlight
			row.Restarts += s.Restarts
			if row.LastError == "" {
				row.LastError = s.LastError
			}
			rp := replicaPlugin{Replica: id, State: string(s.State), Version: s.Version, Path: s.Spec.Path, SHA256: s.Spec.SHA256,
				InFlight: s.InFlight, Restarts: s.Restarts, Swaps: s.Swaps, LastError: s.LastError, Since: s.Since}
			if s.Previous != nil {
				rp.Previous = s.Previous.Path
			}
			row.ReplicaStatus = append(row.ReplicaStatus, rp)
		}
		if d := v.Desired; d != nil {
			row.HasDesired, row.Enabled = true, d.Enabled
			row.DesiredPath, row.DesiredSHA256, row.DesiredGeneration = d.Spec.Path, d.Spec.SHA256, d.Generation
		}
		row.Versions, row.States = uniq(versions), uniq(states)
		row.CurrentPath = row.DesiredPath
		if row.CurrentPath == "" && len(row.ReplicaStatus) > 0 {
			row.CurrentPath = row.ReplicaStatus[0].Path
		}
		out = append(out, row)
	}
	return out
}

// backlogs sums larkway_dispatch_backlog_messages per plugin.
func (c *Console) backlogs() map[string]int {
	out := map[string]int{}
	if c.deps.Metrics == nil {
		return out
	}
	mfs, _ := c.deps.Metrics.Gather() // partial results are still worth showing
	for _, mf := range mfs {
		if mf.GetName() != "larkway_dispatch_backlog_messages" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "plugin" {
					out[lp.GetValue()] += int(m.GetGauge().GetValue())
				}
			}
		}
	}
	return out
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	l, res := c.plugins(r)
	if !res.OK() {
		c.fail(w, r, res.Status, res.Err())
		return
	}
	data := map[string]any{"Replicas": l.Replicas, "Plugins": c.rows(l, c.backlogs())}
	if c.deps.Tail != nil {
		data["Rates"] = c.sampleRates()
	}
	c.render(w, r, http.StatusOK, "overview", data)
}

// pluginOpDef is one operation on a plugin. The plugin page lists them in
// this order; an operation added to the admin API is added here (its form
// fields, if any, in the templates' "op-fields" block).
type pluginOpDef struct {
	Name, Label, Help string
	// Fields are posted to the API as its JSON body.
	Fields []string
}

var pluginOps = []pluginOpDef{
	{Name: "swap", Label: "Swap", Fields: []string{"path", "sha256"},
		Help: "Run a new version, pinned by its sha256, on every replica; it is rolled back by itself if it fails its probation. The file must be in the plugin directory."},
	{Name: "rollback", Label: "Roll back", Help: "Go back to the version before the last swap on every replica."},
	{Name: "drain", Label: "Drain", Help: "Stop taking this plugin's events on this replica and finish those in flight; the other replicas keep serving them."},
	{Name: "disable", Label: "Disable", Help: "Stop the plugin on every replica; its events wait in the bus."},
	{Name: "enable", Label: "Enable", Help: "Start a disabled plugin again on every replica."},
}

func opByName(name string) (pluginOpDef, bool) {
	for _, o := range pluginOps {
		if o.Name == name {
			return o, true
		}
	}
	return pluginOpDef{}, false
}

func (c *Console) pluginPage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	res := c.call(r, http.MethodGet, "/v1/plugins/"+url.PathEscape(name), nil)
	if !res.OK() {
		c.fail(w, r, res.Status, res.Err())
		return
	}
	var d struct {
		Plugin        pluginView      `json:"plugin"`
		Manifest      json.RawMessage `json:"manifest"`
		ManifestError string          `json:"manifest_error"`
	}
	if err := json.Unmarshal(res.Body, &d); err != nil {
		c.fail(w, r, http.StatusBadGateway, "decoding the plugin: "+err.Error())
		return
	}
	rows := c.rows(pluginList{Plugins: []pluginView{d.Plugin}}, c.backlogs())
	var m struct {
		Version        string            `json:"version"`
		Description    string            `json:"description"`
		Subscriptions  []json.RawMessage `json:"subscriptions"`
		AllowedActions []string          `json:"allowed_actions"`
		MaxInFlight    int               `json:"max_in_flight"`
	}
	_ = json.Unmarshal(d.Manifest, &m)
	subs := make([]string, len(m.Subscriptions))
	for i, s := range m.Subscriptions {
		subs[i] = string(s)
	}
	var pretty bytes.Buffer
	_ = json.Indent(&pretty, d.Manifest, "", "  ")
	c.render(w, r, http.StatusOK, "plugin", map[string]any{"Row": rows[0], "Manifest": m, "Subscriptions": subs,
		"ManifestJSON": pretty.String(), "ManifestError": d.ManifestError, "Ops": pluginOps})
}

func (c *Console) pluginOp(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	op, ok := opByName(r.PathValue("op"))
	if !ok {
		c.fail(w, r, http.StatusNotFound, "No plugin operation "+r.PathValue("op")+".")
		return
	}
	fields := map[string]string{}
	for _, f := range op.Fields {
		fields[f] = strings.TrimSpace(r.PostFormValue(f))
	}
	back := "/plugins/" + url.PathEscape(name)
	if r.PostFormValue("confirm") != "yes" {
		c.render(w, r, http.StatusOK, "confirm", map[string]any{"Action": back + "/" + op.Name, "Back": back,
			"Question": fmt.Sprintf("%s plugin %s?", op.Label, name), "Help": op.Help, "Fields": fields, "Label": op.Label})
		return
	}
	var body any
	if len(op.Fields) > 0 {
		body = fields
	}
	res := c.call(r, http.MethodPost, "/v1/plugins/"+url.PathEscape(name)+"/"+op.Name, body)
	c.result(w, r, res, fmt.Sprintf("%s of plugin %s", op.Label, name), back)
}

// result shows an operation's outcome with the API's status.
func (c *Console) result(w http.ResponseWriter, r *http.Request, res apiResult, what, back string) {
	msg := what + ": done."
	if !res.OK() {
		msg = what + " failed: " + res.Err()
	}
	c.render(w, r, res.Status, "result", map[string]any{"OK": res.OK(), "Message": msg, "Status": res.Status,
		"Body": res.Pretty(), "Back": back})
}

func (c *Console) dlqIndex(w http.ResponseWriter, r *http.Request) {
	l, res := c.plugins(r)
	if !res.OK() {
		c.fail(w, r, res.Status, res.Err())
		return
	}
	c.render(w, r, http.StatusOK, "dlq", map[string]any{"Plugins": l.Plugins})
}

type dlqEntry struct {
	ID        string            `json:"id"`
	Plugin    string            `json:"plugin"`
	Topic     string            `json:"topic"`
	Key       string            `json:"key"`
	Reason    string            `json:"reason"`
	EventID   string            `json:"event_id"`
	EventType string            `json:"event_type"`
	DeadAt    time.Time         `json:"dead_at"`
	Event     json.RawMessage   `json:"event"`
	Props     map[string]string `json:"properties"`
}

func (c *Console) dlqList(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("plugin")
	res := c.call(r, http.MethodGet, "/v1/dlq/"+url.PathEscape(name)+"?limit=500", nil)
	if !res.OK() {
		c.fail(w, r, res.Status, res.Err())
		return
	}
	var d struct {
		Total       int        `json:"total"`
		DeadLetters []dlqEntry `json:"dead_letters"`
	}
	_ = json.Unmarshal(res.Body, &d)
	c.render(w, r, http.StatusOK, "dlqlist", map[string]any{"Plugin": name, "Total": d.Total, "Entries": d.DeadLetters})
}

func (c *Console) dlqShow(w http.ResponseWriter, r *http.Request) {
	name, id := r.PathValue("plugin"), r.PathValue("id")
	res := c.call(r, http.MethodGet, "/v1/dlq/"+url.PathEscape(name)+"/"+url.PathEscape(id), nil)
	if !res.OK() {
		c.fail(w, r, res.Status, res.Err())
		return
	}
	var e dlqEntry
	_ = json.Unmarshal(res.Body, &e)
	var ev bytes.Buffer
	_ = json.Indent(&ev, e.Event, "", "  ")
	c.render(w, r, http.StatusOK, "dlqshow", map[string]any{"Plugin": name, "Entry": e, "Event": ev.String()})
}

// dlqOp replays or purges dead letters: the ids posted ("id", repeated) or
// all of them ("all=yes"). A purge is confirmed first; a replay is not (it
// loses nothing).
func (c *Console) dlqOp(w http.ResponseWriter, r *http.Request) {
	name, op := r.PathValue("plugin"), r.PathValue("op")
	if op != "replay" && op != "purge" {
		c.fail(w, r, http.StatusNotFound, "No dead-letter operation "+op+".")
		return
	}
	_ = r.ParseForm()
	ids, all := r.PostForm["id"], r.PostFormValue("all") == "yes"
	back := "/dlq/" + url.PathEscape(name)
	what := fmt.Sprintf("%d dead letter(s) of %s", len(ids), name)
	if all {
		what = "every dead letter of " + name
	}
	if op == "purge" && r.PostFormValue("confirm") != "yes" {
		hidden := map[string]string{}
		if all {
			hidden["all"] = "yes"
		}
		c.render(w, r, http.StatusOK, "confirm", map[string]any{"Action": back + "/purge", "Back": back, "Label": "Purge",
			"Question": "Purge " + what + "? They are deleted for good.", "Hidden": hidden, "IDs": ids})
		return
	}
	body := map[string]any{"ids": ids}
	if all {
		body = map[string]any{"all": true}
	}
	method, path, label := http.MethodPost, "/v1/dlq/"+url.PathEscape(name)+"/replay", "Replay of "
	if op == "purge" {
		method, path, label = http.MethodDelete, "/v1/dlq/"+url.PathEscape(name), "Purge of "
	}
	c.result(w, r, c.call(r, method, path, body), label+what, back)
}
