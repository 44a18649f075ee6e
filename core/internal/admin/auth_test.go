package admin

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/larkway/larkway/core/internal/admin/admintest"
	"github.com/larkway/larkway/core/internal/cluster"
	"github.com/larkway/larkway/core/internal/dlq"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	viewerToken   = "viewer-token-0123456789"
	operatorToken = "operator-token-0123456789"
	issuer        = "https://idp.example.test"
	audience      = "larkway-admin"
)

// route is one admin endpoint with a request that succeeds for an operator.
type route struct {
	method, path, body string
	read               bool
}

func routes(dir string) []route {
	return []route{
		{"GET", "/v1/plugins", "", true},
		{"GET", "/v1/plugins/echo", "", true},
		{"GET", "/v1/dlq/echo", "", true},
		{"GET", "/v1/dlq/echo/d1", "", true},
		{"POST", "/v1/plugins/echo/swap", `{"path":"` + dir + `/echo2","sha256":"` + sha + `"}`, false},
		{"POST", "/v1/plugins/echo/rollback", "", false},
		{"POST", "/v1/plugins/echo/disable", "", false},
		{"POST", "/v1/plugins/echo/enable", "", false},
		{"POST", "/v1/plugins/echo/drain", "", false},
		{"POST", "/v1/dlq/echo/replay", `{"ids":["d0"]}`, false},
		{"DELETE", "/v1/dlq/echo", `{"ids":["d2"]}`, false},
	}
}

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// authServer serves with a viewer and an operator token, JWTs from keys
// (read from a JWKS file), and echo configured in dir.
func authServer(t testing.TB, keys *admintest.Keys, dir string) (*Server, *fakeCluster, *replayer, *syncBuffer) {
	t.Helper()
	v, err := NewJWT(context.Background(), JWTConfig{
		JWKSFile: admintest.WriteFile(t, t.TempDir(), "jwks.json", keys.JWKS), Issuer: issuer, Audience: audience,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fc, idx, rp := &fakeCluster{}, dlq.NewMemory(), &replayer{}
	for _, id := range []string{"d0", "d1", "d2"} {
		_ = idx.Add(context.Background(), dlq.Entry{ID: id, Plugin: "echo", Reason: "boom", Payload: []byte{}})
	}
	logs := &syncBuffer{}
	s, err := New(Config{
		Tokens: []Token{
			{Name: "alice-viewer", Secret: viewerToken, Role: RoleViewer},
			{Name: "bob-operator", Secret: operatorToken, Role: RoleOperator},
		},
		JWT:         v,
		PluginPaths: map[string]string{"echo": filepath.Join(dir, "echo")},
	}, Deps{Cluster: fc, Store: cluster.NewMemory(), Local: &fakeLocal{}, DeadLetters: idx, Replayer: rp},
		slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s, fc, rp, logs
}

var (
	keysOnce sync.Once
	keys     *admintest.Keys
)

// testKeys generates the signing keys once per test binary (RSA is slow).
func testKeys(t *testing.T) *admintest.Keys {
	keysOnce.Do(func() { keys = admintest.NewKeys(t) })
	return keys
}

func claims(sub, role string) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{"iss": issuer, "aud": audience, "sub": sub, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	if role != "" {
		c["role"] = role
	}
	return c
}

func call(s *Server, method, path, auth, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

// Every route, for every kind of caller: viewers read only, operators do
// everything, and nobody else gets past 401. A refused change never
// reaches the cluster.
func TestRolesByRoute(t *testing.T) {
	k := testKeys(t)
	roleList := claims("erin", "")
	roleList["role"] = []any{"viewer", "operator"}
	callers := []struct {
		name, auth  string
		read, write int
	}{
		{"viewer token", "Bearer " + viewerToken, 200, 403},
		{"operator token", "Bearer " + operatorToken, 200, 200},
		{"viewer JWT", "Bearer " + k.Sign(t, "ES256", claims("carol", "viewer")), 200, 403},
		{"operator JWT", "Bearer " + k.Sign(t, "RS256", claims("dave", "operator")), 200, 200},
		{"operator in a role list", "Bearer " + k.Sign(t, "EdDSA", roleList), 200, 200},
		{"JWT without a role", "Bearer " + k.Sign(t, "ES256", claims("frank", "")), 403, 403},
		{"JWT with an unknown role", "Bearer " + k.Sign(t, "ES256", claims("grace", "admin")), 403, 403},
		{"wrong token", "Bearer " + strings.Repeat("x", 24), 401, 401},
		{"no credentials", "", 401, 401},
	}
	for _, caller := range callers {
		for _, rt := range routes("@DIR@") {
			t.Run(caller.name+"/"+rt.method+" "+rt.path, func(t *testing.T) {
				dir := pluginDir(t)
				s, fc, rp, _ := authServer(t, k, dir)
				rec := call(s, rt.method, rt.path, caller.auth, strings.ReplaceAll(rt.body, "@DIR@", dir))
				want := caller.write
				if rt.read {
					want = caller.read
				}
				if rec.Code != want {
					t.Fatalf("status %d, want %d: %s", rec.Code, want, rec.Body)
				}
				if want == 401 && rec.Header().Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
				if want != 200 && (len(fc.ops) > 0 || len(rp.got) > 0) {
					t.Errorf("a refused request reached the cluster: %v %v", fc.ops, rp.got)
				}
			})
		}
	}
}

// The legacy single admin.token is an operator token named admin.token.
func TestLegacyTokenIsOperator(t *testing.T) {
	dir := pluginDir(t)
	s, fc, _, _ := setupWith(t, Config{Tokens: []Token{{Name: "admin.token", Secret: "legacy-token-0123456789", Role: RoleOperator}},
		PluginPaths: map[string]string{"echo": filepath.Join(dir, "echo")}})
	rec := call(s, "POST", "/v1/plugins/echo/swap", "Bearer legacy-token-0123456789", `{"path":"`+dir+`/echo2","sha256":"`+sha+`"}`)
	if rec.Code != 200 || len(fc.ops) != 1 {
		t.Fatalf("%d %s %v", rec.Code, rec.Body, fc.ops)
	}
}

func TestBearerScheme(t *testing.T) {
	tests := []struct {
		name, header string
		status       int
	}{
		{"canonical", "Bearer " + operatorToken, 200},
		{"lowercase", "bearer " + operatorToken, 200},
		{"uppercase", "BEARER " + operatorToken, 200},
		{"mixed case", "bEaReR " + operatorToken, 200},
		{"two spaces", "Bearer  " + operatorToken, 200},
		{"basic", "Basic " + operatorToken, 401},
		{"no token", "Bearer", 401},
		{"empty token", "Bearer ", 401},
		{"glued", "Bearer" + operatorToken, 401},
		{"token then junk", "Bearer " + operatorToken + " x", 401},
		{"token prefix", "Bearer " + operatorToken[:10], 401},
		{"token plus a character", "Bearer " + operatorToken + "x", 401},
	}
	k := testKeys(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _, _ := authServer(t, k, pluginDir(t))
			if rec := call(s, "GET", "/v1/plugins", tt.header, ""); rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
		})
	}
}

// JWT cases: what each token gets on a swap.
func TestJWT(t *testing.T) {
	k := testKeys(t)
	other := admintest.NewKeys(t) // same kids, different keys
	now := time.Now()
	with := func(f func(jwt.MapClaims)) jwt.MapClaims {
		c := claims("alice", "operator")
		f(c)
		return c
	}
	hs256 := func(secret []byte) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims("mallory", "operator"))
		tok.Header["kid"] = "rsa"
		s, err := tok.SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	none := func() string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims("mallory", "operator")).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name, auth string
		status     int
	}{
		{"valid operator ES256", "Bearer " + k.Sign(t, "ES256", claims("alice", "operator")), 200},
		{"valid operator RS256", "Bearer " + k.Sign(t, "RS256", claims("alice", "operator")), 200},
		{"valid operator EdDSA", "Bearer " + k.Sign(t, "EdDSA", claims("alice", "operator")), 200},
		{"lowercase bearer", "bearer " + k.Sign(t, "ES256", claims("alice", "operator")), 200},
		{"audience list containing ours", "Bearer " + k.Sign(t, "ES256", with(func(c jwt.MapClaims) { c["aud"] = []string{"x", audience} })), 200},
		{"within the clock-skew leeway", "Bearer " + k.Sign(t, "ES256", with(func(c jwt.MapClaims) { c["exp"] = now.Add(-10 * time.Second).Unix() })), 200},
		{"viewer", "Bearer " + k.Sign(t, "ES256", claims("bob", "viewer")), 403},
		{"expired", "Bearer " + k.Sign(t, "ES256", with(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() })), 401},
		{"not yet valid", "Bearer " + k.Sign(t, "ES256", with(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() })), 401},
		{"issued in the future", "Bearer " + k.Sign(t, "ES256", with(func(c jwt.MapClaims) { c["iat"] = now.Add(time.Hour).Unix() })), 401},
		{"no exp", "Bearer " + k.Sign(t, "ES256", with(func(c jwt.MapClaims) { delete(c, "exp") })), 401},
		{"foreign issuer", "Bearer " + k.Sign(t, "ES256", with(func(c jwt.MapClaims) { c["iss"] = "https://evil.example.test" })), 401},
		{"no issuer", "Bearer " + k.Sign(t, "ES256", with(func(c jwt.MapClaims) { delete(c, "iss") })), 401},
		{"wrong audience", "Bearer " + k.Sign(t, "ES256", with(func(c jwt.MapClaims) { c["aud"] = "another-service" })), 401},
		{"no audience", "Bearer " + k.Sign(t, "ES256", with(func(c jwt.MapClaims) { delete(c, "aud") })), 401},
		{"no sub", "Bearer " + k.Sign(t, "ES256", with(func(c jwt.MapClaims) { delete(c, "sub") })), 401},
		{"signed by another key", "Bearer " + other.Sign(t, "ES256", claims("mallory", "operator")), 401},
		{"HS256 with the public key as secret", "Bearer " + hs256(k.RSAPublicPEM(t)), 401},
		{"HS256 with the JWKS as secret", "Bearer " + hs256(k.JWKS), 401},
		{"alg none", "Bearer " + none(), 401},
		{"garbage", "Bearer not.a.jwt", 401},
		{"tampered payload", "Bearer " + tamper(k.Sign(t, "ES256", claims("bob", "viewer"))), 401},
		{"oversize", "Bearer " + strings.Repeat("a", maxJWTBytes+1), 401},
		{"missing", "", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := pluginDir(t)
			s, fc, _, _ := authServer(t, k, dir)
			rec := call(s, "POST", "/v1/plugins/echo/swap", tt.auth, `{"path":"`+dir+`/echo2","sha256":"`+sha+`"}`)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			if (len(fc.ops) == 1) != (tt.status == 200) {
				t.Fatalf("cluster ops %v", fc.ops)
			}
		})
	}
}

