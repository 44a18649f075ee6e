// Package console is the admin web console, served by the admin listener
// beside the admin API (/v1/...): an overview of replicas and plugins with
// live rates, a page per plugin with its manifest and the swap, rollback,
// drain, disable and enable operations, the dead letters (list, show,
// replay, purge) and a live tail of events and actions.
//
// The console is a client of the admin API, called in process: every read
// and every change goes through the API's handler with the caller's bearer
// credentials, so the API's authentication, roles (a viewer may only read),
// swap confinement and audit log apply to the console unchanged. A browser
// logs in once with a token (static or JWT) and then carries a session
// cookie (HttpOnly, SameSite=Strict; Secure under TLS); the token stays on
// the server. Every state-changing form carries the session's CSRF token.
// A request with "Authorization: Bearer" is served directly, without a
// session, so scripts and tests need no login.
//
// Pages are server-rendered html/template; htmx (vendored, embedded) only
// (core/internal/htmx, embedded) refreshes the overview in place. No build step, no CDN.
package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/admin"
	"github.com/larkway/larkway/core/internal/htmx"
)

//go:embed web
var webFS embed.FS

// DefaultSessionTTL is how long a console login lasts.
const DefaultSessionTTL = 12 * time.Hour

// maxSessions bounds the sessions kept; the oldest go first. Only a valid
// token creates one, so this guards memory, not access.
const maxSessions = 10000

// CookieName is the session cookie's name.
const CookieName = "larkway_console"

// Authenticator finds the principal of a request carrying bearer
// credentials (the admin API's).
type Authenticator interface {
	Authenticate(r *http.Request) (admin.Principal, error)
}

// Config configures the console.
type Config struct {
	// SessionTTL is how long a login lasts (default DefaultSessionTTL).
	SessionTTL time.Duration
	// SecureCookie marks the session cookie Secure (set when the admin
	// listener serves TLS).
	SecureCookie bool
	// PlaygroundURL, if set, is linked from every page.
	PlaygroundURL string
}

