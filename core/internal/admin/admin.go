// Package admin is the authenticated HTTP API behind `larkway plugin ...`,
// `larkway dlq ...` and `larkway actions ...`: plugin versions, states and
// swaps across the cluster, event dead letters, and failed actions (actions
// whose Lark call finally failed).
//
//	GET    /v1/plugins                     every plugin, per replica
//	GET    /v1/plugins/{name}              one plugin, with its manifest
//	POST   /v1/plugins/{name}/swap         {"path": "...", "sha256": "..."}
//	POST   /v1/plugins/{name}/rollback
//	POST   /v1/plugins/{name}/disable
//	POST   /v1/plugins/{name}/enable
//	POST   /v1/plugins/{name}/drain
//	POST   /v1/plugins/{name}/canary       {"path", "sha256", "percent" | "chats", "promote_after", "max_error_rate"}
//	POST   /v1/plugins/{name}/shadow       {"path", "sha256"[, "percent" | "chats"]}
//	POST   /v1/plugins/{name}/promote      the canary becomes stable
//	POST   /v1/plugins/{name}/abort        the canary or shadow stops
//	GET    /v1/plugins/{name}/release      the release across replicas, its totals and verdict
//	GET    /v1/plugins/{name}/shadow/report?limit=N  stable vs candidate, per event, newest first
//	POST   /v1/plugins/{name}/replay       {"to_shadow": true, "from", "to"[, "percent" | "chats"]}: history into the shadow
//	GET    /v1/dlq/{plugin}?limit=N        dead letters, oldest first
//	GET    /v1/dlq/{plugin}/{id}           one dead letter, with its event
//	POST   /v1/dlq/{plugin}/replay         {"ids": [...]} or {"all": true}
//	DELETE /v1/dlq/{plugin}                {"ids": [...]} or {"all": true}: purge
//	GET    /v1/actions/failed?limit=N&plugin=P  failed actions, newest first
//	GET    /v1/actions/failed/{id}         one failed action
//	POST   /v1/actions/failed/replay       {"ids": [...]} or {"all": true[, "plugin": P]}
//	DELETE /v1/actions/failed              {"ids": [...]} or {"all": true[, "plugin": P]}: purge
//
// Every request needs "Authorization: Bearer <token>" (a static token or a
// JWT; 401 otherwise). A viewer may only GET; an operator may also change
// (403 otherwise). Every change is logged with its principal. Swaps take
// files from the plugin directory only. Errors are JSON
// {"error": "...", "reason": "..."}.
package admin

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/cluster"
	"github.com/larkway/larkway/core/internal/dlq"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/manager"
	"github.com/larkway/larkway/core/internal/shadow"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Cluster is the reconciler: cluster-wide plugin changes and the registry.
type Cluster interface {
	Swap(ctx context.Context, name string, spec manager.Spec) error
	Rollback(ctx context.Context, name string) error
	Disable(ctx context.Context, name string) error
	Enable(ctx context.Context, name string) error
	Status() cluster.ReplicaStatus
	StartRelease(ctx context.Context, name string, rel cluster.Release) error
	EndRelease(ctx context.Context, name string, promote bool) error
	ReleaseView(ctx context.Context, name string) (cluster.ReleaseView, error)
}

// Local is this replica's plugin manager (manifests, drain).
type Local interface {
	Manifest(name string) (*pluginv1.Manifest, error)
	Drain(ctx context.Context, name string) error
}

// Replayer republishes dead letters.
type Replayer interface {
	Replay(ctx context.Context, e dlq.Entry) error
}

// ActionReplayer performs failed actions again (the action executor).
type ActionReplayer interface {
	ReplayFailed(ctx context.Context, id string) error
}

// Deps are what the API operates on.
type Deps struct {
	Cluster     Cluster
	Store       cluster.Store
	Local       Local
	DeadLetters dlq.Store
	Replayer    Replayer
	// FailedActions and ActionReplayer serve /v1/actions/failed (501
	// without them).
	FailedActions  action.FailedStore
	ActionReplayer ActionReplayer
	// Shadows are shadow releases' records (report 501 without them).
	Shadows shadow.Store
	// ShadowReplayer feeds stored history into a shadow (501 without it).
	ShadowReplayer ShadowReplayer
}

