// Package larkemu emulates the parts of the Feishu/Lark OpenAPI that larkway
// calls, faithfully enough that the official oapi-sdk-go, pointed at it
// with WithOpenBaseUrl, works unmodified. Tests, `make run` and benchmarks
// use it in place of the unreachable Lark cloud.
//
// Emulated (docs/lark-facts.md#openapi, docs/lark-facts.md#delayed-card-update,
// docs/lark-facts.md#reading-and-editing, docs/lark-facts.md#rate-limits):
//
//	POST   /open-apis/auth/v3/tenant_access_token/internal          tenant_access_token for a self-built app
//	POST   /open-apis/im/v1/messages?receive_id_type=…              send a message
//	POST   /open-apis/im/v1/messages/{message_id}/reply             reply to a message
//	GET    /open-apis/im/v1/messages/{message_id}                   read a message
//	PUT    /open-apis/im/v1/messages/{message_id}                   edit a text or post message
//	PATCH  /open-apis/im/v1/messages/{message_id}                   update a shared card
//	DELETE /open-apis/im/v1/messages/{message_id}                   recall a message
//	POST   /open-apis/im/v1/messages/{message_id}/reactions         add a reaction
//	GET    /open-apis/im/v1/messages/{message_id}/reactions         list reactions
//	DELETE /open-apis/im/v1/messages/{message_id}/reactions/{id}    remove a reaction
//	GET    /open-apis/im/v1/chats/{chat_id}                         read a chat
//	GET    /open-apis/im/v1/chats/{chat_id}/members                 list a chat's users
//	POST   /open-apis/interactive/v1/card/update                    delayed card update with a callback token
//
// with Lark's rate limits (unless Options.Unlimited): per app and API 50/s
// and 1 000/min (HTTP 429, code 99991400, x-ogw-ratelimit-limit and
// x-ogw-ratelimit-reset headers), per chat and per user 5/s and per message
// 5 updates/s (HTTP 400, code 230020); send/reply uuids deduplicate for an
// hour; tokens expire. Limits are sliding windows over accepted requests;
// requests rejected before them (authentication, faults) do not count.
//
// Tests shape the world with RegisterInbound or RegisterInboundMessage (a
// user's message, so replies land in its chat and message.get reads it),
// SetChat (what chat.get and chatMembers.get answer), SetBotInChat (230002
// for a chat the bot left), IssueCardToken (what a card callback carries)
// and SetFaults.
//
// And, for inspection and fault injection (not part of Lark):
//
//	GET    /_emu/messages[?chat_id=&parent_id=&root_id=]   JSON list of messages the bot sent
//	GET    /_emu/updates                                   JSON list of card updates
//	GET    /_emu/reactions                                 JSON list of reactions
//	GET    /_emu/calls                                     JSON list of every API call and its answer
//	POST   /_emu/reset                                     same as Reset
//	GET    /_emu/faults                                    the active faults
//	POST   /_emu/faults                                    set faults (see FaultsRequest)
//	DELETE /_emu/faults                                    clear faults
//
// Any other path or method answers HTTP 404 with a JSON body,
// {"code": 404, "msg": "404 page not found"}, so that SDKs report a Lark
// error (docs/lark-facts.md#unknown-routes).
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
	"slices"
	"sync"
	"time"
)

// DefaultTokenTTL is the validity of a tenant_access_token, as on Lark.
const DefaultTokenTTL = 2 * time.Hour

// UUIDTTL is how long a send/reply uuid deduplicates ("至多成功执行一次" within
// one hour).
const UUIDTTL = time.Hour

// DefaultCardTokenTTL is how long a card callback's token can update the
// card (30 minutes), and CardTokenUses how many times
// (docs/lark-facts.md#delayed-card-update).
const (
	DefaultCardTokenTTL = 30 * time.Minute
	CardTokenUses       = 2
)

// Options configures an Emulator. The zero value is usable and enforces
// Lark's rate limits.
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
	// tokens and uuids without sleeping. Rate-limit windows run on it too.
	Now func() time.Time
	// Logger receives debug logs of served requests (default: discard).
	Logger *slog.Logger
	// Unlimited turns rate limiting off.
	Unlimited bool
	// Limits are the rate limits enforced unless Unlimited. Zero fields take
	// Lark's values (LarkLimits); RateLimits.Compressed runs them faster.
	Limits RateLimits
	// CardTokenTTL is a card callback token's validity (default
	// DefaultCardTokenTTL).
	CardTokenTTL time.Duration
	// Wrap, if set, decorates the emulator's handler once it is built; the
	// playground (core/larkemu/playground) mounts itself beside the API
	// this way. It gets the emulator it wraps.
	Wrap func(*Emulator, http.Handler) http.Handler
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
	// Content is the JSON-encoded content string as sent. Card updates do
	// not change it; see Updates.
	Content string `json:"content"`
	UUID    string `json:"uuid,omitempty"`
	// AppID is the app whose token authenticated the request.
	AppID string `json:"app_id"`
	// ReceiveIDType and ReceiveID are set on sends.
	ReceiveIDType string    `json:"receive_id_type,omitempty"`
	ReceiveID     string    `json:"receive_id,omitempty"`
	ReplyInThread bool      `json:"reply_in_thread,omitempty"`
	CreateTime    time.Time `json:"create_time"`
	// Deleted is set once the message was recalled (DELETE).
	Deleted bool `json:"deleted,omitempty"`
	// Edits counts edits (PUT: text and post only, Content replaced) and
	// UpdateTime is the last one's time.
	Edits      int       `json:"edits,omitempty"`
	UpdateTime time.Time `json:"update_time,omitzero"`
}

