package admin

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/cluster"
	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/manager"
)

// releaseRequest starts a canary or a shadow.
type releaseRequest struct {
	swapRequest
	// Percent of chats (by a hash of the chat id), and/or Chats by id.
	Percent float64  `json:"percent,omitempty"`
	Chats   []string `json:"chats,omitempty"`
	// PromoteAfter is a number of deliveries ("500") or a duration
	// ("30m"); empty: promoted by hand.
	PromoteAfter  string  `json:"promote_after,omitempty"`
	MaxErrorRate  float64 `json:"max_error_rate,omitempty"`
	MinDeliveries int64   `json:"min_deliveries,omitempty"`
}

// parsePromoteAfter reads "N" (deliveries) or a Go duration.
func parsePromoteAfter(s string) (int64, string, error) {
	if s == "" {
		return 0, "", nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 {
		return n, "", nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return 0, d.String(), nil
	}
	return 0, "", fmt.Errorf("promote_after %q is neither a number of deliveries nor a duration", s)
}

// startRelease serves POST /v1/plugins/{name}/canary and /shadow. It
// reports false when it already answered (a bad request), else the
// cluster's error.
func (s *Server) startRelease(w http.ResponseWriter, r *http.Request, name, op string) (bool, error) {
	var req releaseRequest
	if !decode(w, r, &req) {
		return false, nil
	}
	spec, ok := s.candidateSpec(w, name, req.swapRequest)
	if !ok {
		return false, nil
	}
	n, dur, err := parsePromoteAfter(req.PromoteAfter)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return false, nil
	}
	rel := cluster.Release{Release: manager.Release{Mode: dispatch.Mode(op),
		Spec:  spec,
		Split: dispatch.Split{Percent: req.Percent, Chats: req.Chats}},
		PromoteAfterDeliveries: n, PromoteAfterDuration: dur, MaxErrorRate: req.MaxErrorRate, MinDeliveries: req.MinDeliveries}
	if rel.Mode == dispatch.ModeShadow && (n > 0 || dur != "") {
		writeError(w, http.StatusBadRequest, "bad_request", "a shadow is never promoted: promote_after is for canaries")
		return false, nil
	}
	if err := rel.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return false, nil
	}
	p, _ := PrincipalFrom(r.Context())
	where := []any{"path", spec.Path, "sha256", spec.SHA256}
	if spec.Remote != nil {
		where = []any{"address", spec.Remote.Address}
	}
	s.logger.Info("admin release", append([]any{"principal", p.Name, "plugin", name, "mode", op}, append(where,
		"percent", rel.Percent, "chats", len(rel.Chats))...)...)
	if rel.Mode == dispatch.ModeShadow && s.deps.Shadows != nil {
		// The report is about this candidate from its first event.
		if err := s.deps.Shadows.Clear(r.Context(), name); err != nil {
			return true, err
		}
	}
	return true, s.deps.Cluster.StartRelease(r.Context(), name, rel)
}

// candidateSpec is what a canary or shadow of name runs: a remote plugin's
// candidate is its configured remote at another address (the same TLS
// files, so the same certificate checks: it must name the plugin); a
// launched plugin's is a pinned file from where swaps may take them. It
// reports false when it answered a bad request.
func (s *Server) candidateSpec(w http.ResponseWriter, name string, req swapRequest) (manager.Spec, bool) {
	if rem, remote := s.remotes[name]; remote || req.Address != "" {
		switch {
		case !remote:
			writeError(w, http.StatusBadRequest, "bad_request", "address is for remote plugins; "+name+" is launched from a file: give path and sha256")
			return manager.Spec{}, false
		case req.Address == "":
			writeError(w, http.StatusBadRequest, "bad_request", "address is required: "+name+" is a remote plugin, its candidate is an endpoint")
			return manager.Spec{}, false
		case req.Path != "" || req.SHA256 != "" || len(req.Files) > 0 || len(req.Args) > 0 || len(req.Env) > 0:
			writeError(w, http.StatusBadRequest, "bad_request", name+" is remote: give address alone, not path, sha256, files, args or env")
			return manager.Spec{}, false
		}
		rem.Address = req.Address
		return manager.Spec{Name: name, Remote: &rem}, true
	}
	if req.Path == "" {
		writeError(w, http.StatusBadRequest, "bad_request", "path is required")
		return manager.Spec{}, false
	}
	if b, herr := hex.DecodeString(req.SHA256); herr != nil || len(b) != 32 {
		writeError(w, http.StatusBadRequest, "bad_request", "sha256 must be 64 hex digits: the candidate file is pinned")
		return manager.Spec{}, false
	}
	path, perr := s.swapPath(name, req.Path)
	if perr != nil {
		writeError(w, perr.status, perr.reason, perr.msg)
		return manager.Spec{}, false
	}
	for _, f := range req.Files {
		if _, ferr := s.swapPath(name, f.Path); ferr != nil {
			writeError(w, ferr.status, ferr.reason, "files: "+ferr.msg)
			return manager.Spec{}, false
		}
	}
	return manager.Spec{Name: name, Path: path, SHA256: strings.ToLower(req.SHA256), Args: req.Args, Env: req.Env, Files: req.Files}, true
}

