package larkemu

// Long-connection (WebSocket) mode, docs/lark-facts.md#long-connection:
//
//	POST /callback/ws/endpoint    {"AppID","AppSecret"} → {"code":0,"data":{"URL":"ws://…/ws/v2?…","ClientConfig":{…}}}
//	GET  /ws/v2?…&ticket=…         WebSocket upgrade; pbbp2 frames in binary messages
//
// A WSServer stands alone (NewWSServer, an http.Handler) or is mounted on
// another mux with Register. Tests push events and card callbacks into it
// and read back each ack; it answers pings with pongs (or stops, to play a
// dead peer), redelivers what was acked 500 or not at all on Lark's schedule
// (shortened by options), splits payloads into fragments, and refuses the
// 51st connection of an app with Lark's handshake headers.

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/larkway/larkway/core/internal/longconn/pbbp2"
)

// Long-connection paths.
const (
	WSEndpointPath = "/callback/ws/endpoint"
	WSPath         = "/ws/v2"
)

// DefaultWSMaxConns is Lark's limit of long connections per app.
const DefaultWSMaxConns = 50

// Lark's handshake refusal headers and codes (SDK ws/const.go).
const (
	WSHeaderHandshakeStatus  = "Handshake-Status"
	WSHeaderHandshakeMsg     = "Handshake-Msg"
	WSHeaderHandshakeAuthErr = "Handshake-Autherrcode"

	WSHandshakeForbidden   = 403
	WSHandshakeAuthFailed  = 514
	WSAuthExceedConnLimit  = 1000040350
	wsCodeEndpointBadParam = 10003 // unknown app or missing fields (as the token endpoint)
	wsCodeEndpointBadAuth  = 10014 // wrong app secret (as the token endpoint)
	wsServiceID            = 33554678
	wsMaxEndpointBody      = 64 << 10
	wsTicketTTL            = 5 * time.Minute
)

// Errors reported in WSAck.Err.
var (
	ErrWSClosed       = errors.New("larkemu: long-connection server closed")
	ErrWSNoConnection = errors.New("larkemu: the app has no open long connection")
	ErrWSAckTimeout   = errors.New("larkemu: no ack within the ack timeout")
	ErrWSConnLost     = errors.New("larkemu: connection lost before the ack")
	ErrWSBadAck       = errors.New("larkemu: ack does not echo the pushed frame")
)

// WSClientConfig is what Lark sends with the endpoint and in pongs
// (seconds).
type WSClientConfig struct {
	ReconnectCount    int `json:"ReconnectCount"`
	ReconnectInterval int `json:"ReconnectInterval"`
	ReconnectNonce    int `json:"ReconnectNonce"`
	PingInterval      int `json:"PingInterval"`
}

// WSOptions configures a WSServer. The zero value is usable.
type WSOptions struct {
	// Apps maps app ID to app secret. Empty accepts any app ID with any
	// non-empty secret.
	Apps map[string]string
	// ClientConfig is sent with the endpoint and in every pong (default
	// Lark's observed values: PingInterval 120, ReconnectInterval 120,
	// ReconnectNonce 30, ReconnectCount -1).
	ClientConfig *WSClientConfig
	// MaxConnsPerApp is the connection limit (default DefaultWSMaxConns).
	MaxConnsPerApp int
	// AckTimeout is how long a push waits for its ack before it counts as
	// failed (default 3 s, as Lark).
	AckTimeout time.Duration
	// Retries are the waits before each redelivery of a push that was not
	// acked 200 (nil: Lark's 15 s, 5 min, 1 h, 6 h; empty: no redelivery).
	Retries []time.Duration
	// FragmentSize splits pushed payloads longer than this into fragments
	// (0: never, unless a push asks for fragments).
	FragmentSize int
	// Logger receives debug logs (default: discard).
	Logger *slog.Logger
}