// InboundMessage is a user's message the bot received, as message.get
// answers it (RegisterInboundMessage).
type InboundMessage struct {
	MessageID string
	ChatID    string
	// SenderOpenID is the user who sent it (default: an ID derived from
	// MessageID).
	SenderOpenID string
	// MsgType (default "text") and Content, the JSON-encoded content as
	// Lark delivers it (default: an empty text).
	MsgType string
	Content string
	// CreateTime defaults to when it was registered.
	CreateTime time.Time
}

// Chat is a group chat as chat.get and chatMembers.get describe it
// (SetChat).
type Chat struct {
	ChatID      string
	Name        string
	Description string
	// OwnerOpenID owns the chat; empty means the bot does (owner_id is then
	// left out, as Lark does).
	OwnerOpenID string
	// Members are the chat's users. The bot is a member too but is not
	// listed: chatMembers.get leaves bots out.
	Members []Member
	// External marks a chat shared with other tenants.
	External bool
	// Mode is the chat_mode: "group" (default) or "topic".
	Mode string
}

// Member is a user in a Chat. Its user_id and union_id are derived from
// OpenID.
type Member struct {
	OpenID string
	Name   string
	// TenantKey defaults to the emulator's tenant key.
	TenantKey string
}

// Update is one card update: a PATCH or a delayed update by token.
type Update struct {
	// Kind is "patch" or "delayed".
	Kind      string `json:"kind"`
	MessageID string `json:"message_id,omitempty"`
	// Card is the new card JSON.
	Card string `json:"card"`
	// Token and OpenIDs are set on delayed updates.
	Token   string    `json:"token,omitempty"`
	OpenIDs []string  `json:"open_ids,omitempty"`
	AppID   string    `json:"app_id"`
	Time    time.Time `json:"time"`
}

// Reaction is one reaction the bot added.
type Reaction struct {
	ReactionID string    `json:"reaction_id"`
	MessageID  string    `json:"message_id"`
	EmojiType  string    `json:"emoji_type"`
	AppID      string    `json:"app_id"`
	Time       time.Time `json:"time"`
	Removed    bool      `json:"removed,omitempty"`
}

// Call is one OpenAPI request the emulator answered.
type Call struct {
	// Time is when the request arrived (emulator clock).
	Time   time.Time `json:"time"`
	Method string    `json:"method"`
	Path   string    `json:"path"`
	// API names the endpoint, e.g. "im.message.reply" (see the API*
	// constants).
	API   string `json:"api"`
	AppID string `json:"app_id,omitempty"`
	// Status is the HTTP status and Code the body's code (0 for a non-JSON
	// answer).
	Status int `json:"status"`
	Code   int `json:"code"`
}

// Throttled reports whether the call was refused for frequency (99991400 or
// 230020).
func (c Call) Throttled() bool { return c.Code == codeRateLimited || c.Code == codeMessageRateLimited }