// tamper swaps a viewer token's payload for an operator one, keeping the
// signature.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"` + issuer + `","aud":"` + audience + `","sub":"bob","role":"operator","exp":9999999999}`))
	return strings.Join(parts, ".")
}

// HS256 is refused by the algorithm list itself, before a key is looked
// up: the key set cannot be turned into an HMAC secret.
func TestJWTRefusesSymmetricAlgorithms(t *testing.T) {
	k := testKeys(t)
	v, err := NewJWT(context.Background(), JWTConfig{
		JWKSFile: admintest.WriteFile(t, t.TempDir(), "jwks.json", k.JWKS), Issuer: issuer, Audience: audience,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*jwt.SigningMethodHMAC{jwt.SigningMethodHS256, jwt.SigningMethodHS384, jwt.SigningMethodHS512} {
		tok := jwt.NewWithClaims(m, claims("mallory", "operator"))
		tok.Header["kid"] = "rsa"
		raw, err := tok.SignedString(k.RSAPublicPEM(t))
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(context.Background(), raw)
		if !errors.Is(err, jwt.ErrTokenSignatureInvalid) || !strings.Contains(err.Error(), "signing method "+m.Alg()+" is invalid") {
			t.Errorf("%s: %v, want the method refused", m.Alg(), err)
		}
	}
}

// The keys can come from an https JWKS URL; a token naming a key the set
// does not have is refused.
func TestJWTFromURL(t *testing.T) {
	k := testKeys(t)
	var hits sync.Mutex
	n := 0
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Lock()
		n++
		hits.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(k.JWKS)
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v, err := NewJWT(ctx, JWTConfig{JWKSURL: srv.URL + "/jwks.json", HTTPClient: srv.Client(), Issuer: issuer, Audience: audience},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.Verify(ctx, k.Sign(t, "ES256", claims("alice", "operator")))
	if err != nil || p.Name != "jwt:alice" || p.Role != RoleOperator {
		t.Fatalf("%+v %v", p, err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims("mallory", "operator"))
	tok.Header["kid"] = "unknown"
	raw, err := tok.SignedString(k.EC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, raw); err == nil {
		t.Fatal("a token naming an unknown key was accepted")
	}
	hits.Lock()
	defer hits.Unlock()
	if n < 1 {
		t.Fatal("the JWKS URL was never read")
	}
}

func TestNewJWTRefuses(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  JWTConfig
	}{
		{"no keys", JWTConfig{Issuer: issuer, Audience: audience}},
		{"file and url", JWTConfig{JWKSFile: "x", JWKSURL: "https://x", Issuer: issuer, Audience: audience}},
		{"no issuer", JWTConfig{JWKSFile: admintest.WriteFile(t, dir, "a.json", testKeys(t).JWKS), Audience: audience}},
		{"no audience", JWTConfig{JWKSFile: admintest.WriteFile(t, dir, "b.json", testKeys(t).JWKS), Issuer: issuer}},
		{"missing file", JWTConfig{JWKSFile: filepath.Join(dir, "nope.json"), Issuer: issuer, Audience: audience}},
		{"not JSON", JWTConfig{JWKSFile: admintest.WriteFile(t, dir, "c.json", []byte("{{")), Issuer: issuer, Audience: audience}},
		{"empty set", JWTConfig{JWKSFile: admintest.WriteFile(t, dir, "d.json", []byte(`{"keys":[]}`)), Issuer: issuer, Audience: audience}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewJWT(context.Background(), tt.cfg, slog.New(slog.DiscardHandler)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// Every change is logged with its principal; refusals are logged too.
func TestChangesLogThePrincipal(t *testing.T) {
	k := testKeys(t)
	dir := pluginDir(t)
	s, _, _, logs := authServer(t, k, dir)
	body := `{"path":"` + dir + `/echo2","sha256":"` + sha + `"}`
	call(s, "POST", "/v1/plugins/echo/swap", "Bearer "+operatorToken, body)
	call(s, "POST", "/v1/plugins/echo/swap", "Bearer "+k.Sign(t, "ES256", claims("alice@example.test", "operator")), body)
	call(s, "DELETE", "/v1/dlq/echo", "Bearer "+k.Sign(t, "ES256", claims("zoe", "operator")), `{"all":true}`)
	call(s, "POST", "/v1/plugins/echo/disable", "Bearer "+viewerToken, "")
	out := logs.String()
	for _, want := range []string{
		`msg="admin change" component=admin principal=token:bob-operator role=operator method=POST path=/v1/plugins/echo/swap`,
		`msg="admin swap" component=admin principal=token:bob-operator plugin=echo path=` + dir + `/echo2`,
		`msg="admin change" component=admin principal=jwt:alice@example.test role=operator`,
		`msg="admin change" component=admin principal=jwt:zoe role=operator method=DELETE path=/v1/dlq/echo`,
		`msg="admin request forbidden" component=admin principal=token:alice-viewer role=viewer method=POST path=/v1/plugins/echo/disable`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, operatorToken) || strings.Contains(out, viewerToken) {
		t.Error("a token was logged")
	}
}

// Swaps run files from the plugin directory only, after resolving
// symlinks and "..".
func TestSwapPathConfinement(t *testing.T) {
	dir := pluginDir(t)
	outside, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	evil := filepath.Join(outside, "evil")
	if err := os.WriteFile(evil, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(evil, filepath.Join(dir, "link-out")))
	must(os.Symlink(outside, filepath.Join(dir, "dir-out")))
	must(os.Symlink(filepath.Join(dir, "echo2"), filepath.Join(dir, "link-in")))
	must(os.Symlink("../"+filepath.Base(outside)+"/evil", filepath.Join(dir, "relative-link-out")))
	must(os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "sub", "echo3"), []byte("#!/bin/sh\n"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "..echo4"), []byte("#!/bin/sh\n"), 0o755))
	// A symlinked view of the plugin directory resolves to it.
	alias := filepath.Join(outside, "plugins-alias")
	must(os.Symlink(dir, alias))
	cwd, _ := os.Getwd()
	relOutside, _ := filepath.Rel(cwd, evil)

	tests := []struct {
		name, path string
		status     int
		reason     string
		ran        string // the path the cluster was given
	}{
		{"inside", dir + "/echo2", 200, "", dir + "/echo2"},
		{"subdirectory", dir + "/sub/echo3", 200, "", dir + "/sub/echo3"},
		{"name starting with dots", dir + "/..echo4", 200, "", dir + "/..echo4"},
		{"symlink to a file inside", dir + "/link-in", 200, "", dir + "/echo2"},
		{"through a symlinked directory alias", alias + "/echo2", 200, "", dir + "/echo2"},
		{"dot dot back inside", dir + "/sub/../echo2", 200, "", dir + "/echo2"},
		{"dot dot out", dir + "/../" + filepath.Base(outside) + "/evil", 403, "path_not_allowed", ""},
		{"symlink out", dir + "/link-out", 403, "path_not_allowed", ""},
		{"relative symlink out", dir + "/relative-link-out", 403, "path_not_allowed", ""},
		{"symlinked directory out", dir + "/dir-out/evil", 403, "path_not_allowed", ""},
		{"absolute outside", evil, 403, "path_not_allowed", ""},
		{"system binary", "/bin/sh", 403, "path_not_allowed", ""},
		{"relative outside", relOutside, 403, "path_not_allowed", ""},
		{"the directory itself", dir, 403, "path_not_allowed", ""},
		{"missing", dir + "/nope", 400, "bad_path", ""},
		{"a subdirectory", dir + "/sub", 400, "bad_path", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, fc, _, _ := setupWith(t, Config{Tokens: []Token{{Name: "ops", Secret: operatorToken, Role: RoleOperator}},
				PluginPaths: map[string]string{"echo": filepath.Join(dir, "echo")}})
			rec := call(s, "POST", "/v1/plugins/echo/swap", "Bearer "+operatorToken, `{"path":"`+tt.path+`","sha256":"`+sha+`"}`)
			if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.reason) {
				t.Fatalf("status %d, want %d %s: %s", rec.Code, tt.status, tt.reason, rec.Body)
			}
			if tt.ran == "" {
				if len(fc.ops) != 0 {
					t.Fatalf("refused swap reached the cluster: %v", fc.ops)
				}
				return
			}
			if len(fc.ops) != 1 || fc.ops[0] != "swap echo "+tt.ran+" "+sha {
				t.Fatalf("ops %v, want the real path %s", fc.ops, tt.ran)
			}
		})
	}
}

// admin.plugin_dir, when set, is the only directory, whatever the plugin's
// configured path; without it a plugin with no configured path cannot be
// swapped at all.
func TestSwapPluginDir(t *testing.T) {
	configured, shipped := pluginDir(t), pluginDir(t)
	tests := []struct {
		name      string
		pluginDir string
		plugin    string
		path      string
		status    int
	}{
		{"from plugin_dir", shipped, "echo", shipped + "/v2", 200},
		{"configured path's directory is not plugin_dir", shipped, "echo", configured + "/v2", 403},
		{"plugin_dir serves unconfigured plugins", shipped, "other", shipped + "/v2", 200},
		{"no directory for an unconfigured plugin", "", "other", configured + "/v2", 403},
		{"plugin_dir missing", filepath.Join(shipped, "nope"), "echo", shipped + "/v2", 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, fc, _, _ := setupWith(t, Config{Tokens: []Token{{Name: "ops", Secret: operatorToken, Role: RoleOperator}},
				PluginDir: tt.pluginDir, PluginPaths: map[string]string{"echo": filepath.Join(configured, "echo")}})
			rec := call(s, "POST", "/v1/plugins/"+tt.plugin+"/swap", "Bearer "+operatorToken, `{"path":"`+tt.path+`","sha256":"`+sha+`"}`)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			if (len(fc.ops) == 1) != (tt.status == 200) {
				t.Fatalf("ops %v", fc.ops)
			}
		})
	}
}

func TestJWKSRedirectStaysOnHTTPS(t *testing.T) {
	req := httptest.NewRequest(http.MethodGet, "http://idp.example.test/jwks.json", nil)
	if err := httpsOnly(req, nil); err == nil {
		t.Fatal("a redirect to plain http was followed")
	}
	req = httptest.NewRequest(http.MethodGet, "https://idp.example.test/jwks.json", nil)
	if err := httpsOnly(req, nil); err != nil {
		t.Fatal(err)
	}
}

// Any Authorization header: 200 only for a configured static token, 401
// otherwise, never a panic (JWTs in it are parsed too).
func FuzzAuthorization(f *testing.F) {
	f.Add("Bearer " + operatorToken)
	f.Add("bearer " + viewerToken)
	f.Add("Bearer eyJhbGciOiJFUzI1NiIsImtpZCI6ImVjIn0.eyJzdWIiOiJ4In0.c2ln")
	f.Add("Bearer a.b.c")
	f.Add("Basic dXNlcjpwYXNz")
	f.Add("")
	s, _, _, _ := authServer(f, admintest.NewKeys(f), pluginDir(f))
	f.Fuzz(func(t *testing.T, h string) {
		rec := call(s, "GET", "/v1/plugins", h, "")
		switch rec.Code {
		case 200:
			tok, ok := bearer(h)
			if !ok || (tok != operatorToken && tok != viewerToken) {
				t.Fatalf("%q authenticated", h)
			}
		case 401:
		default:
			t.Fatalf("%q: status %d", h, rec.Code)
		}
	})
}