// WSPush is one event or card callback to push.
type WSPush struct {
	// Type is the frame's type header: "event" (default) or "card".
	Type    string
	Payload []byte
	// Fragments splits the payload into this many frames (at most
	// len(Payload)); 0 uses WSOptions.FragmentSize.
	Fragments int
	// Reverse sends the fragments last first.
	Reverse bool
}

// WSAck is the outcome of one delivery attempt of a push.
type WSAck struct {
	Attempt   int    // from 1
	ConnID    string // the connection it went to
	MessageID string // the message_id header of this attempt
	// Code is the ack's code (200, 500) when the client acked.
	Code int
	// Data is the ack's data, base64-decoded (a card response), nil if null.
	Data []byte
	// Headers are the ack frame's headers (the pushed ones plus biz_rt).
	Headers map[string]string
	// Err is set when there was no valid ack: ErrWSNoConnection,
	// ErrWSAckTimeout, ErrWSConnLost, ErrWSClosed or ErrWSBadAck.
	Err error
}

// OK reports an ack with code 200.
func (a WSAck) OK() bool { return a.Err == nil && a.Code == http.StatusOK }

// WSEndpointFault is a discovery failure to inject with FailEndpoint.
type WSEndpointFault struct {
	// HTTPStatus, when not 0 or 200, is answered with an empty body.
	HTTPStatus int
	// Code and Msg are the body's code and msg; Code 0 with NullData answers
	// {"code":0,"data":null}.
	Code     int
	Msg      string
	NullData bool
	// Hang holds the request until the client gives up (or the server
	// closes).
	Hang bool
}

// WSServer emulates Lark's long-connection endpoint. It is safe for
// concurrent use. Close it to end its connections and deliveries.
type WSServer struct {
	apps     map[string]string
	cfg      WSClientConfig
	maxConns int
	ackWait  time.Duration
	retries  []time.Duration
	fragSize int
	log      *slog.Logger
	upgrader websocket.Upgrader
	mux      *http.ServeMux
	done     chan struct{}
	wg       sync.WaitGroup
	pongs    atomic.Bool
	pongsOut atomic.Int64
	pingsIn  atomic.Int64
	seq      atomic.Uint64

	mu            sync.Mutex
	closed        bool
	tickets       map[string]wsTicket
	conns         map[string]*wsConn // by conn id
	connects      map[string]int     // accepted handshakes by app
	forbidden     map[string]bool
	faults        []WSEndpointFault
	endpointCalls int
	acks          []WSAck
}

type wsTicket struct {
	app    string
	connID string
	issued time.Time
}

type wsConn struct {
	id      string
	app     string
	ws      *websocket.Conn // nil while the handshake is in progress
	stalled atomic.Bool
	gone    chan struct{} // closed when the connection ends

	wmu sync.Mutex

	mu      sync.Mutex
	waiting map[string]*wsWaiter // by message_id
}

type wsWaiter struct {
	frames []*pbbp2.Frame
	ch     chan WSAck // buffered 1
}

// NewWSServer builds a WSServer. It does no I/O.
func NewWSServer(opts WSOptions) *WSServer {
	s := &WSServer{
		apps:      maps.Clone(opts.Apps),
		cfg:       WSClientConfig{ReconnectCount: -1, ReconnectInterval: 120, ReconnectNonce: 30, PingInterval: 120},
		maxConns:  opts.MaxConnsPerApp,
		ackWait:   opts.AckTimeout,
		retries:   opts.Retries,
		fragSize:  opts.FragmentSize,
		log:       opts.Logger,
		done:      make(chan struct{}),
		tickets:   make(map[string]wsTicket),
		conns:     make(map[string]*wsConn),
		connects:  make(map[string]int),
		forbidden: make(map[string]bool),
		upgrader:  websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }},
	}
	if opts.ClientConfig != nil {
		s.cfg = *opts.ClientConfig
	}
	if s.maxConns <= 0 {
		s.maxConns = DefaultWSMaxConns
	}
	if s.ackWait <= 0 {
		s.ackWait = 3 * time.Second
	}
	if s.retries == nil {
		s.retries = []time.Duration{15 * time.Second, 5 * time.Minute, time.Hour, 6 * time.Hour}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "larkemu.ws")
	s.pongs.Store(true)
	s.mux = http.NewServeMux()
	s.Register(s.mux)
	return s
}