// Emulator is an in-memory Lark OpenAPI. It is safe for concurrent use.
type Emulator struct {
	apps         map[string]string
	ttl          time.Duration
	cardTokenTTL time.Duration
	tenantKey    string
	now          func() time.Time
	log          *slog.Logger
	handler      http.Handler
	limits       RateLimits
	unlimited    bool

	mu         sync.Mutex
	tokens     map[string]issuedToken // token value -> issue
	current    map[string]string      // app ID -> newest token
	fetches    int
	messages   []Message
	byID       map[string]int // message ID -> index in messages
	uuids      map[uuidKey]uuidEntry
	uuidFIFO   []uuidKey                 // in expiry order (the TTL is constant)
	inbound    map[string]InboundMessage // registered user messages by ID
	botOut     map[string]bool           // chats the bot was removed from
	chats      map[string]Chat           // chats described with SetChat
	updates    []Update
	reactions  []Reaction
	reactByID  map[string]int // reaction ID -> index in reactions
	cardTokens map[string]*cardToken
	calls      []Call
	windows    *windows
	faults     faultState
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

type cardToken struct {
	messageID string
	expiresAt time.Time
	uses      int
}

// New builds an Emulator. It does no I/O.
func New(opts Options) *Emulator {
	e := &Emulator{
		apps:         make(map[string]string, len(opts.Apps)),
		ttl:          opts.TokenTTL,
		cardTokenTTL: opts.CardTokenTTL,
		tenantKey:    opts.TenantKey,
		now:          opts.Now,
		log:          opts.Logger,
		limits:       opts.Limits.withDefaults(),
		unlimited:    opts.Unlimited,
		tokens:       make(map[string]issuedToken),
		current:      make(map[string]string),
		byID:         make(map[string]int),
		uuids:        make(map[uuidKey]uuidEntry),
		inbound:      make(map[string]InboundMessage),
		botOut:       make(map[string]bool),
		chats:        make(map[string]Chat),
		reactByID:    make(map[string]int),
		cardTokens:   make(map[string]*cardToken),
		windows:      newWindows(),
	}
	for id, secret := range opts.Apps {
		e.apps[id] = secret
	}
	if e.ttl <= 0 {
		e.ttl = DefaultTokenTTL
	}
	if e.cardTokenTTL <= 0 {
		e.cardTokenTTL = DefaultCardTokenTTL
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
	if opts.Wrap != nil {
		e.handler = opts.Wrap(e, e.handler)
	}
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
	e.log.Info("serving", "addr", ln.Addr().String(), "unlimited", e.unlimited)
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

// Updates returns every card update since New or Reset, in order.
func (e *Emulator) Updates() []Update {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Update(nil), e.updates...)
}

// Reactions returns every reaction added since New or Reset, in order.
func (e *Emulator) Reactions() []Reaction {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Reaction(nil), e.reactions...)
}

// Calls returns every OpenAPI request answered since New or Reset, the token
// endpoint included, in the order the answers were written.
func (e *Emulator) Calls() []Call {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Call(nil), e.calls...)
}

// Throttled counts the calls refused for frequency (99991400 or 230020)
// since New or Reset, whether by a rate limit or a 429 storm.
func (e *Emulator) Throttled() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, c := range e.calls {
		if c.Throttled() {
			n++
		}
	}
	return n
}

// TokenFetches counts calls to the tenant_access_token endpoint since New or
// Reset, failed ones included.
func (e *Emulator) TokenFetches() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fetches
}

// Reset forgets recorded messages, updates, reactions, calls, uuids, card
// tokens, rate-limit windows and the fetch count. Issued tokens, registered
// inbound messages, chats, chat membership and faults stay, so connected
// clients keep working.
func (e *Emulator) Reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fetches = 0
	e.messages = nil
	e.byID = make(map[string]int)
	e.uuids = make(map[uuidKey]uuidEntry)
	e.uuidFIFO = nil
	e.updates = nil
	e.reactions = nil
	e.reactByID = make(map[string]int)
	e.cardTokens = make(map[string]*cardToken)
	e.calls = nil
	e.windows = newWindows()
}

// ExpireTokens makes every issued token invalid now, as when an app secret is
// reset; the next call with one answers 99991663.
func (e *Emulator) ExpireTokens() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expireTokensLocked()
}

func (e *Emulator) expireTokensLocked() {
	clear(e.tokens)
	clear(e.current)
}

// RegisterInbound records that a user's message messageID is in chatID, so
// that replies to it land in that chat (and count against its rate limit).
// Replies to unregistered om_ IDs land in a chat derived from the ID.
func (e *Emulator) RegisterInbound(messageID, chatID string) {
	e.RegisterInboundMessage(InboundMessage{MessageID: messageID, ChatID: chatID})
}

// RegisterInboundMessage is RegisterInbound with the message's sender and
// content, which message.get answers.
func (e *Emulator) RegisterInboundMessage(m InboundMessage) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m.SenderOpenID == "" {
		m.SenderOpenID = derivedID("ou_", 16, "sender-of", m.MessageID)
	}
	if m.MsgType == "" {
		m.MsgType = "text"
	}
	if m.Content == "" {
		m.Content = `{"text":""}`
	}
	if m.CreateTime.IsZero() {
		m.CreateTime = e.now()
	}
	e.inbound[m.MessageID] = m
}

// SetChat describes a chat for chat.get and chatMembers.get, replacing an
// earlier description. A chat not described is a group chat named after its
// ID, owned by the bot, with no other members. Membership of the bot itself
// is SetBotInChat's.
func (e *Emulator) SetChat(c Chat) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c.Members = slices.Clone(c.Members)
	e.chats[c.ChatID] = c
}

// SetBotInChat adds the bot to chatID or removes it: sends and replies into
// a chat the bot is not in answer 230002. The bot is in every chat until
// removed.
func (e *Emulator) SetBotInChat(chatID string, in bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if in {
		delete(e.botOut, chatID)
	} else {
		e.botOut[chatID] = true
	}
}

// IssueCardToken returns a delayed-update token for the card messageID, as a
// card callback carries when a user clicks it: valid for CardTokenTTL, usable
// CardTokenUses times.
func (e *Emulator) IssueCardToken(messageID string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	tok := "c-" + randomHex(16)
	e.cardTokens[tok] = &cardToken{messageID: messageID, expiresAt: e.now().Add(e.cardTokenTTL)}
	return tok
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}
