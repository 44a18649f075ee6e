// Package larkemu emulates the parts of the Feishu/Lark OpenAPI that larkway
// calls, faithfully enough that the official oapi-sdk-go, pointed at it
// with WithOpenBaseUrl, works unmodified. Tests, `make run` and benchmarks
// use it in place of the unreachable Lark cloud.
//
// Emulated (lark-platform.md §4, §5.3):
//
//	POST /open-apis/auth/v3/tenant_access_token/internal    tenant_access_token for a self-built app
//	POST /open-apis/im/v1/messages?receive_id_type=…         send a message
//	POST /open-apis/im/v1/messages/{message_id}/reply        reply to a message
//
// and, for inspection (not part of Lark):
//
//	GET  /_emu/messages[?chat_id=&parent_id=&root_id=]       JSON list of messages the bot sent
//	POST /_emu/reset                                         same as Reset
//
// Any other path or method answers 404 text/plain "404 page not found", as
// Lark's gateway does.
//
// Lifecycle: New does no I/O. Mount Handler anywhere (httptest.NewServer in
// tests), or call Run(ctx, addr) / Serve(ctx, listener), which serve until
// ctx ends and then shut down gracefully. An Emulator owns no goroutines
// outside Run/Serve, so it needs no Close.
package larkemu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// DefaultTokenTTL is the validity of a tenant_access_token, as on Lark.
const DefaultTokenTTL = 2 * time.Hour

// UUIDTTL is how long a send/reply uuid deduplicates ("至多成功执行一次" within
// one hour).
const UUIDTTL = time.Hour

// Options configures an Emulator. The zero value is usable.
type Options struct {
	// Apps maps app ID to app secret. Empty accepts any app ID with any
	// non-empty secret.
	Apps map[string]string
	// TokenTTL is a new token's validity (default DefaultTokenTTL). A token
	// endpoint call returns the app's current token while at least
	// min(30 min, TokenTTL/4) of it remains — 30 minutes for the default, as
	// Lark documents — and a new one otherwise; old tokens stay valid until
	// they expire.
	TokenTTL time.Duration
	// TenantKey is reported as the sender's tenant_key (default
	// "emu-tenant-key").
	TenantKey string
	// Now is the emulator's clock (default time.Now). Tests move it to expire
	// tokens and uuids without sleeping.
	Now func() time.Time
	// Logger receives debug logs of served requests (default: discard).
	Logger *slog.Logger
}

// Message is one message the bot sent through the emulator.
type Message struct {
	MessageID string `json:"message_id"`
	// RootID and ParentID are set on replies: the replied-to message and the
	// root of its reply chain.
	RootID   string `json:"root_id,omitempty"`
	ParentID string `json:"parent_id,omitempty"`
	// ThreadID (omt_…) is set on replies in a thread.
	ThreadID string `json:"thread_id,omitempty"`
	ChatID   string `json:"chat_id"`
	MsgType  string `json:"msg_type"`
	// Content is the JSON-encoded content string as sent.
	Content string `json:"content"`
	UUID    string `json:"uuid,omitempty"`
	// AppID is the app whose token authenticated the request.
	AppID string `json:"app_id"`
	// ReceiveIDType and ReceiveID are set on sends.
	ReceiveIDType string    `json:"receive_id_type,omitempty"`
	ReceiveID     string    `json:"receive_id,omitempty"`
	ReplyInThread bool      `json:"reply_in_thread,omitempty"`
	CreateTime    time.Time `json:"create_time"`
}

// Emulator is an in-memory Lark OpenAPI. It is safe for concurrent use.
type Emulator struct {
	apps      map[string]string
	ttl       time.Duration
	tenantKey string
	now       func() time.Time
	log       *slog.Logger
	handler   http.Handler

	mu       sync.Mutex
	tokens   map[string]issuedToken // token value -> issue
	current  map[string]string      // app ID -> newest token
	fetches  int
	messages []Message
	byID     map[string]int // message ID -> index in messages
	uuids    map[uuidKey]uuidEntry
	uuidFIFO []uuidKey // in expiry order (the TTL is constant)
}

type issuedToken struct {
	appID     string
	expiresAt time.Time
}

type uuidKey struct{ appID, uuid string }

type uuidEntry struct {
	index     int
	expiresAt time.Time
}

// New builds an Emulator. It does no I/O.
func New(opts Options) *Emulator {
	e := &Emulator{
		apps:      make(map[string]string, len(opts.Apps)),
		ttl:       opts.TokenTTL,
		tenantKey: opts.TenantKey,
		now:       opts.Now,
		log:       opts.Logger,
		tokens:    make(map[string]issuedToken),
		current:   make(map[string]string),
		byID:      make(map[string]int),
		uuids:     make(map[uuidKey]uuidEntry),
	}
	for id, secret := range opts.Apps {
		e.apps[id] = secret
	}
	if e.ttl <= 0 {
		e.ttl = DefaultTokenTTL
	}
	if e.tenantKey == "" {
		e.tenantKey = "emu-tenant-key"
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.log = e.log.With("component", "larkemu")
	e.handler = e.routes()
	return e
}

// Handler serves the emulated API and the /_emu inspection routes.
func (e *Emulator) Handler() http.Handler { return e.handler }

// Run listens on addr (e.g. "127.0.0.1:9300") and serves until ctx ends.
func (e *Emulator) Run(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("larkemu: listening on %s: %w", addr, err)
	}
	return e.Serve(ctx, ln)
}

// Serve serves on ln until ctx ends, then shuts down, giving in-flight
// requests up to 5 seconds, and returns nil. It closes ln. It returns early
// with an error if serving fails.
func (e *Emulator) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           e.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	e.log.Info("serving", "addr", ln.Addr().String())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("larkemu: serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		err = errors.Join(fmt.Errorf("larkemu: shutting down: %w", err), srv.Close())
	}
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// Messages returns a copy of every message recorded since New or Reset, in
// the order they were sent. A request deduplicated by uuid is recorded once.
func (e *Emulator) Messages() []Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Message(nil), e.messages...)
}

// TokenFetches counts calls to the tenant_access_token endpoint since New or
// Reset, failed ones included.
func (e *Emulator) TokenFetches() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fetches
}

// Reset forgets recorded messages, uuids and the fetch count. Issued tokens
// stay valid, so connected clients keep working.
func (e *Emulator) Reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fetches = 0
	e.messages = nil
	e.byID = make(map[string]int)
	e.uuids = make(map[uuidKey]uuidEntry)
	e.uuidFIFO = nil
}

// ExpireTokens makes every issued token invalid now, as when an app secret is
// reset; the next call with one answers 99991663.
func (e *Emulator) ExpireTokens() {
	e.mu.Lock()
	defer e.mu.Unlock()
	clear(e.tokens)
	clear(e.current)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}