// Register mounts the endpoint and the WebSocket routes on mux.
func (s *WSServer) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST "+WSEndpointPath, s.handleEndpoint)
	mux.HandleFunc("GET "+WSPath, s.handleWS)
}

// ServeHTTP serves the two routes; anything else is a 404 with a JSON body,
// as on the Emulator.
func (s *WSServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern == "" || !canonicalPath(r.URL.Path) {
		writeNotFound(w)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// Close ends every connection and pending delivery (their channels close)
// and waits for the server's goroutines. It is idempotent.
func (s *WSServer) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
		for _, c := range s.conns {
			if c.ws != nil {
				_ = c.ws.Close()
			}
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// SetPongs turns answering pings on or off for every connection: off, the
// client hears nothing unless events are pushed — a dead peer.
func (s *WSServer) SetPongs(on bool) { s.pongs.Store(on) }

// Stall makes the app's open connections half-open: from now on the server
// neither reads nor writes on them (no pongs, no pushes, acks ignored), but
// keeps them open until the client closes them. New connections work. It
// returns the stalled connection ids.
func (s *WSServer) Stall(appID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, c := range s.conns {
		if c.app == appID && c.ws != nil {
			c.stalled.Store(true)
			ids = append(ids, c.id)
		}
	}
	slices.Sort(ids)
	return ids
}

// ForbidApp makes handshakes of appID fail with Handshake-Status 403 (the
// app is banned from long connections), or stops doing so.
func (s *WSServer) ForbidApp(appID string, forbidden bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forbidden[appID] = forbidden
}

// FailEndpoint makes the next n discovery calls fail with f.
func (s *WSServer) FailEndpoint(n int, f WSEndpointFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, f)
	}
}

// EndpointCalls counts discovery calls, failed ones included.
func (s *WSServer) EndpointCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endpointCalls
}

// Connections is the number of open connections of appID.
func (s *WSServer) Connections(appID string) int { return len(s.ConnIDs(appID)) }

// ConnIDs lists the open connections of appID, sorted.
func (s *WSServer) ConnIDs(appID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, c := range s.conns {
		if c.app == appID && c.ws != nil {
			ids = append(ids, c.id)
		}
	}
	slices.Sort(ids)
	return ids
}

// Connects counts the handshakes of appID accepted since NewWSServer.
func (s *WSServer) Connects(appID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connects[appID]
}

// Pings counts the pings received (stalled connections' excluded) and Pongs
// those answered, since NewWSServer.
func (s *WSServer) Pings() int { return int(s.pingsIn.Load()) }

// Pongs: see Pings.
func (s *WSServer) Pongs() int { return int(s.pongsOut.Load()) }

// Acks returns every delivery attempt's outcome so far, in order.
func (s *WSServer) Acks() []WSAck {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.acks)
}

// --- discovery ---------------------------------------------------------------

type wsEndpointResponse struct {
	Code int    `json:"code"`
	Msg  string `json:"msg"`
	Data any    `json:"data"`
}

func wsWriteJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

