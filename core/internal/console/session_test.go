package console

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/admin"
)

// fakeAuth accepts the tokens it holds; tests revoke them.
type fakeAuth struct {
	mu     sync.Mutex
	tokens map[string]admin.Role
}

func (f *fakeAuth) Authenticate(r *http.Request) (admin.Principal, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	role, ok := f.tokens[tok]
	if !ok {
		return admin.Principal{}, errors.New("wrong bearer token")
	}
	return admin.Principal{Name: "token:" + tok, Role: role}, nil
}

// A session ends when its time is up and when its token stops
// authenticating (removed from the config, or an expired JWT).
func TestSessionEndsWithItsTTLOrItsToken(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	auth := &fakeAuth{tokens: map[string]admin.Role{"op": admin.RoleOperator}}
	api := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"plugins":[],"replicas":[]}`))
	})
	c, err := New(Config{SessionTTL: time.Hour}, Deps{API: api, Auth: auth, Now: func() time.Time { return now }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	login := func() *http.Cookie {
		t.Helper()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/login", strings.NewReader(url.Values{"token": {"op"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		c.ServeHTTP(rec, req)
		cookies := rec.Result().Cookies()
		if rec.Code != http.StatusSeeOther || len(cookies) != 1 {
			t.Fatalf("login: %d %v", rec.Code, cookies)
		}
		return cookies[0]
	}
	status := func(ck *http.Cookie) int {
		t.Helper()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.AddCookie(ck)
		c.ServeHTTP(rec, req)
		return rec.Code
	}
	ck := login()
	if ck.MaxAge != 3600 || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure {
		t.Fatalf("cookie %+v", ck)
	}
	if got := status(ck); got != http.StatusOK {
		t.Fatalf("fresh session: %d", got)
	}
	now = now.Add(time.Hour)
	if got := status(ck); got != http.StatusSeeOther {
		t.Fatalf("session past its TTL: %d, want 303 to the login page", got)
	}
	ck = login()
	auth.mu.Lock()
	delete(auth.tokens, "op")
	auth.mu.Unlock()
	if got := status(ck); got != http.StatusSeeOther {
		t.Fatalf("session whose token was revoked: %d, want 303 to the login page", got)
	}
	c.mu.Lock()
	n := len(c.sessions)
	c.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d sessions kept after they ended", n)
	}
}
