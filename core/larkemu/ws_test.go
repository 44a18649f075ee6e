package larkemu_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/larkway/larkway/core/internal/longconn/pbbp2"
	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
)

const (
	wsApp    = "cli_ws"
	wsSecret = "ws-secret"
	wsWait   = 10 * time.Second
)

type wsEnv struct {
	emu *larkemu.WSServer
	srv *httptest.Server
}

func newWSEnv(t *testing.T, opts larkemu.WSOptions) *wsEnv {
	t.Helper()
	if opts.Apps == nil {
		opts.Apps = map[string]string{wsApp: wsSecret}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e := &wsEnv{emu: larkemu.NewWSServer(opts)}
	e.srv = httptest.NewServer(e.emu)
	t.Cleanup(func() {
		e.emu.Close()
		e.srv.Close()
	})
	return e
}

type endpointResp struct {
	Code int    `json:"code"`
	Msg  string `json:"msg"`
	Data *struct {
		URL          string                 `json:"URL"`
		ClientConfig larkemu.WSClientConfig `json:"ClientConfig"`
	} `json:"data"`
}

func (e *wsEnv) discover(t *testing.T, appID, secret string) endpointResp {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"AppID": appID, "AppSecret": secret})
	resp, err := http.Post(e.srv.URL+larkemu.WSEndpointPath, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r endpointResp
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("endpoint answered HTTP %d, not JSON: %v", resp.StatusCode, err)
	}
	return r
}

// rawConn is a hand-driven client connection.
type rawConn struct {
	ws *websocket.Conn
	id string
}

func (e *wsEnv) dial(t *testing.T) *rawConn {
	t.Helper()
	c, resp, err := e.tryDial(t, e.url(t))
	if err != nil {
		t.Fatalf("dial: %v (HTTP %v)", err, resp)
	}
	// The client's handshake completes a moment before the server has
	// registered the connection.
	testenv.Eventually(t, wsWait, "connection registered", func() bool { return slices.Contains(e.emu.ConnIDs(wsApp), c.id) })
	return c
}

func (e *wsEnv) url(t *testing.T) string {
	t.Helper()
	r := e.discover(t, wsApp, wsSecret)
	if r.Code != 0 || r.Data == nil {
		t.Fatalf("discovery: %+v", r)
	}
	return r.Data.URL
}

func (e *wsEnv) tryDial(t *testing.T, u string) (*rawConn, *http.Response, error) {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		return nil, resp, err
	}
	t.Cleanup(func() { _ = ws.Close() })
	pu, _ := url.Parse(u)
	return &rawConn{ws: ws, id: pu.Query().Get("device_id")}, resp, nil
}

func (c *rawConn) send(t *testing.T, f *pbbp2.Frame) {
	t.Helper()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, pbbp2.Encode(f)); err != nil {
		t.Fatal(err)
	}
}

func (c *rawConn) read(t *testing.T) *pbbp2.Frame {
	t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(wsWait))
	mt, b, err := c.ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if mt != websocket.BinaryMessage {
		t.Fatalf("message type %d, want binary", mt)
	}
	f, err := pbbp2.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func ping(seq uint64) *pbbp2.Frame {
	return &pbbp2.Frame{SeqID: seq, Service: 1, Method: pbbp2.MethodControl,
		Headers: []pbbp2.Header{{Key: pbbp2.HeaderType, Value: pbbp2.TypePing}}}
}

// ackFrame echoes f with biz_rt and a response payload, as a client must.
func ackFrame(f *pbbp2.Frame, code int, data []byte) *pbbp2.Frame {
	a := *f
	a.Headers = append(append([]pbbp2.Header(nil), f.Headers...), pbbp2.Header{Key: pbbp2.HeaderBizRT, Value: "3"})
	a.Payload, _ = json.Marshal(map[string]any{"code": code, "headers": nil, "data": data})
	return &a
}

func wsNextAck(t *testing.T, ch <-chan larkemu.WSAck) larkemu.WSAck {
	t.Helper()
	select {
	case a, ok := <-ch:
		if !ok {
			t.Fatal("no more attempts")
		}
		return a
	case <-time.After(wsWait):
		t.Fatal("no delivery outcome")
		return larkemu.WSAck{}
	}
}