func (s *WSServer) handleEndpoint(w http.ResponseWriter, r *http.Request) {
	// Read the body first: only then does the server notice a client that
	// hangs up, which a hanging fault relies on.
	body, readErr := io.ReadAll(io.LimitReader(r.Body, wsMaxEndpointBody))
	s.mu.Lock()
	s.endpointCalls++
	var fault *WSEndpointFault
	if len(s.faults) > 0 {
		fault = &s.faults[0]
		s.faults = s.faults[1:]
	}
	s.mu.Unlock()
	if fault != nil {
		switch {
		case fault.Hang:
			select {
			case <-r.Context().Done():
			case <-s.done:
			}
			return
		case fault.HTTPStatus != 0 && fault.HTTPStatus != http.StatusOK:
			w.WriteHeader(fault.HTTPStatus)
			return
		case fault.Code == 0 && fault.NullData:
			wsWriteJSON(w, wsEndpointResponse{Code: 0, Msg: "success"})
			return
		default:
			wsWriteJSON(w, wsEndpointResponse{Code: fault.Code, Msg: fault.Msg})
			return
		}
	}
	var req struct {
		AppID     string `json:"AppID"`
		AppSecret string `json:"AppSecret"`
	}
	if readErr != nil || json.Unmarshal(body, &req) != nil || req.AppID == "" || req.AppSecret == "" {
		wsWriteJSON(w, wsEndpointResponse{Code: wsCodeEndpointBadParam, Msg: "invalid param: AppID and AppSecret are required"})
		return
	}
	if len(s.apps) > 0 {
		secret, ok := s.apps[req.AppID]
		if !ok {
			wsWriteJSON(w, wsEndpointResponse{Code: wsCodeEndpointBadParam, Msg: "app not found"})
			return
		}
		if secret != req.AppSecret {
			wsWriteJSON(w, wsEndpointResponse{Code: wsCodeEndpointBadAuth, Msg: "app secret invalid"})
			return
		}
	}
	ticket, connID := wsRandomHex(16), strconv.FormatUint(s.seq.Add(1), 10)+wsRandomHex(4)
	now := time.Now()
	s.mu.Lock()
	for t, tk := range s.tickets {
		if now.Sub(tk.issued) > wsTicketTTL {
			delete(s.tickets, t)
		}
	}
	s.tickets[ticket] = wsTicket{app: req.AppID, connID: connID, issued: now}
	cfg := s.cfg
	s.mu.Unlock()

	scheme := "ws"
	if r.TLS != nil {
		scheme = "wss"
	}
	q := url.Values{}
	q.Set("fpid", "493")
	q.Set("aid", "552564")
	q.Set("device_id", connID)
	q.Set("access_key", wsRandomHex(16))
	q.Set("service_id", strconv.Itoa(wsServiceID))
	q.Set("ticket", ticket)
	u := url.URL{Scheme: scheme, Host: r.Host, Path: WSPath, RawQuery: q.Encode()}
	s.log.Debug("endpoint issued", "app", req.AppID, "conn_id", connID)
	wsWriteJSON(w, wsEndpointResponse{Code: 0, Msg: "ok", Data: map[string]any{"URL": u.String(), "ClientConfig": cfg}})
}

// --- connections ---------------------------------------------------------------

func wsRefuse(w http.ResponseWriter, status, authCode int, msg string) {
	w.Header().Set(WSHeaderHandshakeStatus, strconv.Itoa(status))
	w.Header().Set(WSHeaderHandshakeMsg, msg)
	if authCode != 0 {
		w.Header().Set(WSHeaderHandshakeAuthErr, strconv.Itoa(authCode))
	}
	// Lark's HTTP status for a refusal is not documented; clients read the
	// Handshake-* headers.
	http.Error(w, msg, http.StatusForbidden)
}

