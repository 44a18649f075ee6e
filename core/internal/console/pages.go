package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
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
	// Release marks a running canary or shadow, e.g. "canary 10 % of
	// chats"; empty without one.
	Release string
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
		for _, id := range slices.Sorted(maps.Keys(v.Replicas)) {
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
		row.Release = releaseTag(v)
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
// this order; an operation added to the admin API is added here.
type pluginOpDef struct {
	Name, Label, Help string
	// Fields are posted to the API as its JSON body.
	Fields []opField
	// Body turns the posted fields (empty ones left out) into the API's
	// JSON body; nil posts them as strings. Its error is the operator's
	// mistake, shown before anything is asked of the API.
	Body func(fields map[string]string) (any, error)
	// OnRelease: offered only while a canary or shadow runs.
	OnRelease bool
}

// opField is one form field of an operation.
type opField struct {
	Name, Label string
	// Type is the input's type ("" is text); Pattern its HTML pattern.
	Type, Pattern, Placeholder, Help string
	Required                         bool
	// Prefill fills the field with the plugin's current path.
	Prefill bool
}

var (
	pathField   = opField{Name: "path", Label: "path", Required: true, Prefill: true}
	sha256Field = opField{Name: "sha256", Label: "sha256", Required: true, Pattern: "[0-9a-fA-F]{64}", Placeholder: "64 hex digits"}
	// A candidate's file is another one than the running version's.
	candidateFields = []opField{
		{Name: "path", Label: "candidate file", Required: true, Placeholder: "a file in the plugin directory"},
		sha256Field,
		{Name: "percent", Label: "percent of chats", Type: "number", Placeholder: "e.g. 10"},
		{Name: "chats", Label: "chats", Placeholder: "chat ids, comma-separated"},
	}
	canaryFields = append(slices.Clone(candidateFields),
		opField{Name: "promote_after", Label: "promote after", Placeholder: "deliveries (1000) or duration (30m); empty: by hand"},
		opField{Name: "max_error_rate", Label: "max error rate", Type: "number", Placeholder: "0..1, default 0.05"},
		opField{Name: "min_deliveries", Label: "min deliveries", Type: "number", Placeholder: "default 20"},
	)
)

var pluginOps = []pluginOpDef{
	{Name: "swap", Label: "Swap", Fields: []opField{pathField, sha256Field},
		Help: "Run a new version, pinned by its sha256, on every replica; it is rolled back by itself if it fails its probation. The file must be in the plugin directory."},
	{Name: "rollback", Label: "Roll back", Help: "Go back to the version before the last swap on every replica."},
	{Name: "drain", Label: "Drain", Help: "Stop taking this plugin's events on this replica and finish those in flight; the other replicas keep serving them."},
	{Name: "disable", Label: "Disable", Help: "Stop the plugin on every replica; its events wait in the bus."},
	{Name: "enable", Label: "Enable", Help: "Start a disabled plugin again on every replica."},
	{Name: "canary", Label: "Start canary", Fields: canaryFields, Body: releaseBody(true),
		Help: "Run a candidate version beside the stable one for the chats selected (a percentage by a hash of the chat id, and/or chat ids), on every replica; it is promoted after the given deliveries or time within the error budget, rolled back past it. Again with the same file changes the split."},
	{Name: "shadow", Label: "Start shadow", Fields: candidateFields, Body: releaseBody(false),
		Help: "Give a candidate version a copy of the selected chats' deliveries (default: every chat) after the stable version handled them; its actions are recorded and compared, never performed."},
	{Name: "promote", Label: "Promote", OnRelease: true,
		Help: "Make the canary the stable version on every replica now (plugin rollback returns to the old one)."},
	{Name: "abort", Label: "Abort", OnRelease: true,
		Help: "Stop the canary (its chats go back to the stable version) or the shadow, on every replica."},
}

// releaseBody reads a canary's or shadow's form into the API's typed body.
func releaseBody(canary bool) func(map[string]string) (any, error) {
	return func(f map[string]string) (any, error) {
		body := map[string]any{"path": f["path"], "sha256": f["sha256"]}
		if v := f["percent"]; v != "" {
			p, err := strconv.ParseFloat(v, 64)
			if err != nil || p < 0 || p > 100 {
				return nil, fmt.Errorf("percent of chats %q is not a number from 0 to 100", v)
			}
			body["percent"] = p
		}
		if v := f["chats"]; v != "" {
			body["chats"] = strings.FieldsFunc(v, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
		}
		if !canary {
			return body, nil
		}
		if v := f["promote_after"]; v != "" {
			body["promote_after"] = v // the API says what it accepts
		}
		if v := f["max_error_rate"]; v != "" {
			r, err := strconv.ParseFloat(v, 64)
			if err != nil || r < 0 || r > 1 {
				return nil, fmt.Errorf("max error rate %q is not a number from 0 to 1", v)
			}
			body["max_error_rate"] = r
		}
		if v := f["min_deliveries"]; v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("min deliveries %q is not a whole number", v)
			}
			body["min_deliveries"] = n
		}
		return body, nil
	}
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
	rel := c.release(r, name)
	if len(rel.Stats) > 0 {
		rel.Stats[0].Version = rows[0].Versions
	}
	// Promote and abort are offered while a release runs (the API refuses
	// them otherwise with no_release).
	ops := slices.DeleteFunc(slices.Clone(pluginOps), func(o pluginOpDef) bool { return o.OnRelease && !rel.Running })
	c.render(w, r, http.StatusOK, "plugin", map[string]any{"Row": rows[0], "Manifest": m, "Subscriptions": subs,
		"ManifestJSON": pretty.String(), "ManifestError": d.ManifestError, "Ops": ops, "Release": rel})
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
		if v := strings.TrimSpace(r.PostFormValue(f.Name)); v != "" || f.Required {
			fields[f.Name] = v
		}
	}
	back := "/plugins/" + url.PathEscape(name)
	what := fmt.Sprintf("%s of plugin %s", op.Label, name)
	var body any
	if op.Body != nil {
		var err error
		if body, err = op.Body(fields); err != nil {
			c.render(w, r, http.StatusBadRequest, "result", map[string]any{"Message": what + " failed: " + err.Error(),
				"Status": http.StatusBadRequest, "Back": back})
			return
		}
	} else if len(op.Fields) > 0 {
		body = fields
	}
	if r.PostFormValue("confirm") != "yes" {
		c.render(w, r, http.StatusOK, "confirm", map[string]any{"Action": back + "/" + op.Name, "Back": back,
			"Question": fmt.Sprintf("%s plugin %s?", op.Label, name), "Help": op.Help, "Fields": fields, "Label": op.Label})
		return
	}
	res := c.call(r, http.MethodPost, "/v1/plugins/"+url.PathEscape(name)+"/"+op.Name, body)
	c.result(w, r, res, what, back)
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