func TestWSEndpoint(t *testing.T) {
	cfg := &larkemu.WSClientConfig{ReconnectCount: -1, ReconnectInterval: 90, ReconnectNonce: 25, PingInterval: 90}
	e := newWSEnv(t, larkemu.WSOptions{ClientConfig: cfg})
	r := e.discover(t, wsApp, wsSecret)
	if r.Code != 0 || r.Data == nil || r.Data.ClientConfig != *cfg {
		t.Fatalf("discovery = %+v", r)
	}
	u, err := url.Parse(r.Data.URL)
	if err != nil || u.Scheme != "ws" || u.Path != larkemu.WSPath || "http://"+u.Host != e.srv.URL {
		t.Fatalf("URL %q is not a ws:// URL on this server", r.Data.URL)
	}
	for _, k := range []string{"device_id", "service_id", "ticket", "access_key"} {
		if u.Query().Get(k) == "" {
			t.Errorf("URL has no %s", k)
		}
	}
	for _, tt := range []struct {
		name, app, secret string
		code              int
	}{
		{"wrong secret", wsApp, "nope", 10014},
		{"unknown app", "cli_other", wsSecret, 10003},
		{"missing secret", wsApp, "", 10003},
	} {
		if got := e.discover(t, tt.app, tt.secret); got.Code != tt.code || got.Data != nil {
			t.Errorf("%s: %+v, want code %d", tt.name, got, tt.code)
		}
	}
	if n := e.emu.EndpointCalls(); n != 4 {
		t.Errorf("EndpointCalls = %d, want 4", n)
	}

	e.emu.FailEndpoint(1, larkemu.WSEndpointFault{Code: 1, Msg: "system busy"})
	e.emu.FailEndpoint(1, larkemu.WSEndpointFault{NullData: true})
	if got := e.discover(t, wsApp, wsSecret); got.Code != 1 || got.Msg != "system busy" {
		t.Errorf("injected busy: %+v", got)
	}
	if got := e.discover(t, wsApp, wsSecret); got.Code != 0 || got.Data != nil {
		t.Errorf("injected null data: %+v", got)
	}
	if got := e.discover(t, wsApp, wsSecret); got.Code != 0 || got.Data == nil {
		t.Errorf("after the faults: %+v", got)
	}
	e.emu.FailEndpoint(1, larkemu.WSEndpointFault{HTTPStatus: 503})
	resp, err := http.Post(e.srv.URL+larkemu.WSEndpointPath, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("injected HTTP 503: got %d", resp.StatusCode)
	}
}

func TestWSHandshakeRefusals(t *testing.T) {
	e := newWSEnv(t, larkemu.WSOptions{})
	refused := func(t *testing.T, u string, status, auth string) {
		t.Helper()
		_, resp, err := e.tryDial(t, u)
		if err == nil {
			t.Fatal("handshake accepted")
		}
		if resp == nil {
			t.Fatalf("no handshake response: %v", err)
		}
		if got := resp.Header.Get(larkemu.WSHeaderHandshakeStatus); got != status {
			t.Errorf("Handshake-Status %q, want %q", got, status)
		}
		if got := resp.Header.Get(larkemu.WSHeaderHandshakeAuthErr); got != auth {
			t.Errorf("Handshake-Autherrcode %q, want %q", got, auth)
		}
		if resp.Header.Get(larkemu.WSHeaderHandshakeMsg) == "" {
			t.Error("no Handshake-Msg")
		}
	}
	t.Run("ticket is single use", func(t *testing.T) {
		u := e.url(t)
		if _, _, err := e.tryDial(t, u); err != nil {
			t.Fatal(err)
		}
		refused(t, u, "514", "")
	})
	t.Run("forbidden app", func(t *testing.T) {
		e.emu.ForbidApp(wsApp, true)
		defer e.emu.ForbidApp(wsApp, false)
		refused(t, e.url(t), "403", "")
	})
}

func TestWSConnectionLimit(t *testing.T) {
	e := newWSEnv(t, larkemu.WSOptions{Logger: slog.New(slog.DiscardHandler)})
	conns := make([]*rawConn, larkemu.DefaultWSMaxConns)
	var wg sync.WaitGroup
	for i := range conns {
		u := e.url(t)
		wg.Go(func() {
			ws, _, err := websocket.DefaultDialer.Dial(u, nil)
			if err != nil {
				t.Errorf("connection %d: %v", i, err)
				return
			}
			conns[i] = &rawConn{ws: ws}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				_ = c.ws.Close()
			}
		}
	})
	testenv.Eventually(t, wsWait, "50 connections registered", func() bool {
		return e.emu.Connections(wsApp) == larkemu.DefaultWSMaxConns
	})
	_, resp, err := e.tryDial(t, e.url(t))
	if err == nil || resp == nil {
		t.Fatalf("51st connection: err %v, resp %v; want a refusal", err, resp)
	}
	if resp.Header.Get(larkemu.WSHeaderHandshakeStatus) != "514" || resp.Header.Get(larkemu.WSHeaderHandshakeAuthErr) != strconv.Itoa(larkemu.WSAuthExceedConnLimit) {
		t.Errorf("51st connection refused with %v, want 514 / 1000040350", resp.Header)
	}
	// Closing one frees a slot.
	_ = conns[0].ws.Close()
	testenv.Eventually(t, wsWait, "the closed connection is forgotten", func() bool {
		return e.emu.Connections(wsApp) == larkemu.DefaultWSMaxConns-1
	})
	e.dial(t)
	if n := e.emu.Connects(wsApp); n != larkemu.DefaultWSMaxConns+1 {
		t.Errorf("Connects = %d, want %d", n, larkemu.DefaultWSMaxConns+1)
	}
}