func (s *WSServer) handleWS(w http.ResponseWriter, r *http.Request) {
	ticket := r.URL.Query().Get("ticket")
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "server closed", http.StatusServiceUnavailable)
		return
	}
	tk, ok := s.tickets[ticket]
	delete(s.tickets, ticket) // single use
	if !ok || time.Since(tk.issued) > wsTicketTTL {
		s.mu.Unlock()
		wsRefuse(w, WSHandshakeAuthFailed, 0, "invalid or expired ticket")
		return
	}
	if s.forbidden[tk.app] {
		s.mu.Unlock()
		wsRefuse(w, WSHandshakeForbidden, 0, "forbidden")
		return
	}
	n := 0
	for _, c := range s.conns {
		if c.app == tk.app {
			n++
		}
	}
	if n >= s.maxConns {
		s.mu.Unlock()
		s.log.Debug("connection limit", "app", tk.app, "open", n)
		wsRefuse(w, WSHandshakeAuthFailed, WSAuthExceedConnLimit, fmt.Sprintf("exceed conn limit: %d", s.maxConns))
		return
	}
	// Reserve the slot before upgrading so concurrent handshakes cannot
	// exceed the limit.
	c := &wsConn{id: tk.connID, app: tk.app, gone: make(chan struct{}), waiting: make(map[string]*wsWaiter)}
	s.conns[c.id] = c
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	ws, err := s.upgrader.Upgrade(w, r, nil)
	s.mu.Lock()
	if err != nil || s.closed {
		delete(s.conns, c.id)
		s.mu.Unlock()
		if ws != nil {
			_ = ws.Close()
		}
		close(c.gone)
		return
	}
	c.ws = ws
	s.connects[c.app]++
	s.mu.Unlock()
	s.log.Debug("connection open", "app", c.app, "conn_id", c.id)

	defer func() {
		s.mu.Lock()
		delete(s.conns, c.id)
		s.mu.Unlock()
		_ = ws.Close()
		close(c.gone)
		s.log.Debug("connection closed", "app", c.app, "conn_id", c.id)
	}()
	for {
		mt, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if c.stalled.Load() {
			continue // half-open: nothing gets through
		}
		if mt != websocket.BinaryMessage {
			s.log.Warn("client sent a non-binary message", "conn_id", c.id)
			continue
		}
		f, err := pbbp2.Decode(data)
		if err != nil {
			s.log.Warn("client sent an undecodable frame", "conn_id", c.id, "err", err)
			continue
		}
		switch {
		case f.Method == pbbp2.MethodControl && f.Header(pbbp2.HeaderType) == pbbp2.TypePing:
			s.pingsIn.Add(1)
			if s.pongs.Load() {
				s.pong(c, f)
			}
		case f.Method == pbbp2.MethodData:
			c.ack(f)
		default:
			s.log.Warn("client sent an unexpected frame", "conn_id", c.id, "method", f.Method, "type", f.Header(pbbp2.HeaderType))
		}
	}
}

func (s *WSServer) pong(c *wsConn, ping *pbbp2.Frame) {
	s.mu.Lock()
	cfg := s.cfg
	s.mu.Unlock()
	payload, _ := json.Marshal(cfg)
	pong := &pbbp2.Frame{SeqID: ping.SeqID, LogID: ping.LogID, Service: ping.Service, Method: pbbp2.MethodControl,
		Headers: []pbbp2.Header{{Key: pbbp2.HeaderType, Value: pbbp2.TypePong}}, Payload: payload}
	s.pongsOut.Add(1)
	if err := c.write(websocket.BinaryMessage, pbbp2.Encode(pong)); err != nil {
		s.log.Debug("pong not sent", "conn_id", c.id, "err", err)
	}
}

func (c *wsConn) write(mt int, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	return c.ws.WriteMessage(mt, b)
}

