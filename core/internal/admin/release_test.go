package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/cluster"
	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/dlq"
	"github.com/larkway/larkway/core/internal/manager"
	"github.com/larkway/larkway/core/internal/shadow"
)

type fakeShadowReplayer struct{ got []string }

func (f *fakeShadowReplayer) ReplayToShadow(_ context.Context, name string, from, to time.Time, split dispatch.Split) (dispatch.ReplayStats, error) {
	if name == "noshadow" {
		return dispatch.ReplayStats{}, dispatch.ErrNoShadow
	}
	f.got = append(f.got, name+" "+from.UTC().Format(time.RFC3339)+" "+to.UTC().Format(time.RFC3339))
	return dispatch.ReplayStats{Events: 3, Replayed: 2, Differ: 1}, nil
}

func TestReleaseRequests(t *testing.T) {
	const ok = `"sha256":"` + sha + `"`
	tests := []struct {
		name, method, path, body string
		status                   int
		reason, op               string
	}{
		{"canary by percent", "POST", "/v1/plugins/echo/canary", `{"path":"@DIR@/echo2",` + ok + `,"percent":10,"promote_after":"500","max_error_rate":0.01}`, 200, "", "canary echo @DIR@/echo2 10 []"},
		{"canary by chats", "POST", "/v1/plugins/echo/canary", `{"path":"@DIR@/echo2",` + ok + `,"chats":["oc_1"],"promote_after":"30m"}`, 200, "", "canary echo @DIR@/echo2 0 [oc_1]"},
		{"canary without chats", "POST", "/v1/plugins/echo/canary", `{"path":"@DIR@/echo2",` + ok + `}`, 400, "bad_request", ""},
		{"canary bad promote_after", "POST", "/v1/plugins/echo/canary", `{"path":"@DIR@/echo2",` + ok + `,"percent":5,"promote_after":"soon"}`, 400, "bad_request", ""},
		{"canary bad error rate", "POST", "/v1/plugins/echo/canary", `{"path":"@DIR@/echo2",` + ok + `,"percent":5,"max_error_rate":3}`, 400, "bad_request", ""},
		{"canary outside the plugin dir", "POST", "/v1/plugins/echo/canary", `{"path":"/bin/sh",` + ok + `,"percent":5}`, 403, "path_not_allowed", ""},
		{"canary without sha", "POST", "/v1/plugins/echo/canary", `{"path":"@DIR@/echo2","percent":5}`, 400, "bad_request", ""},
		{"shadow of every chat", "POST", "/v1/plugins/echo/shadow", `{"path":"@DIR@/echo2",` + ok + `}`, 200, "", "shadow echo @DIR@/echo2 100 []"},
		{"shadow with a policy", "POST", "/v1/plugins/echo/shadow", `{"path":"@DIR@/echo2",` + ok + `,"promote_after":"10"}`, 400, "bad_request", ""},
		{"canary of a remote plugin by address", "POST", "/v1/plugins/triage/canary", `{"address":"10.0.0.2:7443","percent":5}`, 200, "",
			"canary triage remote 10.0.0.2:7443 ca.pem core.pem core-key.pem 5 []"},
		{"shadow of a remote plugin by address", "POST", "/v1/plugins/triage/shadow", `{"address":"dns:///triage-v2:7443"}`, 200, "",
			"shadow triage remote dns:///triage-v2:7443 ca.pem core.pem core-key.pem 100 []"},
		{"canary of a remote plugin without address", "POST", "/v1/plugins/triage/canary", `{"percent":5}`, 400, "bad_request:address is required", ""},
		{"canary of a remote plugin by file", "POST", "/v1/plugins/triage/canary", `{"path":"@DIR@/echo2",` + ok + `,"percent":5}`, 400, "bad_request:address is required", ""},
		{"canary of a remote plugin by address and file", "POST", "/v1/plugins/triage/canary", `{"address":"10.0.0.2:7443","path":"@DIR@/echo2",` + ok + `,"percent":5}`, 400, "bad_request:give address alone", ""},
		{"shadow of a remote plugin without address", "POST", "/v1/plugins/triage/shadow", `{}`, 400, "bad_request:address is required", ""},
		{"canary of a launched plugin by address", "POST", "/v1/plugins/echo/canary", `{"address":"10.0.0.2:7443","percent":5}`, 400, "bad_request:address is for remote plugins", ""},
		{"shadow of a launched plugin by address", "POST", "/v1/plugins/echo/shadow", `{"address":"10.0.0.2:7443"}`, 400, "bad_request:address is for remote plugins", ""},
		{"canary of a remote plugin, bad split", "POST", "/v1/plugins/triage/canary", `{"address":"10.0.0.2:7443","percent":500}`, 400, "bad_request", ""},
		{"promote", "POST", "/v1/plugins/echo/promote", "", 200, "", "promote echo"},
		{"abort", "POST", "/v1/plugins/echo/abort", "", 200, "", "abort echo"},
		{"release view", "GET", "/v1/plugins/echo/release", "", 200, "", ""},
		{"shadow report", "GET", "/v1/plugins/echo/shadow/report?limit=5", "", 200, "", ""},
		{"shadow report bad limit", "GET", "/v1/plugins/echo/shadow/report?limit=0", "", 400, "bad_request", ""},
		{"replay", "POST", "/v1/plugins/echo/replay", `{"to_shadow":true,"from":"2026-01-01T00:00:00Z","to":"2026-01-02T00:00:00Z"}`, 200, "", ""},
		{"replay not to a shadow", "POST", "/v1/plugins/echo/replay", `{"from":"2026-01-01T00:00:00Z","to":"2026-01-02T00:00:00Z"}`, 400, "bad_request", ""},
		{"replay backwards", "POST", "/v1/plugins/echo/replay", `{"to_shadow":true,"from":"2026-01-02T00:00:00Z","to":"2026-01-01T00:00:00Z"}`, 400, "bad_request", ""},
		{"replay without a shadow", "POST", "/v1/plugins/noshadow/replay", `{"to_shadow":true,"from":"2026-01-01T00:00:00Z","to":"2026-01-02T00:00:00Z"}`, 409, "no_shadow", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := pluginDir(t)
			fc := &fakeCluster{}
			shadows := shadow.NewMemory(0)
			_ = shadows.Add(context.Background(), shadow.Record{Plugin: "echo", EventID: "ev1", Differs: true})
			s, err := New(Config{Tokens: []Token{{Name: "ops", Secret: "secret-token", Role: RoleOperator}},
				PluginPaths:   map[string]string{"echo": filepath.Join(dir, "echo"), "noshadow": filepath.Join(dir, "echo")},
				PluginRemotes: map[string]manager.Remote{"triage": {Address: "10.0.0.1:7443", CAFile: "ca.pem", CertFile: "core.pem", KeyFile: "core-key.pem"}}},
				Deps{Cluster: fc, Store: cluster.NewMemory(), Local: &fakeLocal{}, DeadLetters: dlq.NewMemory(), Replayer: &replayer{},
					Shadows: shadows, ShadowReplayer: &fakeShadowReplayer{}}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			rec := do(s, tt.method, tt.path, "secret-token", strings.ReplaceAll(tt.body, "@DIR@", dir))
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("not JSON: %s", rec.Body)
			}
			// reason, or reason:words of the message.
			reason, words, _ := strings.Cut(tt.reason, ":")
			if tt.reason != "" && (body["reason"] != reason || !strings.Contains(fmt.Sprint(body["message"], body["error"]), words)) {
				t.Fatalf("reason %v (%v), want %s", body["reason"], body, tt.reason)
			}
			if tt.status != 200 && len(fc.ops) != 0 {
				t.Fatalf("a refused request reached the cluster: %v", fc.ops)
			}
			if want := strings.ReplaceAll(tt.op, "@DIR@", dir); want != "" && (len(fc.ops) != 1 || fc.ops[0] != want) {
				t.Fatalf("ops %v, want %s", fc.ops, want)
			}
			if tt.status == 200 && tt.op == "" && tt.method == "POST" && body["replayed"] != float64(2) {
				t.Fatalf("replay answer %v", body)
			}
			if strings.Contains(tt.path, "shadow/report") && tt.status == 200 {
				if sum, _ := body["summary"].(map[string]any); sum["events"] != float64(1) {
					t.Fatalf("report %v", body)
				}
			}
		})
	}
}