func TestWSPingPong(t *testing.T) {
	e := newWSEnv(t, larkemu.WSOptions{})
	c := e.dial(t)
	c.send(t, ping(1))
	pong := c.read(t)
	var cfg larkemu.WSClientConfig
	if pong.Header(pbbp2.HeaderType) != pbbp2.TypePong || pong.Method != pbbp2.MethodControl || pong.SeqID != 1 ||
		json.Unmarshal(pong.Payload, &cfg) != nil || cfg.PingInterval != 120 {
		t.Fatalf("pong = %+v (config %+v)", pong, cfg)
	}
	// Off: ping 2 goes unanswered; back on: the next frame answers ping 3.
	e.emu.SetPongs(false)
	c.send(t, ping(2))
	testenv.Eventually(t, wsWait, "ping 2 received", func() bool { return e.emu.Pings() == 2 })
	e.emu.SetPongs(true)
	c.send(t, ping(3))
	if f := c.read(t); f.SeqID != 3 {
		t.Errorf("answered ping %d, want only ping 3", f.SeqID)
	}
	if n := e.emu.Pongs(); n != 2 {
		t.Errorf("Pongs = %d, want 2", n)
	}
}

func TestWSPushAckAndRedelivery(t *testing.T) {
	e := newWSEnv(t, larkemu.WSOptions{Retries: []time.Duration{0, 0}})
	c := e.dial(t)
	payload := []byte(`{"schema":"2.0","header":{"event_id":"e1","event_type":"im.chat.disbanded_v1"}}`)
	acks, err := e.emu.PushEvent(wsApp, payload)
	if err != nil {
		t.Fatal(err)
	}
	f1 := c.read(t)
	if f1.Method != pbbp2.MethodData || f1.Header(pbbp2.HeaderType) != pbbp2.TypeEvent || !bytes.Equal(f1.Payload, payload) ||
		f1.Header(pbbp2.HeaderSum) != "1" || f1.Header(pbbp2.HeaderSeq) != "0" || f1.Header(pbbp2.HeaderMessageID) == "" {
		t.Fatalf("pushed frame = %+v", f1)
	}
	c.send(t, ackFrame(f1, 500, nil))
	if a := wsNextAck(t, acks); a.Code != 500 || a.Err != nil || a.Attempt != 1 || a.ConnID != c.id {
		t.Fatalf("attempt 1 = %+v", a)
	}
	// Redelivered: same payload, a new message_id; this ack is malformed.
	f2 := c.read(t)
	if !bytes.Equal(f2.Payload, payload) || f2.Header(pbbp2.HeaderMessageID) == f1.Header(pbbp2.HeaderMessageID) {
		t.Fatalf("redelivery = %+v", f2)
	}
	bad := ackFrame(f2, 200, nil)
	bad.LogID++
	c.send(t, bad)
	if a := wsNextAck(t, acks); !errors.Is(a.Err, larkemu.ErrWSBadAck) {
		t.Fatalf("attempt 2 with a wrong LogID = %+v, want ErrWSBadAck", a)
	}
	f3 := c.read(t)
	c.send(t, ackFrame(f3, 200, []byte(`{"toast":{"type":"info","content":"hi"}}`)))
	a := wsNextAck(t, acks)
	if !a.OK() || a.Attempt != 3 || string(a.Data) != `{"toast":{"type":"info","content":"hi"}}` || a.Headers[pbbp2.HeaderBizRT] != "3" {
		t.Fatalf("attempt 3 = %+v", a)
	}
	if _, ok := <-acks; ok {
		t.Error("channel not closed after the 200")
	}
	if n := len(e.emu.Acks()); n != 3 {
		t.Errorf("Acks() has %d entries, want 3", n)
	}
}

