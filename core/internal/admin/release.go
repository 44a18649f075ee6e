package admin

import (
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

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
// reports false when it already answered (a bad request).
func (s *Server) startRelease(w http.ResponseWriter, r *http.Request, name, op string) (error, bool) {
	var req releaseRequest
	if !decode(w, r, &req) {
		return nil, false
	}
	if req.Path == "" {
		writeError(w, http.StatusBadRequest, "bad_request", "path is required")
		return nil, false
	}
	if b, herr := hex.DecodeString(req.SHA256); herr != nil || len(b) != 32 {
		writeError(w, http.StatusBadRequest, "bad_request", "sha256 must be 64 hex digits: the candidate file is pinned")
		return nil, false
	}
	path, perr := s.swapPath(name, req.Path)
	if perr != nil {
		writeError(w, perr.status, perr.reason, perr.msg)
		return nil, false
	}
	for _, f := range req.Files {
		if _, ferr := s.swapPath(name, f.Path); ferr != nil {
			writeError(w, ferr.status, ferr.reason, "files: "+ferr.msg)
			return nil, false
		}
	}
	n, dur, err := parsePromoteAfter(req.PromoteAfter)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return nil, false
	}
	rel := cluster.Release{Release: manager.Release{Mode: dispatch.Mode(op),
		Spec:  manager.Spec{Name: name, Path: path, SHA256: strings.ToLower(req.SHA256), Args: req.Args, Env: req.Env, Files: req.Files},
		Split: dispatch.Split{Percent: req.Percent, Chats: req.Chats}},
		PromoteAfterDeliveries: n, PromoteAfterDuration: dur, MaxErrorRate: req.MaxErrorRate, MinDeliveries: req.MinDeliveries}
	if rel.Mode == dispatch.ModeShadow && (n > 0 || dur != "") {
		writeError(w, http.StatusBadRequest, "bad_request", "a shadow is never promoted: promote_after is for canaries")
		return nil, false
	}
	if err := rel.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return nil, false
	}
	p, _ := PrincipalFrom(r.Context())
	s.logger.Info("admin release", "principal", p.Name, "plugin", name, "mode", op, "path", path, "sha256", rel.Spec.SHA256,
		"percent", rel.Percent, "chats", len(rel.Chats))
	if rel.Mode == dispatch.ModeShadow && s.deps.Shadows != nil {
		// The report is about this candidate from its first event.
		if err := s.deps.Shadows.Clear(r.Context(), name); err != nil {
			return err, true
		}
	}
	return s.deps.Cluster.StartRelease(r.Context(), name, rel), true
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
	limit := 100
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100000 {
			writeError(w, http.StatusBadRequest, "bad_request", "limit must be 1..100000")
			return
		}
		limit = n
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