// Deps are what the console reads and operates on.
type Deps struct {
	// API is the admin API's handler; Auth its authentication.
	API  http.Handler
	Auth Authenticator
	// Tail is the live feed of events and actions (nil: the tail page says
	// it is off, and rates are not shown).
	Tail *Hub
	// Metrics is read for plugin backlogs (nil: none shown).
	Metrics prometheus.Gatherer
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Console is the web console's HTTP handler.
type Console struct {
	cfg    Config
	deps   Deps
	logger *slog.Logger
	mux    *http.ServeMux
	pages  map[string]*template.Template
	static http.Handler

	mu       sync.Mutex
	sessions map[string]*session
	rates    rateSampler

	closeOnce sync.Once
	closed    chan struct{}
}

// session is one browser login: the token it was opened with stays here,
// and every request re-authenticates it, so a revoked token or an expired
// JWT ends the session.
type session struct {
	token   string
	csrf    string
	expires time.Time
	created time.Time
}

// principalInfo is the caller of one console request.
type principalInfo struct {
	admin.Principal
	bearer string
	CSRF   string // empty for bearer requests, which need none
}

type ctxKey struct{}

// New builds the console; it does no I/O.
func New(cfg Config, deps Deps, logger *slog.Logger) (*Console, error) {
	if deps.API == nil || deps.Auth == nil {
		return nil, errors.New("console: needs the admin API and its authentication")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	static, _ := fs.Sub(webFS, "web/static")
	c := &Console{cfg: cfg, deps: deps, logger: logger.With("component", "console"), mux: http.NewServeMux(),
		pages: pages, static: http.StripPrefix("/static/", http.FileServerFS(static)),
		sessions: map[string]*session{}, closed: make(chan struct{})}
	c.routes()
	return c, nil
}

// Close ends live tails in progress so that a server shutdown need not wait
// for them. Idempotent.
func (c *Console) Close() {
	c.closeOnce.Do(func() { close(c.closed) })
}

func (c *Console) routes() {
	m := c.mux
	m.HandleFunc("GET /{$}", c.overview)
	m.HandleFunc("GET /plugins/{name}", c.pluginPage)
	m.HandleFunc("POST /plugins/{name}/{op}", c.pluginOp)
	m.HandleFunc("GET /dlq", c.dlqIndex)
	m.HandleFunc("GET /dlq/{plugin}", c.dlqList)
	m.HandleFunc("GET /dlq/{plugin}/{id}", c.dlqShow)
	m.HandleFunc("POST /dlq/{plugin}/{op}", c.dlqOp)
	m.HandleFunc("GET /tail", c.tailPage)
	m.HandleFunc("GET /tail/stream", c.tailStream)
	m.HandleFunc("POST /logout", c.logout)
}

// ServeHTTP serves the login page and static files to anyone, and every
// other page to an authenticated caller: GET to any role, POST (a change)
// to the operator role only, with a valid CSRF token when the caller came
// with a session cookie.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "same-origin")
	// Scripts and requests only from here: markup that slipped into a page
	// (a plugin's error text, an event's content) cannot run or send data
	// away. htmx adds one inline style, hence style-src.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "+
		"frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
	// Forms are a few fields: a bounded body (as the API's maxBody).
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	switch {
	case r.URL.Path == "/static/"+htmx.File:
		htmx.Handler().ServeHTTP(w, r)
		return
	case strings.HasPrefix(r.URL.Path, "/static/"):
		w.Header().Set("Cache-Control", "public, max-age=3600")
		c.static.ServeHTTP(w, r)
		return
	case r.URL.Path == "/login":
		c.login(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !sameOrigin(r) {
		c.fail(w, r, http.StatusForbidden, "This request came from another site (Origin header): refused.")
		return
	}
	p, err := c.identify(r)
	if err != nil {
		if r.Method == http.MethodGet && r.Header.Get("Authorization") == "" {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="larkway-admin"`)
		c.fail(w, r, http.StatusUnauthorized, "Not logged in: "+err.Error())
		return
	}
	if p.Role == admin.RoleNone {
		c.fail(w, r, http.StatusForbidden, p.Name+" carries no admin role (viewer or operator).")
		return
	}
	if r.Method == http.MethodPost {
		if p.CSRF != "" && subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(p.CSRF)) != 1 {
			c.fail(w, r, http.StatusForbidden, "The form's CSRF token is missing or stale: reload the page and try again.")
			return
		}
		if r.URL.Path != "/logout" && p.Role != admin.RoleOperator {
			c.logger.Warn("console change forbidden", "principal", p.Name, "role", string(p.Role), "path", r.URL.Path)
			c.fail(w, r, http.StatusForbidden, fmt.Sprintf("%s (role %s) may only read: changes need the operator role.", p.Name, p.Role))
			return
		}
	}
	c.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, p)))
}

// sameOrigin refuses a cross-site state-changing request in browsers that
// say where it came from (Sec-Fetch-Site, Origin); SameSite=Strict and the
// CSRF token already refuse it, this is one more layer.
func sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return o == ""
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// identify authenticates the request: its bearer credentials, else its
// session's token.
func (c *Console) identify(r *http.Request) (principalInfo, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		p, err := c.deps.Auth.Authenticate(r)
		if err != nil {
			return principalInfo{}, err
		}
		tok := strings.TrimSpace(h[strings.IndexByte(h+" ", ' '):])
		return principalInfo{Principal: p, bearer: tok}, nil
	}
	ck, err := r.Cookie(CookieName)
	if err != nil {
		return principalInfo{}, errors.New("no session")
	}
	c.mu.Lock()
	s := c.sessions[ck.Value]
	if s != nil && !c.deps.Now().Before(s.expires) {
		delete(c.sessions, ck.Value)
		s = nil
	}
	c.mu.Unlock()
	if s == nil {
		return principalInfo{}, errors.New("session expired or unknown")
	}
	p, err := c.authToken(r, s.token)
	if err != nil {
		c.mu.Lock()
		delete(c.sessions, ck.Value)
		c.mu.Unlock()
		return principalInfo{}, err
	}
	return principalInfo{Principal: p, bearer: s.token, CSRF: s.csrf}, nil
}

// authToken authenticates token as if it came as a bearer header on r.
func (c *Console) authToken(r *http.Request, token string) (admin.Principal, error) {
	ar := r.Clone(r.Context())
	ar.Header = http.Header{"Authorization": {"Bearer " + token}}
	return c.deps.Auth.Authenticate(ar)
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// safeNext keeps a post-login redirect on this site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	return next
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		c.render(w, r, http.StatusOK, "login", map[string]any{"Next": safeNext(r.URL.Query().Get("next"))})
	case http.MethodPost:
		if !sameOrigin(r) {
			c.fail(w, r, http.StatusForbidden, "This login came from another site (Origin header): refused.")
			return
		}
		token := strings.TrimSpace(r.PostFormValue("token"))
		next := safeNext(r.PostFormValue("next"))
		p, err := c.authToken(r, token)
		if token == "" || err != nil || p.Role == admin.RoleNone {
			c.logger.Warn("console login refused", "remote", r.RemoteAddr, "err", err)
			c.render(w, r, http.StatusUnauthorized, "login", map[string]any{"Next": next,
				"Error": "Login refused: that token is not a valid viewer or operator token."})
			return
		}
		id := randomToken()
		now := c.deps.Now()
		c.mu.Lock()
		if len(c.sessions) >= maxSessions {
			c.evictOldestLocked()
		}
		c.sessions[id] = &session{token: token, csrf: randomToken(), expires: now.Add(c.cfg.SessionTTL), created: now}
		c.mu.Unlock()
		http.SetCookie(w, &http.Cookie{Name: CookieName, Value: id, Path: "/", HttpOnly: true, Secure: c.cfg.SecureCookie,
			SameSite: http.SameSiteStrictMode, MaxAge: int(c.cfg.SessionTTL / time.Second)})
		c.logger.Info("console login", "principal", p.Name, "role", string(p.Role), "remote", r.RemoteAddr)
		http.Redirect(w, r, next, http.StatusSeeOther)
	default:
		w.Header().Set("Allow", "GET, POST")
		c.fail(w, r, http.StatusMethodNotAllowed, "GET or POST only.")
	}
}

func (c *Console) evictOldestLocked() {
	var oldest string
	var at time.Time
	for id, s := range c.sessions {
		if oldest == "" || s.created.Before(at) {
			oldest, at = id, s.created
		}
	}
	delete(c.sessions, oldest)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(CookieName); err == nil {
		c.mu.Lock()
		delete(c.sessions, ck.Value)
		c.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", HttpOnly: true, Secure: c.cfg.SecureCookie,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func principalOf(r *http.Request) principalInfo {
	p, _ := r.Context().Value(ctxKey{}).(principalInfo)
	return p
}