// Config is who may call the API and what swaps may run.
type Config struct {
	// Tokens are the static bearer tokens.
	Tokens []Token
	// JWT verifies JWT bearer tokens; nil accepts static tokens only.
	JWT Verifier
	// PluginDir is the only directory swaps may take files from; empty
	// means the directory of the plugin's path in PluginPaths.
	PluginDir string
	// PluginPaths are the configured plugin paths by name.
	PluginPaths map[string]string
	// PluginRemotes are the configured remote plugins by name. A swap of
	// one changes only its address: the TLS files stay the configured ones,
	// as swaps of launched plugins take files only from PluginDir.
	PluginRemotes map[string]manager.Remote
}

// Server is the admin HTTP handler.
type Server struct {
	tokens      []staticToken
	jwt         Verifier
	pluginDir   string
	pluginPaths map[string]string
	remotes     map[string]manager.Remote
	deps        Deps
	logger      *slog.Logger
	mux         *http.ServeMux
}

// maxBody bounds admin request bodies.
const maxBody = 64 << 10

// New returns the handler. It needs at least one token or a JWT verifier.
func New(cfg Config, deps Deps, logger *slog.Logger) (*Server, error) {
	if len(cfg.Tokens) == 0 && cfg.JWT == nil {
		return nil, errors.New("admin API needs a token or JWT verification")
	}
	tokens, err := hashTokens(cfg.Tokens)
	if err != nil {
		return nil, err
	}
	s := &Server{tokens: tokens, jwt: cfg.JWT, pluginDir: cfg.PluginDir, pluginPaths: cfg.PluginPaths,
		remotes: cfg.PluginRemotes, deps: deps, logger: logger.With("component", "admin"), mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /v1/plugins", s.listPlugins)
	s.mux.HandleFunc("GET /v1/plugins/{name}", s.describePlugin)
	s.mux.HandleFunc("POST /v1/plugins/{name}/{op}", s.pluginOp)
	s.mux.HandleFunc("GET /v1/plugins/{name}/release", s.showRelease)
	s.mux.HandleFunc("POST /v1/plugins/{name}/replay", s.replayToShadow)
	s.mux.HandleFunc("GET /v1/plugins/{name}/shadow/report", s.shadowReport)
	s.mux.HandleFunc("GET /v1/dlq/{plugin}", s.listDLQ)
	s.mux.HandleFunc("GET /v1/dlq/{plugin}/{id}", s.showDLQ)
	s.mux.HandleFunc("POST /v1/dlq/{plugin}/replay", s.replayDLQ)
	s.mux.HandleFunc("DELETE /v1/dlq/{plugin}", s.purgeDLQ)
	s.mux.HandleFunc("GET /v1/actions/failed", s.listFailed)
	s.mux.HandleFunc("GET /v1/actions/failed/{id}", s.showFailed)
	s.mux.HandleFunc("POST /v1/actions/failed/replay", s.replayFailed)
	s.mux.HandleFunc("DELETE /v1/actions/failed", s.purgeFailed)
	return s, nil
}

// ServeHTTP authenticates (401), routes (404), authorizes (403), then
// serves; every change is logged with its principal.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p, err := s.authenticate(r)
	if err != nil {
		s.logger.Warn("admin request refused", "status", http.StatusUnauthorized, "method", r.Method, "path", r.URL.Path,
			"remote", r.RemoteAddr, "err", err)
		w.Header().Set("WWW-Authenticate", `Bearer realm="larkway-admin", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", err.Error())
		return
	}
	if _, pattern := s.mux.Handler(r); pattern == "" {
		writeError(w, http.StatusNotFound, "not_found", "no such admin endpoint: "+r.Method+" "+r.URL.Path)
		return
	}
	attrs := []any{"principal", p.Name, "role", string(p.Role), "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		attrs = append(attrs, "client_cert", r.TLS.PeerCertificates[0].Subject.String())
	}
	if !p.Role.allows(r.Method) {
		s.logger.Warn("admin request forbidden", append(attrs, "status", http.StatusForbidden)...)
		msg := fmt.Sprintf("%s (role %q) may not %s %s: only the operator role may change anything", p.Name, p.Role, r.Method, r.URL.Path)
		if p.Role == RoleNone {
			msg = fmt.Sprintf("%s carries no admin role (viewer or operator)", p.Name)
		}
		writeError(w, http.StatusForbidden, "forbidden", msg)
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		s.mux.ServeHTTP(w, r)
		return
	}
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	s.mux.ServeHTTP(sw, r)
	s.logger.Info("admin change", append(attrs, "status", sw.status)...)
}

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

type errorBody struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, reason, msg string) {
	writeJSON(w, status, errorBody{Error: msg, Reason: reason})
}

// decode reads a bounded JSON body strictly; an empty body decodes nothing.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "oversize", fmt.Sprintf("body exceeds %d bytes", maxBody))
		return false
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return true
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

func (s *Server) pluginName(w http.ResponseWriter, r *http.Request, key string) (string, bool) {
	name := r.PathValue(key)
	if !nameRE.MatchString(name) {
		writeError(w, http.StatusBadRequest, "bad_name", fmt.Sprintf("%q is not a plugin name", name))
		return "", false
	}
	return name, true
}

// pluginView is one plugin across replicas.
type pluginView struct {
	Name     string                    `json:"name"`
	Desired  *cluster.Desired          `json:"desired,omitempty"`
	Replicas map[string]manager.Status `json:"replicas"`
	// DeadLetters counts indexed dead letters.
	DeadLetters int `json:"dead_letters"`
}

func (s *Server) views(ctx context.Context) (map[string]*pluginView, []cluster.ReplicaStatus, error) {
	reps, err := s.deps.Store.Replicas(ctx)
	if err != nil {
		return nil, nil, err
	}
	// This replica's status is always fresh, even before its first heartbeat.
	self := s.deps.Cluster.Status()
	found := false
	for i := range reps {
		if reps[i].ID == self.ID {
			reps[i], found = self, true
		}
	}
	if !found {
		reps = append(reps, self)
	}
	desired, err := s.deps.Store.Desired(ctx)
	if err != nil {
		return nil, nil, err
	}
	views := map[string]*pluginView{}
	get := func(name string) *pluginView {
		v := views[name]
		if v == nil {
			v = &pluginView{Name: name, Replicas: map[string]manager.Status{}}
			views[name] = v
		}
		return v
	}
	for _, rep := range reps {
		for _, p := range rep.Plugins {
			get(p.Name).Replicas[rep.ID] = p
		}
	}
	for name, d := range desired {
		d := d
		get(name).Desired = &d
	}
	for name, v := range views {
		if s.deps.DeadLetters != nil {
			v.DeadLetters, _ = s.deps.DeadLetters.Count(ctx, name)
		}
	}
	return views, reps, nil
}

func (s *Server) listPlugins(w http.ResponseWriter, r *http.Request) {
	views, reps, err := s.views(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	list := make([]*pluginView, 0, len(views))
	for _, v := range views {
		list = append(list, v)
	}
	sortViews(list)
	writeJSON(w, http.StatusOK, map[string]any{"plugins": list, "replicas": replicaSummaries(reps)})
}

type replicaSummary struct {
	ID          string            `json:"id"`
	Version     string            `json:"version"`
	State       string            `json:"state"`
	Heartbeat   time.Time         `json:"heartbeat"`
	ApplyErrors map[string]string `json:"apply_errors,omitempty"`
}

func replicaSummaries(reps []cluster.ReplicaStatus) []replicaSummary {
	out := make([]replicaSummary, 0, len(reps))
	for _, r := range reps {
		out = append(out, replicaSummary{ID: r.ID, Version: r.Version, State: r.State, Heartbeat: r.Heartbeat, ApplyErrors: r.ApplyErrors})
	}
	return out
}

func (s *Server) describePlugin(w http.ResponseWriter, r *http.Request) {
	name, ok := s.pluginName(w, r, "name")
	if !ok {
		return
	}
	views, _, err := s.views(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	v := views[name]
	if v == nil {
		writeError(w, http.StatusNotFound, "unknown_plugin", "no plugin named "+name)
		return
	}
	out := map[string]any{"plugin": v}
	if m, err := s.deps.Local.Manifest(name); err == nil {
		b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		out["manifest"] = json.RawMessage(b)
	} else {
		out["manifest_error"] = err.Error()
	}
	writeJSON(w, http.StatusOK, out)
}

type swapRequest struct {
	Path   string   `json:"path"`
	SHA256 string   `json:"sha256"`
	Args   []string `json:"args,omitempty"`
	Env    []string `json:"env,omitempty"`
	// Files pins the new version's scripts; checked at launch.
	Files []manager.File `json:"files,omitempty"`
	// Address is a remote plugin's new endpoint (instead of path).
	Address string `json:"address,omitempty"`
}

func (s *Server) pluginOp(w http.ResponseWriter, r *http.Request) {
	name, ok := s.pluginName(w, r, "name")
	if !ok {
		return
	}
	ctx := r.Context()
	var err error
	switch op := r.PathValue("op"); op {
	case "swap":
		var req swapRequest
		if !decode(w, r, &req) {
			return
		}
		if rem, remote := s.remotes[name]; remote || req.Address != "" {
			if !remote {
				writeError(w, http.StatusBadRequest, "bad_request", "address is for remote plugins; "+name+" is launched from a file")
				return
			}
			if req.Address == "" || req.Path != "" {
				writeError(w, http.StatusBadRequest, "bad_request", name+" is remote: swap it with address alone")
				return
			}
			rem.Address = req.Address
			p, _ := PrincipalFrom(ctx)
			s.logger.Info("admin swap", "principal", p.Name, "plugin", name, "address", req.Address)
			err = s.deps.Cluster.Swap(ctx, name, manager.Spec{Name: name, Remote: &rem})
			break
		}
		if req.Path == "" {
			writeError(w, http.StatusBadRequest, "bad_request", "path is required")
			return
		}
		if b, herr := hex.DecodeString(req.SHA256); herr != nil || len(b) != 32 {
			writeError(w, http.StatusBadRequest, "bad_request", "sha256 must be 64 hex digits: the new file is pinned")
			return
		}
		path, perr := s.swapPath(name, req.Path)
		if perr != nil {
			writeError(w, perr.status, perr.reason, perr.msg)
			return
		}
		// Pinned scripts must come from the same place as the plugin: the
		// hash proves what they are, the directory who may have put them.
		for _, f := range req.Files {
			if _, ferr := s.swapPath(name, f.Path); ferr != nil {
				writeError(w, ferr.status, ferr.reason, "files: "+ferr.msg)
				return
			}
		}
		p, _ := PrincipalFrom(ctx)
		s.logger.Info("admin swap", "principal", p.Name, "plugin", name, "path", path, "sha256", strings.ToLower(req.SHA256))
		err = s.deps.Cluster.Swap(ctx, name, manager.Spec{Name: name, Path: path, SHA256: strings.ToLower(req.SHA256), Args: req.Args, Env: req.Env, Files: req.Files})
	case "canary", "shadow":
		var ok bool
		if ok, err = s.startRelease(w, r, name, op); !ok {
			return
		}
	case "promote":
		err = s.deps.Cluster.EndRelease(ctx, name, true)
	case "abort":
		err = s.deps.Cluster.EndRelease(ctx, name, false)
	case "rollback":
		err = s.deps.Cluster.Rollback(ctx, name)
	case "disable":
		err = s.deps.Cluster.Disable(ctx, name)
	case "enable":
		err = s.deps.Cluster.Enable(ctx, name)
	case "drain":
		// Drain is local to this replica: it stops taking the plugin's
		// events here while the others keep serving them.
		err = s.deps.Local.Drain(ctx, name)
	default:
		writeError(w, http.StatusNotFound, "not_found", "unknown plugin operation "+op)
		return
	}
	switch {
	case errors.Is(err, manager.ErrUnknownPlugin):
		writeError(w, http.StatusNotFound, "unknown_plugin", err.Error())
	case errors.Is(err, manager.ErrNoRelease):
		writeError(w, http.StatusConflict, "no_release", err.Error())
	case errors.Is(err, manager.ErrRolledBack):
		writeError(w, http.StatusConflict, "rolled_back", err.Error())
	case err != nil:
		writeError(w, http.StatusConflict, "failed", err.Error())
	default:
		p, _ := PrincipalFrom(ctx)
		s.logger.Info("admin operation done", "principal", p.Name, "plugin", name, "op", r.PathValue("op"))
		views, _, verr := s.views(ctx)
		if verr != nil || views[name] == nil {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "plugin": views[name]})
	}
}

// dlqView is a dead letter with its decoded event.
type dlqView struct {
	dlq.Entry
	Event json.RawMessage `json:"event,omitempty"`
}

func (s *Server) needDLQ(w http.ResponseWriter) bool {
	if s.deps.DeadLetters == nil {
		writeError(w, http.StatusNotImplemented, "no_index", "dead letters are not indexed on this replica")
		return false
	}
	return true
}

// queryLimit reads the ?limit= of a list request: 100 when absent, else
// 1..max; a bad value is answered 400.
func queryLimit(w http.ResponseWriter, r *http.Request, max int) (int, bool) {
	l := r.URL.Query().Get("limit")
	if l == "" {
		return 100, true
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 || n > max {
		writeError(w, http.StatusBadRequest, "bad_request", "limit must be 1.."+strconv.Itoa(max))
		return 0, false
	}
	return n, true
}

func (s *Server) listDLQ(w http.ResponseWriter, r *http.Request) {
	name, ok := s.pluginName(w, r, "plugin")
	if !ok || !s.needDLQ(w) {
		return
	}
	limit, ok := queryLimit(w, r, 10000)
	if !ok {
		return
	}
	list, err := s.deps.DeadLetters.List(r.Context(), name, limit)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	total, _ := s.deps.DeadLetters.Count(r.Context(), name)
	for i := range list {
		list[i].Payload = nil // listed without bodies; show has them
	}
	writeJSON(w, http.StatusOK, map[string]any{"plugin": name, "total": total, "dead_letters": list})
}

func (s *Server) showDLQ(w http.ResponseWriter, r *http.Request) {
	name, ok := s.pluginName(w, r, "plugin")
	if !ok || !s.needDLQ(w) {
		return
	}
	e, err := s.deps.DeadLetters.Get(r.Context(), name, r.PathValue("id"))
	if errors.Is(err, dlq.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	v := dlqView{Entry: e}
	if ev, err := envelope.Decode(e.Payload); err == nil {
		b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(ev)
		v.Event = b
	}
	writeJSON(w, http.StatusOK, v)
}

type selection struct {
	IDs []string `json:"ids"`
	All bool     `json:"all"`
}

// selected resolves a selection body to entries.
func (s *Server) selected(w http.ResponseWriter, r *http.Request, name string) ([]dlq.Entry, bool) {
	var sel selection
	if !decode(w, r, &sel) {
		return nil, false
	}
	if sel.All == (len(sel.IDs) > 0) {
		writeError(w, http.StatusBadRequest, "bad_request", `give either "ids" or "all": true`)
		return nil, false
	}
	ctx := r.Context()
	if sel.All {
		list, err := s.deps.DeadLetters.List(ctx, name, 0)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
			return nil, false
		}
		return list, true
	}
	out := make([]dlq.Entry, 0, len(sel.IDs))
	for _, id := range sel.IDs {
		e, err := s.deps.DeadLetters.Get(ctx, name, id)
		if errors.Is(err, dlq.ErrNotFound) {
			writeError(w, http.StatusNotFound, "not_found", err.Error())
			return nil, false
		}
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
			return nil, false
		}
		out = append(out, e)
	}
	return out, true
}

func (s *Server) replayDLQ(w http.ResponseWriter, r *http.Request) {
	name, ok := s.pluginName(w, r, "plugin")
	if !ok || !s.needDLQ(w) {
		return
	}
	entries, ok := s.selected(w, r, name)
	if !ok {
		return
	}
	done := 0
	for _, e := range entries {
		if err := s.deps.Replayer.Replay(r.Context(), e); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": err.Error(), "reason": "replay_failed", "replayed": done})
			return
		}
		done++
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "replayed": done})
}

func (s *Server) purgeDLQ(w http.ResponseWriter, r *http.Request) {
	name, ok := s.pluginName(w, r, "plugin")
	if !ok || !s.needDLQ(w) {
		return
	}
	entries, ok := s.selected(w, r, name)
	if !ok {
		return
	}
	done := 0
	for _, e := range entries {
		if err := s.deps.DeadLetters.Delete(r.Context(), name, e.ID); err != nil && !errors.Is(err, dlq.ErrNotFound) {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": err.Error(), "reason": "purge_failed", "purged": done})
			return
		}
		done++
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "purged": done})
}