// ack matches an ack frame to its push and checks it echoes the pushed frame:
// same SeqID, LogID, service and method, the pushed headers plus biz_rt,
// and a {"code","headers","data"} payload.
func (c *wsConn) ack(f *pbbp2.Frame) {
	id := f.Header(pbbp2.HeaderMessageID)
	c.mu.Lock()
	w := c.waiting[id]
	delete(c.waiting, id)
	c.mu.Unlock()
	if w == nil {
		return // late, duplicate or unknown
	}
	a := WSAck{ConnID: c.id, MessageID: id, Headers: make(map[string]string, len(f.Headers))}
	for _, h := range f.Headers {
		a.Headers[h.Key] = h.Value
	}
	var sent *pbbp2.Frame
	for _, p := range w.frames {
		if p.SeqID == f.SeqID {
			sent = p
		}
	}
	var resp struct {
		Code int             `json:"code"`
		Data json.RawMessage `json:"data"`
	}
	switch {
	case sent == nil:
		a.Err = fmt.Errorf("%w: SeqID %d matches no pushed frame", ErrWSBadAck, f.SeqID)
	case f.LogID != sent.LogID || f.Service != sent.Service || f.Method != sent.Method:
		a.Err = fmt.Errorf("%w: LogID/service/method %d/%d/%d, pushed %d/%d/%d", ErrWSBadAck,
			f.LogID, f.Service, f.Method, sent.LogID, sent.Service, sent.Method)
	case a.Headers[pbbp2.HeaderBizRT] == "":
		a.Err = fmt.Errorf("%w: no biz_rt header", ErrWSBadAck)
	case json.Unmarshal(f.Payload, &resp) != nil:
		a.Err = fmt.Errorf("%w: payload is not a JSON response: %q", ErrWSBadAck, f.Payload)
	}
	if a.Err == nil {
		for _, h := range sent.Headers {
			if a.Headers[h.Key] != h.Value {
				a.Err = fmt.Errorf("%w: header %s = %q, pushed %q", ErrWSBadAck, h.Key, a.Headers[h.Key], h.Value)
				break
			}
		}
	}
	if a.Err == nil {
		a.Code = resp.Code
		if len(resp.Data) > 0 && string(resp.Data) != "null" {
			if err := json.Unmarshal(resp.Data, &a.Data); err != nil {
				a.Err = fmt.Errorf("%w: data is not base64: %v", ErrWSBadAck, err)
			}
		}
	}
	w.ch <- a
}

// --- pushing -----------------------------------------------------------------

// PushEvent pushes a type=event frame carrying eventJSON to one of the app's
// connections (at random, as Lark does). The channel receives the outcome
// of each delivery attempt — redeliveries follow WSOptions.Retries while the
// ack is not 200 — and is closed after the last.
func (s *WSServer) PushEvent(appID string, eventJSON []byte) (<-chan WSAck, error) {
	return s.Push(appID, WSPush{Type: pbbp2.TypeEvent, Payload: eventJSON})
}

// PushCard pushes a type=card frame carrying a card callback body.
func (s *WSServer) PushCard(appID string, callbackJSON []byte) (<-chan WSAck, error) {
	return s.Push(appID, WSPush{Type: pbbp2.TypeCard, Payload: callbackJSON})
}