// showRelease serves GET /v1/plugins/{name}/release.
func (s *Server) showRelease(w http.ResponseWriter, r *http.Request) {
	name, ok := s.pluginName(w, r, "name")
	if !ok {
		return
	}
	v, err := s.deps.Cluster.ReleaseView(r.Context(), name)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// shadowReport serves GET /v1/plugins/{name}/shadow/report.
func (s *Server) shadowReport(w http.ResponseWriter, r *http.Request) {
	name, ok := s.pluginName(w, r, "name")
	if !ok {
		return
	}
	if s.deps.Shadows == nil {
		writeError(w, http.StatusNotImplemented, "no_records", "shadow results are not recorded on this replica")
		return
	}
	limit, ok := queryLimit(w, r, 100000)
	if !ok {
		return
	}
	sum, err := s.deps.Shadows.Summary(r.Context(), name)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	recs, err := s.deps.Shadows.List(r.Context(), name, limit)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"plugin": name, "summary": sum, "records": recs})
}

// ShadowReplayer feeds a time range of stored events into a plugin's
// shadow (the core, over its bus's history).
type ShadowReplayer interface {
	ReplayToShadow(ctx context.Context, name string, from, to time.Time, split dispatch.Split) (dispatch.ReplayStats, error)
}

type replayRequest struct {
	ToShadow bool      `json:"to_shadow"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Percent  float64   `json:"percent,omitempty"`
	Chats    []string  `json:"chats,omitempty"`
}

// replayToShadow serves POST /v1/plugins/{name}/replay. It answers when the
// replay is done: {"status": "ok", "events", "replayed", "differ"}.
func (s *Server) replayToShadow(w http.ResponseWriter, r *http.Request) {
	name, ok := s.pluginName(w, r, "name")
	if !ok {
		return
	}
	if s.deps.ShadowReplayer == nil {
		writeError(w, http.StatusNotImplemented, "no_history", "this replica cannot read stored history")
		return
	}
	var req replayRequest
	if !decode(w, r, &req) {
		return
	}
	switch {
	case !req.ToShadow:
		writeError(w, http.StatusBadRequest, "bad_request", `history is replayed into a shadow only: set "to_shadow": true`)
		return
	case req.From.IsZero() || req.To.IsZero() || !req.From.Before(req.To):
		writeError(w, http.StatusBadRequest, "bad_request", `"from" and "to" (RFC 3339) must be set, "from" before "to"`)
		return
	case req.Percent < 0 || req.Percent > 100:
		writeError(w, http.StatusBadRequest, "bad_request", "percent must be 0..100")
		return
	}
	split := dispatch.Split{Percent: req.Percent, Chats: req.Chats}
	if split.Percent == 0 && len(split.Chats) == 0 {
		split.Percent = 100
	}
	p, _ := PrincipalFrom(r.Context())
	s.logger.Info("admin replay into shadow", "principal", p.Name, "plugin", name, "from", req.From, "to", req.To)
	st, err := s.deps.ShadowReplayer.ReplayToShadow(r.Context(), name, req.From, req.To, split)
	switch {
	case errors.Is(err, manager.ErrUnknownPlugin):
		writeError(w, http.StatusNotFound, "unknown_plugin", err.Error())
	case errors.Is(err, dispatch.ErrNoShadow):
		writeError(w, http.StatusConflict, "no_shadow", err.Error())
	case errors.Is(err, bus.ErrNoHistory):
		writeError(w, http.StatusNotImplemented, "no_history", err.Error())
	case err != nil:
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": err.Error(), "reason": "replay_failed",
			"events": st.Events, "replayed": st.Replayed, "differ": st.Differ})
	default:
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "events": st.Events, "replayed": st.Replayed, "differ": st.Differ})
	}
}
