package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/cluster"
	"github.com/larkway/larkway/core/internal/dlq"
	"github.com/larkway/larkway/core/internal/manager"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

type fakeCluster struct {
	mu   sync.Mutex
	ops  []string
	fail error
}

func (f *fakeCluster) op(s string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, s)
	return f.fail
}
func (f *fakeCluster) Swap(_ context.Context, n string, s manager.Spec) error {
	return f.op("swap " + n + " " + s.Path + " " + s.SHA256)
}
func (f *fakeCluster) Rollback(_ context.Context, n string) error { return f.op("rollback " + n) }
func (f *fakeCluster) Disable(_ context.Context, n string) error  { return f.op("disable " + n) }
func (f *fakeCluster) Enable(_ context.Context, n string) error   { return f.op("enable " + n) }
func (f *fakeCluster) Status() cluster.ReplicaStatus {
	return cluster.ReplicaStatus{ID: "self", Version: "t", State: "serving",
		Plugins: []manager.Status{{Name: "echo", State: manager.StateServing, Version: "1.0.0", Spec: manager.Spec{Name: "echo", Path: "/p/echo"}}}}
}

type fakeLocal struct{ drained []string }

func (f *fakeLocal) Manifest(name string) (*pluginv1.Manifest, error) {
	if name != "echo" {
		return nil, manager.ErrUnknownPlugin
	}
	return &pluginv1.Manifest{Name: "echo", Version: "1.0.0"}, nil
}
func (f *fakeLocal) Drain(_ context.Context, n string) error {
	f.drained = append(f.drained, n)
	return nil
}

type replayer struct{ got []string }

func (r *replayer) Replay(_ context.Context, e dlq.Entry) error {
	r.got = append(r.got, e.ID)
	return nil
}

// pluginDir makes a directory holding the configured echo plugin and the
// versions tests swap to; it returns its real path.
func pluginDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"echo", "echo2", "v2", "v3"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// setup serves with the operator token "secret-token", echo configured at
// <dir>/echo, and three dead letters.
func setup(t *testing.T) (*Server, *fakeCluster, *dlq.Memory, *replayer, string) {
	t.Helper()
	dir := pluginDir(t)
	s, fc, idx, rp := setupWith(t, Config{Tokens: []Token{{Name: "ops", Secret: "secret-token", Role: RoleOperator}},
		PluginPaths: map[string]string{"echo": filepath.Join(dir, "echo")}})
	return s, fc, idx, rp, dir
}

func setupWith(t *testing.T, cfg Config) (*Server, *fakeCluster, *dlq.Memory, *replayer) {
	t.Helper()
	fc, idx, rp := &fakeCluster{}, dlq.NewMemory(), &replayer{}
	for i := range 3 {
		_ = idx.Add(context.Background(), dlq.Entry{ID: fmt.Sprintf("d%d", i), Plugin: "echo", Reason: "boom", Payload: []byte{},
			DeadAt: time.Unix(int64(i), 0)})
	}
	s, err := New(cfg, Deps{Cluster: fc, Store: cluster.NewMemory(), Local: &fakeLocal{}, DeadLetters: idx, Replayer: rp},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return s, fc, idx, rp
}

func do(s *Server, method, path, token, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

const sha = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func TestRequests(t *testing.T) {
	tests := []struct {
		name, method, path, token, body string
		status                          int
		reason                          string
	}{
		{"no token", "GET", "/v1/plugins", "", "", 401, "unauthorized"},
		{"wrong token", "GET", "/v1/plugins", "nope", "", 401, "unauthorized"},
		{"token prefix only", "GET", "/v1/plugins", "secret", "", 401, "unauthorized"},
		{"list", "GET", "/v1/plugins", "secret-token", "", 200, ""},
		{"describe", "GET", "/v1/plugins/echo", "secret-token", "", 200, ""},
		{"describe unknown", "GET", "/v1/plugins/nope", "secret-token", "", 404, "unknown_plugin"},
		{"bad name", "GET", "/v1/plugins/..%2Fetc", "secret-token", "", 400, "bad_name"},
		{"unknown endpoint", "GET", "/v2/x", "secret-token", "", 404, "not_found"},
		{"unknown op", "POST", "/v1/plugins/echo/explode", "secret-token", "", 404, "not_found"},
		{"swap", "POST", "/v1/plugins/echo/swap", "secret-token", `{"path":"@DIR@/echo2","sha256":"` + sha + `"}`, 200, ""},
		{"swap missing file", "POST", "/v1/plugins/echo/swap", "secret-token", `{"path":"@DIR@/nope","sha256":"` + sha + `"}`, 400, "bad_path"},
		{"swap the directory", "POST", "/v1/plugins/echo/swap", "secret-token", `{"path":"@DIR@","sha256":"` + sha + `"}`, 403, "path_not_allowed"},
		{"swap without sha", "POST", "/v1/plugins/echo/swap", "secret-token", `{"path":"@DIR@/echo2"}`, 400, "bad_request"},
		{"swap bad sha", "POST", "/v1/plugins/echo/swap", "secret-token", `{"path":"/p","sha256":"zz"}`, 400, "bad_request"},
		{"swap without path", "POST", "/v1/plugins/echo/swap", "secret-token", `{"sha256":"` + sha + `"}`, 400, "bad_request"},
		{"swap unknown field", "POST", "/v1/plugins/echo/swap", "secret-token", `{"path":"/p","sha256":"` + sha + `","force":true}`, 400, "bad_request"},
		{"swap a launched plugin to an address", "POST", "/v1/plugins/echo/swap", "secret-token", `{"address":"10.0.0.1:7443"}`, 400, "bad_request"},
		{"swap malformed", "POST", "/v1/plugins/echo/swap", "secret-token", `{"path":`, 400, "bad_request"},
		{"swap oversize", "POST", "/v1/plugins/echo/swap", "secret-token", `{"path":"` + strings.Repeat("a", maxBody) + `"}`, 413, "oversize"},
		{"rollback", "POST", "/v1/plugins/echo/rollback", "secret-token", "", 200, ""},
		{"disable", "POST", "/v1/plugins/echo/disable", "secret-token", "", 200, ""},
		{"enable", "POST", "/v1/plugins/echo/enable", "secret-token", "", 200, ""},
		{"drain", "POST", "/v1/plugins/echo/drain", "secret-token", "", 200, ""},
		{"wrong method", "PUT", "/v1/plugins", "secret-token", "", 404, "not_found"},
		{"dlq list", "GET", "/v1/dlq/echo?limit=2", "secret-token", "", 200, ""},
		{"dlq bad limit", "GET", "/v1/dlq/echo?limit=-1", "secret-token", "", 400, "bad_request"},
		{"dlq show", "GET", "/v1/dlq/echo/d1", "secret-token", "", 200, ""},
		{"dlq show missing", "GET", "/v1/dlq/echo/zz", "secret-token", "", 404, "not_found"},
		{"dlq replay ids", "POST", "/v1/dlq/echo/replay", "secret-token", `{"ids":["d0"]}`, 200, ""},
		{"dlq replay nothing", "POST", "/v1/dlq/echo/replay", "secret-token", `{}`, 400, "bad_request"},
		{"dlq replay both", "POST", "/v1/dlq/echo/replay", "secret-token", `{"ids":["d0"],"all":true}`, 400, "bad_request"},
		{"dlq replay missing", "POST", "/v1/dlq/echo/replay", "secret-token", `{"ids":["nope"]}`, 404, "not_found"},
		{"dlq purge all", "DELETE", "/v1/dlq/echo", "secret-token", `{"all":true}`, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _, _, dir := setup(t)
			rec := do(s, tt.method, tt.path, tt.token, strings.ReplaceAll(tt.body, "@DIR@", dir))
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			if !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
				t.Fatalf("content type %q", rec.Header().Get("Content-Type"))
			}
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("not JSON: %s", rec.Body)
			}
			if tt.reason != "" && body["reason"] != tt.reason {
				t.Fatalf("reason %v, want %s", body["reason"], tt.reason)
			}
		})
	}
}