func TestWSFragmentsAndCards(t *testing.T) {
	e := newWSEnv(t, larkemu.WSOptions{Retries: []time.Duration{}, FragmentSize: 10})
	c := e.dial(t)
	payload := []byte(`{"schema":"2.0","header":{"event_id":"c1","event_type":"card.action.trigger"}}`)
	acks, err := e.emu.PushCard(wsApp, payload)
	if err != nil {
		t.Fatal(err)
	}
	n := (len(payload) + 9) / 10
	var got []byte
	var last *pbbp2.Frame
	for i := range n {
		f := c.read(t)
		if f.Header(pbbp2.HeaderType) != pbbp2.TypeCard || f.Header(pbbp2.HeaderSum) != strconv.Itoa(n) || f.Header(pbbp2.HeaderSeq) != strconv.Itoa(i) {
			t.Fatalf("fragment %d: headers %+v", i, f.Headers)
		}
		if last != nil && f.Header(pbbp2.HeaderMessageID) != last.Header(pbbp2.HeaderMessageID) {
			t.Fatal("fragments of one message have different message_ids")
		}
		got = append(got, f.Payload...)
		last = f
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("fragments join to %q", got)
	}
	c.send(t, ackFrame(last, 200, []byte(`{}`)))
	if a := wsNextAck(t, acks); !a.OK() || string(a.Data) != "{}" {
		t.Fatalf("card ack = %+v", a)
	}

	// Reverse order on request.
	acks, _ = e.emu.Push(wsApp, larkemu.WSPush{Payload: []byte("abcdef"), Fragments: 3, Reverse: true})
	for _, want := range []string{"2", "1", "0"} {
		if f := c.read(t); f.Header(pbbp2.HeaderSeq) != want {
			t.Fatalf("seq %s, want %s", f.Header(pbbp2.HeaderSeq), want)
		}
	}
	_ = acks
}

func TestWSStallAndNoConnection(t *testing.T) {
	e := newWSEnv(t, larkemu.WSOptions{Retries: []time.Duration{}, AckTimeout: 50 * time.Millisecond})
	acks, _ := e.emu.PushEvent(wsApp, []byte(`{}`))
	if a := wsNextAck(t, acks); !errors.Is(a.Err, larkemu.ErrWSNoConnection) {
		t.Errorf("push without connection = %+v", a)
	}
	c := e.dial(t)
	if ids := e.emu.Stall(wsApp); len(ids) != 1 || ids[0] != c.id {
		t.Fatalf("Stall = %v, want [%s]", ids, c.id)
	}
	// A stalled connection gets no pushes and no pongs, but stays open.
	acks, _ = e.emu.PushEvent(wsApp, []byte(`{}`))
	if a := wsNextAck(t, acks); !errors.Is(a.Err, larkemu.ErrWSNoConnection) {
		t.Errorf("push to a stalled app = %+v", a)
	}
	if n := e.emu.Connections(wsApp); n != 1 {
		t.Errorf("Connections = %d, want the stalled one counted", n)
	}
	// A new connection works; an unacked push times out.
	c2 := e.dial(t)
	acks, _ = e.emu.PushEvent(wsApp, []byte(`{}`))
	_ = c2.read(t)
	if a := wsNextAck(t, acks); !errors.Is(a.Err, larkemu.ErrWSAckTimeout) || a.ConnID != c2.id {
		t.Errorf("unacked push = %+v", a)
	}
	// The client closing a connection fails its pending push.
	acks, _ = e.emu.PushEvent(wsApp, []byte(`{}`))
	_ = c2.read(t)
	_ = c2.ws.Close()
	if a := wsNextAck(t, acks); !errors.Is(a.Err, larkemu.ErrWSConnLost) && !errors.Is(a.Err, larkemu.ErrWSAckTimeout) {
		t.Errorf("push on a closed connection = %+v", a)
	}
}

func TestWSCloseEndsEverything(t *testing.T) {
	e := newWSEnv(t, larkemu.WSOptions{Retries: []time.Duration{time.Hour}, AckTimeout: time.Hour})
	c := e.dial(t)
	acks, _ := e.emu.PushEvent(wsApp, []byte(`{}`))
	_ = c.read(t)
	e.emu.Close()
	e.emu.Close() // idempotent
	if a := wsNextAck(t, acks); !errors.Is(a.Err, larkemu.ErrWSClosed) && !errors.Is(a.Err, larkemu.ErrWSConnLost) {
		t.Errorf("pending push after Close = %+v", a)
	}
	if _, ok := <-acks; ok {
		t.Error("channel still open")
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(wsWait))
	if _, _, err := c.ws.ReadMessage(); err == nil {
		t.Error("connection still open after Close")
	}
	if _, err := e.emu.PushEvent(wsApp, []byte(`{}`)); !errors.Is(err, larkemu.ErrWSClosed) {
		t.Errorf("push after Close: %v", err)
	}
}
