package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/cluster"
	"github.com/larkway/larkway/core/internal/dlq"
)

// actionReplayer replays from a store like the executor: success removes
// the entry, except for actions of plugin "broken", which Lark refuses.
type actionReplayer struct {
	store *action.MemoryFailedStore
	got   []string
}

func (a *actionReplayer) ReplayFailed(ctx context.Context, id string) error {
	f, err := a.store.Get(ctx, id)
	if err != nil {
		return err
	}
	a.got = append(a.got, f.EventID)
	if f.Plugin == "broken" {
		return errors.New("230002 bot not in chat")
	}
	return a.store.Delete(ctx, id)
}

// setupFailed serves with an operator ("op-token") and a viewer
// ("view-token"), and failed actions ev0 (echo), ev1 (broken), ev2 (echo),
// oldest first.
func setupFailed(t *testing.T) (*Server, *action.MemoryFailedStore, *actionReplayer, []action.FailedAction) {
	t.Helper()
	store := &action.MemoryFailedStore{}
	for i, p := range []string{"echo", "broken", "echo"} {
		if err := store.Put(t.Context(), action.FailedAction{Plugin: p, AppID: "cli_a", EventID: fmt.Sprint("ev", i), Kind: "reply",
			Action: json.RawMessage(`{"reply":{}}`), Error: "HTTP 502", At: time.Unix(int64(i), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	rp := &actionReplayer{store: store}
	s, err := New(Config{Tokens: []Token{{Name: "ops", Secret: "op-token", Role: RoleOperator}, {Name: "watch", Secret: "view-token", Role: RoleViewer}}},
		Deps{Cluster: &fakeCluster{}, Store: cluster.NewMemory(), Local: &fakeLocal{}, DeadLetters: dlq.NewMemory(), Replayer: &replayer{},
			FailedActions: store, ActionReplayer: rp}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	list, _ := store.List(t.Context(), 0)
	return s, store, rp, list
}

func TestFailedActionRequests(t *testing.T) {
	tests := []struct {
		name, method, path, token, body string
		status                          int
		reason                          string
		left                            int // entries left afterwards
	}{
		{"viewer lists", "GET", "/v1/actions/failed", "view-token", "", 200, "", 3},
		{"viewer shows", "GET", "/v1/actions/failed/@ECHO@", "view-token", "", 200, "", 3},
		{"viewer may not replay", "POST", "/v1/actions/failed/replay", "view-token", `{"all":true}`, 403, "forbidden", 3},
		{"viewer may not purge", "DELETE", "/v1/actions/failed", "view-token", `{"all":true}`, 403, "forbidden", 3},
		{"no token", "GET", "/v1/actions/failed", "", "", 401, "unauthorized", 3},
		{"bad limit", "GET", "/v1/actions/failed?limit=0", "op-token", "", 400, "bad_request", 3},
		{"bad plugin", "GET", "/v1/actions/failed?plugin=Bad/Name", "op-token", "", 400, "bad_name", 3},
		{"show unknown", "GET", "/v1/actions/failed/nope", "op-token", "", 404, "not_found", 3},
		{"replay unknown", "POST", "/v1/actions/failed/replay", "op-token", `{"ids":["nope"]}`, 404, "not_found", 3},
		{"purge unknown", "DELETE", "/v1/actions/failed", "op-token", `{"ids":["@ECHO@","nope"]}`, 404, "not_found", 3},
		{"replay nothing", "POST", "/v1/actions/failed/replay", "op-token", `{}`, 400, "bad_request", 3},
		{"replay ids and all", "POST", "/v1/actions/failed/replay", "op-token", `{"ids":["@ECHO@"],"all":true}`, 400, "bad_request", 3},
		{"plugin without all", "POST", "/v1/actions/failed/replay", "op-token", `{"ids":["@ECHO@"],"plugin":"echo"}`, 400, "bad_request", 3},
		{"operator replays one", "POST", "/v1/actions/failed/replay", "op-token", `{"ids":["@ECHO@"]}`, 200, "", 2},
		{"operator replays a plugin's", "POST", "/v1/actions/failed/replay", "op-token", `{"all":true,"plugin":"echo"}`, 200, "", 1},
		{"replay all: one refused again", "POST", "/v1/actions/failed/replay", "op-token", `{"all":true}`, 502, "replay_failed", 1},
		{"operator purges one", "DELETE", "/v1/actions/failed", "op-token", `{"ids":["@ECHO@"]}`, 200, "", 2},
		{"operator purges all", "DELETE", "/v1/actions/failed", "op-token", `{"all":true}`, 200, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, store, _, list := setupFailed(t)
			echo := list[0].ID // ev2, newest
			rec := do(s, tt.method, strings.ReplaceAll(tt.path, "@ECHO@", echo), tt.token, strings.ReplaceAll(tt.body, "@ECHO@", echo))
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("not JSON: %s", rec.Body)
			}
			if tt.reason != "" && body["reason"] != tt.reason {
				t.Fatalf("reason %v, want %s", body["reason"], tt.reason)
			}
			if n, _ := store.Count(t.Context()); n != tt.left {
				t.Fatalf("%d failed actions left, want %d", n, tt.left)
			}
		})
	}
}

func TestFailedActionList(t *testing.T) {
	s, _, rp, list := setupFailed(t)
	var out struct {
		Total         int                   `json:"total"`
		FailedActions []action.FailedAction `json:"failed_actions"`
	}
	rec := do(s, "GET", "/v1/actions/failed?limit=2", "view-token", "")
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if out.Total != 3 || len(out.FailedActions) != 2 || out.FailedActions[0].EventID != "ev2" || out.FailedActions[1].EventID != "ev1" ||
		out.FailedActions[0].Action != nil {
		t.Fatalf("list newest first, limited, without bodies: %s", rec.Body)
	}
	rec = do(s, "GET", "/v1/actions/failed?plugin=echo", "view-token", "")
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	if len(out.FailedActions) != 2 || out.FailedActions[0].EventID != "ev2" || out.FailedActions[1].EventID != "ev0" {
		t.Fatalf("plugin filter: %s", rec.Body)
	}
	rec = do(s, "GET", "/v1/actions/failed/"+list[1].ID, "view-token", "")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"reply"`) || !strings.Contains(rec.Body.String(), list[1].ID) {
		t.Fatalf("show: %d %s", rec.Code, rec.Body)
	}
	// Replaying all goes oldest first, and reports what stayed.
	rec = do(s, "POST", "/v1/actions/failed/replay", "op-token", `{"all":true}`)
	if strings.Join(rp.got, ",") != "ev0,ev1,ev2" || !strings.Contains(rec.Body.String(), list[1].ID) || !strings.Contains(rec.Body.String(), `"replayed": 2`) {
		t.Fatalf("replay all: order %v, answer %s", rp.got, rec.Body)
	}
}

func TestFailedActionsUnavailable(t *testing.T) {
	s, _, _, _, _ := setup(t)
	if rec := do(s, "GET", "/v1/actions/failed", "secret-token", ""); rec.Code != 501 {
		t.Fatalf("without a store: %d %s", rec.Code, rec.Body)
	}
}