func TestOperationsReachTheCluster(t *testing.T) {
	s, fc, idx, rp, dir := setup(t)
	do(s, "POST", "/v1/plugins/echo/swap", "secret-token", `{"path":"`+dir+`/v2","sha256":"`+strings.ToUpper(sha)+`"}`)
	if len(fc.ops) != 1 || fc.ops[0] != "swap echo "+dir+"/v2 "+sha {
		t.Fatalf("ops %v", fc.ops)
	}
	fc.fail = fmt.Errorf("x: %w", manager.ErrRolledBack)
	if rec := do(s, "POST", "/v1/plugins/echo/swap", "secret-token", `{"path":"`+dir+`/v3","sha256":"`+sha+`"}`); rec.Code != 409 || !strings.Contains(rec.Body.String(), "rolled_back") {
		t.Fatalf("failed swap: %d %s", rec.Code, rec.Body)
	}
	fc.fail = manager.ErrUnknownPlugin
	if rec := do(s, "POST", "/v1/plugins/zzz/disable", "secret-token", ""); rec.Code != 404 {
		t.Fatalf("unknown plugin: %d", rec.Code)
	}
	fc.fail = errors.New("other")
	if rec := do(s, "POST", "/v1/plugins/echo/enable", "secret-token", ""); rec.Code != 409 {
		t.Fatalf("failure: %d", rec.Code)
	}
	do(s, "POST", "/v1/dlq/echo/replay", "secret-token", `{"all":true}`)
	if len(rp.got) != 3 {
		t.Fatalf("replayed %v", rp.got)
	}
	do(s, "DELETE", "/v1/dlq/echo", "secret-token", `{"ids":["d2"]}`)
	if n, _ := idx.Count(context.Background(), "echo"); n != 2 {
		t.Fatalf("after purge %d", n)
	}
}

func TestNewRefusesBadCredentials(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"nothing", Config{}},
		{"empty secret", Config{Tokens: []Token{{Name: "a", Role: RoleOperator}}}},
		{"no name", Config{Tokens: []Token{{Secret: "secret-token-0123", Role: RoleOperator}}}},
		{"no role", Config{Tokens: []Token{{Name: "a", Secret: "secret-token-0123"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg, Deps{}, slog.New(slog.DiscardHandler)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func (f *fakeCluster) StartRelease(_ context.Context, n string, rel cluster.Release) error {
	what := rel.Spec.Path
	if r := rel.Spec.Remote; r != nil {
		what = "remote " + r.Address + " " + r.CAFile + " " + r.CertFile + " " + r.KeyFile
	}
	return f.op(fmt.Sprintf("%s %s %s %v %v", rel.Mode, n, what, rel.Percent, rel.Chats))
}

func (f *fakeCluster) EndRelease(_ context.Context, n string, promote bool) error {
	if promote {
		return f.op("promote " + n)
	}
	return f.op("abort " + n)
}

func (f *fakeCluster) ReleaseView(_ context.Context, n string) (cluster.ReleaseView, error) {
	return cluster.ReleaseView{Plugin: n, Replicas: map[string]*manager.ReleaseStatus{}}, nil
}
