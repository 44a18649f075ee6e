package admin

import (
	"errors"
	"net/http"
	"slices"
	"strconv"

	"github.com/larkway/larkway/core/internal/action"
)

// Failed actions are actions whose Lark call finally failed; they are
// kept in one list for every app and plugin (not per plugin like event
// dead letters), newest first.

func (s *Server) needFailed(w http.ResponseWriter) bool {
	if s.deps.FailedActions == nil || s.deps.ActionReplayer == nil {
		writeError(w, http.StatusNotImplemented, "no_failed_actions", "failed actions are not available on this replica")
		return false
	}
	return true
}

// failedOf lists the failed actions of plugin ("" for all), newest first,
// at most limit (≤ 0: all).
func (s *Server) failedOf(r *http.Request, plugin string, limit int) ([]action.FailedAction, error) {
	if plugin == "" {
		return s.deps.FailedActions.List(r.Context(), limit)
	}
	all, err := s.deps.FailedActions.List(r.Context(), 0)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, f := range all {
		if f.Plugin == plugin && (limit <= 0 || len(out) < limit) {
			out = append(out, f)
		}
	}
	return out, nil
}

func (s *Server) listFailed(w http.ResponseWriter, r *http.Request) {
	if !s.needFailed(w) {
		return
	}
	limit, ok := queryLimit(w, r, action.DefaultFailedMax)
	if !ok {
		return
	}
	plugin := r.URL.Query().Get("plugin")
	if plugin != "" && !nameRE.MatchString(plugin) {
		writeError(w, http.StatusBadRequest, "bad_name", strconv.Quote(plugin)+" is not a plugin name")
		return
	}
	list, err := s.failedOf(r, plugin, limit)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	total, _ := s.deps.FailedActions.Count(r.Context())
	for i := range list {
		list[i].Action = nil // listed without bodies; show has them
	}
	writeJSON(w, http.StatusOK, map[string]any{"total": total, "order": "newest_first", "failed_actions": list})
}

func (s *Server) showFailed(w http.ResponseWriter, r *http.Request) {
	if !s.needFailed(w) {
		return
	}
	f, err := s.deps.FailedActions.Get(r.Context(), r.PathValue("id"))
	if errors.Is(err, action.ErrFailedNotFound) {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, f)
}

type failedSelection struct {
	IDs    []string `json:"ids"`
	All    bool     `json:"all"`
	Plugin string   `json:"plugin"`
}

// selectedFailed resolves a selection body to ids, oldest first (so a
// replay of all keeps their order).
func (s *Server) selectedFailed(w http.ResponseWriter, r *http.Request) ([]string, bool) {
	var sel failedSelection
	if !decode(w, r, &sel) {
		return nil, false
	}
	if sel.All == (len(sel.IDs) > 0) {
		writeError(w, http.StatusBadRequest, "bad_request", `give either "ids" or "all": true`)
		return nil, false
	}
	if sel.Plugin != "" && !sel.All {
		writeError(w, http.StatusBadRequest, "bad_request", `"plugin" goes with "all": true`)
		return nil, false
	}
	if sel.All {
		list, err := s.failedOf(r, sel.Plugin, 0)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
			return nil, false
		}
		ids := make([]string, 0, len(list))
		for _, f := range slices.Backward(list) {
			ids = append(ids, f.ID)
		}
		return ids, true
	}
	for _, id := range sel.IDs {
		_, err := s.deps.FailedActions.Get(r.Context(), id)
		if errors.Is(err, action.ErrFailedNotFound) {
			writeError(w, http.StatusNotFound, "not_found", err.Error())
			return nil, false
		}
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
			return nil, false
		}
	}
	return sel.IDs, true
}

type replayFailure struct {
	ID    string `json:"id"`
	Error string `json:"error"`
}

// replayFailed replays every selected action, going on after a failure (one
// chat the bot left must not hold back the others); any failure answers 502
// with what was replayed and what was not. Replayed actions leave the list.
func (s *Server) replayFailed(w http.ResponseWriter, r *http.Request) {
	if !s.needFailed(w) {
		return
	}
	ids, ok := s.selectedFailed(w, r)
	if !ok {
		return
	}
	done, failures := 0, []replayFailure{}
	for _, id := range ids {
		err := s.deps.ActionReplayer.ReplayFailed(r.Context(), id)
		switch {
		case err == nil:
			done++
		case errors.Is(err, action.ErrFailedNotFound):
			// Replayed or purged meanwhile (by another operator or replica).
		default:
			failures = append(failures, replayFailure{ID: id, Error: err.Error()})
		}
	}
	if len(failures) > 0 {
		writeJSON(w, http.StatusBadGateway, map[string]any{"error": strconv.Itoa(len(failures)) + " failed action(s) could not be replayed; they stay listed",
			"reason": "replay_failed", "replayed": done, "failed": failures})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "replayed": done})
}

func (s *Server) purgeFailed(w http.ResponseWriter, r *http.Request) {
	if !s.needFailed(w) {
		return
	}
	ids, ok := s.selectedFailed(w, r)
	if !ok {
		return
	}
	done := 0
	for _, id := range ids {
		if err := s.deps.FailedActions.Delete(r.Context(), id); err != nil && !errors.Is(err, action.ErrFailedNotFound) {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": err.Error(), "reason": "purge_failed", "purged": done})
			return
		}
		done++
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "purged": done})
}