// Push pushes p to one of the app's connections; see PushEvent.
func (s *WSServer) Push(appID string, p WSPush) (<-chan WSAck, error) {
	if p.Type == "" {
		p.Type = pbbp2.TypeEvent
	}
	if p.Type != pbbp2.TypeEvent && p.Type != pbbp2.TypeCard {
		return nil, fmt.Errorf("larkemu: push type %q is neither event nor card", p.Type)
	}
	p.Payload = slices.Clone(p.Payload)
	ch := make(chan WSAck, len(s.retries)+1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrWSClosed
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go s.deliver(appID, p, ch)
	return ch, nil
}

func (s *WSServer) deliver(appID string, p WSPush, ch chan<- WSAck) {
	defer s.wg.Done()
	defer close(ch)
	for attempt := 1; ; attempt++ {
		a := s.attempt(appID, p)
		a.Attempt = attempt
		s.mu.Lock()
		s.acks = append(s.acks, a)
		s.mu.Unlock()
		s.log.Debug("delivery attempt", "app", appID, "attempt", attempt, "conn_id", a.ConnID, "code", a.Code, "err", a.Err)
		ch <- a
		if a.OK() || attempt > len(s.retries) || errors.Is(a.Err, ErrWSClosed) {
			return
		}
		t := time.NewTimer(s.retries[attempt-1])
		select {
		case <-s.done:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// pick returns a random open, not stalled connection of app.
func (s *WSServer) pick(appID string) *wsConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cs []*wsConn
	for _, c := range s.conns {
		if c.app == appID && c.ws != nil && !c.stalled.Load() {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		return nil
	}
	return cs[mrand.IntN(len(cs))]
}

// frames splits p into the frames of one delivery.
func (s *WSServer) frames(p WSPush, msgID string) []*pbbp2.Frame {
	n := p.Fragments
	if n <= 0 {
		n = 1
		if s.fragSize > 0 && len(p.Payload) > s.fragSize {
			n = (len(p.Payload) + s.fragSize - 1) / s.fragSize
		}
	}
	n = max(1, min(n, len(p.Payload)))
	logID := s.seq.Add(1)
	trace := wsRandomHex(8)
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	out := make([]*pbbp2.Frame, n)
	size := (len(p.Payload) + n - 1) / n
	for i := range n {
		lo, hi := min(i*size, len(p.Payload)), min((i+1)*size, len(p.Payload))
		out[i] = &pbbp2.Frame{
			SeqID: s.seq.Add(1), LogID: logID, Service: wsServiceID, Method: pbbp2.MethodData,
			Headers: []pbbp2.Header{
				{Key: pbbp2.HeaderType, Value: p.Type},
				{Key: pbbp2.HeaderMessageID, Value: msgID},
				{Key: pbbp2.HeaderSum, Value: strconv.Itoa(n)},
				{Key: pbbp2.HeaderSeq, Value: strconv.Itoa(i)},
				{Key: pbbp2.HeaderTraceID, Value: trace},
				{Key: pbbp2.HeaderTimestamp, Value: ts},
			},
			Payload: p.Payload[lo:hi:hi], LogIDNew: strconv.FormatUint(logID, 10) + "_emu",
		}
	}
	return out
}

func (s *WSServer) attempt(appID string, p WSPush) WSAck {
	c := s.pick(appID)
	if c == nil {
		return WSAck{Err: ErrWSNoConnection}
	}
	msgID := wsRandomHex(12)
	frames := s.frames(p, msgID)
	w := &wsWaiter{frames: frames, ch: make(chan WSAck, 1)}
	c.mu.Lock()
	c.waiting[msgID] = w
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, msgID)
		c.mu.Unlock()
	}()
	order := slices.Clone(frames)
	if p.Reverse {
		slices.Reverse(order)
	}
	for _, f := range order {
		if err := c.write(websocket.BinaryMessage, pbbp2.Encode(f)); err != nil {
			return WSAck{ConnID: c.id, MessageID: msgID, Err: fmt.Errorf("%w: %v", ErrWSConnLost, err)}
		}
	}
	t := time.NewTimer(s.ackWait)
	defer t.Stop()
	var err error
	select {
	case a := <-w.ch:
		return a
	case <-c.gone:
		err = ErrWSConnLost
	case <-t.C:
		err = ErrWSAckTimeout
	case <-s.done:
		err = ErrWSClosed
	}
	// An ack read just before the connection closed still counts.
	select {
	case a := <-w.ch:
		return a
	default:
		return WSAck{ConnID: c.id, MessageID: msgID, Err: err}
	}
}

// SendRaw writes one WebSocket message of type mt (websocket.BinaryMessage
// = 2, TextMessage = 1) to one of the app's connections, as is: for
// garbage-frame tests. It returns the connection id.
func (s *WSServer) SendRaw(appID string, mt int, b []byte) (string, error) {
	c := s.pick(appID)
	if c == nil {
		return "", ErrWSNoConnection
	}
	if err := c.write(mt, b); err != nil {
		return c.id, fmt.Errorf("%w: %v", ErrWSConnLost, err)
	}
	return c.id, nil
}

func wsRandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
