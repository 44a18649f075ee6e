package longconn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/larkway/larkway/core/internal/longconn/pbbp2"
)

// readLimitSlack is what a single WebSocket message may carry beyond
// MaxMessageBytes (frame fields and headers).
const readLimitSlack = 64 << 10

// conn is one open connection.
type conn struct {
	ws        *websocket.Conn
	serviceID int32        // from the URL; echoed in pings
	log       *slog.Logger // with the local connection number and Lark's device_id

	pingInterval atomic.Int64 // time.Duration
	liveness     atomic.Int64 // time.Duration

	wmu          sync.Mutex // serializes writes
	writeTimeout time.Duration

	// imu guards closing and inflight.Add: once closing, the read loop hands
	// no more frames to workers, so inflight.Wait cannot miss one.
	imu      sync.Mutex
	closing  bool
	inflight sync.WaitGroup
	// dead is set when the connection can no longer carry acks; queued frames
	// of a dead connection are dropped (Lark redelivers them).
	dead atomic.Bool
}

func (cc *conn) write(f *pbbp2.Frame) error {
	b := pbbp2.Encode(f)
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if err := cc.ws.SetWriteDeadline(time.Now().Add(cc.writeTimeout)); err != nil {
		return err
	}
	return cc.ws.WriteMessage(websocket.BinaryMessage, b)
}

// admit registers a frame for a worker; false once the connection is closing.
func (cc *conn) admit() bool {
	cc.imu.Lock()
	defer cc.imu.Unlock()
	if cc.closing {
		return false
	}
	cc.inflight.Add(1)
	return true
}

func (cc *conn) stopAdmitting() {
	cc.imu.Lock()
	cc.closing = true
	cc.imu.Unlock()
}

// connectAndServe discovers, dials and serves one connection. It returns
// nil when ctx ended, else why the connection could not be opened or ended.
func (c *Client) connectAndServe(ctx context.Context, log *slog.Logger, jobs chan<- *job) error {
	ep, err := c.discover(ctx)
	if err != nil {
		return err
	}
	header := http.Header{}
	header.Set("locale", "zh")
	ws, resp, err := c.dialer.DialContext(ctx, ep.url, header)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return handshakeError(resp)
		}
		return dialError(err)
	}
	n := c.nextConn.Add(1)
	cc := &conn{ws: ws, serviceID: ep.serviceID, writeTimeout: c.cfg.WriteTimeout}
	cc.log = log.With("conn", n, "conn_id", ep.connID)
	ping := c.cfg.PingInterval
	if ping == 0 {
		ping = DefaultPingInterval
		if ep.config != nil {
			ping = serverPingInterval(ep.config.PingInterval)
		}
	}
	cc.setPing(&c.cfg, ping)
	if ep.config != nil {
		cc.log.Debug("server client config", "ping_interval_s", ep.config.PingInterval,
			"reconnect_interval_s", ep.config.ReconnectInterval, "reconnect_nonce_s", ep.config.ReconnectNonce)
	}
	c.connected.Add(1)
	defer c.connected.Add(-1)
	cc.log.Info("long connection open", "host", wsHost(ep.url), "ping_interval", ping, "liveness", time.Duration(cc.liveness.Load()))
	return c.serve(ctx, cc, jobs)
}

func (cc *conn) setPing(cfg *Config, ping time.Duration) {
	cc.pingInterval.Store(int64(ping))
	cc.liveness.Store(int64(cfg.livenessFor(ping)))
}

// serve runs the read loop and pings until ctx ends or the connection fails.
func (c *Client) serve(ctx context.Context, cc *conn, jobs chan<- *job) error {
	cc.ws.SetReadLimit(int64(c.cfg.MaxMessageBytes) + readLimitSlack)
	readErr := make(chan error, 1)
	go func() { readErr <- c.readLoop(ctx, cc, jobs) }()

	// Ping at once, as the SDK does: the pong carries the ClientConfig.
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			c.closeGracefully(cc, readErr)
			return nil
		case err := <-readErr:
			cc.dead.Store(true)
			cc.stopAdmitting()
			_ = cc.ws.Close()
			return err
		case <-timer.C:
			ping := &pbbp2.Frame{Service: cc.serviceID, Method: pbbp2.MethodControl,
				Headers: []pbbp2.Header{{Key: pbbp2.HeaderType, Value: pbbp2.TypePing}}}
			if err := cc.write(ping); err != nil {
				cc.dead.Store(true)
				cc.stopAdmitting()
				_ = cc.ws.Close()
				<-readErr
				return fmt.Errorf("sending ping: %w", err)
			}
			timer.Reset(time.Duration(cc.pingInterval.Load()))
		}
	}
}

// closeGracefully stops handing frames to workers, waits for those being
// handled to be acked, then closes the connection with a close frame.
func (c *Client) closeGracefully(cc *conn, readErr <-chan error) {
	cc.stopAdmitting()
	cc.inflight.Wait()
	cc.dead.Store(true)
	cc.wmu.Lock()
	_ = cc.ws.SetWriteDeadline(time.Now().Add(time.Second))
	_ = cc.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "client shutting down"))
	cc.wmu.Unlock()
	_ = cc.ws.Close()
	<-readErr
	cc.log.Info("long connection closed")
}

// readLoop reads frames until the connection fails. Control frames are
// handled here; data frames are reassembled here (this goroutine is the only
// one touching the reassembler) and queued for the workers.
func (c *Client) readLoop(ctx context.Context, cc *conn, jobs chan<- *job) error {
	frags := newReassembler(c.cfg.MaxMessageBytes, c.cfg.MaxPendingMessages, c.cfg.FragmentTTL,
		func(msgID string, got, sum int, reason string) {
			cc.log.Warn("dropping an incomplete fragmented message", "message_id", msgID, "fragments", got, "sum", sum, "reason", reason)
		})
	for {
		liveness := time.Duration(cc.liveness.Load())
		if err := cc.ws.SetReadDeadline(time.Now().Add(liveness)); err != nil {
			return fmt.Errorf("setting read deadline: %w", err)
		}
		mt, data, err := cc.ws.ReadMessage()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("no frame received for %s (no pong either): connection presumed dead", liveness)
			}
			if errors.Is(err, websocket.ErrReadLimit) {
				return fmt.Errorf("reading: a WebSocket message exceeds %d bytes: %w", c.cfg.MaxMessageBytes+readLimitSlack, err)
			}
			return fmt.Errorf("reading: %w", err)
		}
		if mt != websocket.BinaryMessage {
			cc.log.Warn("ignoring a non-binary WebSocket message", "message_type", mt, "bytes", len(data))
			continue
		}
		f, err := pbbp2.Decode(data)
		if err != nil {
			cc.log.Warn("ignoring an undecodable frame", "bytes", len(data), "err", err)
			continue
		}
		switch f.Method {
		case pbbp2.MethodControl:
			c.handleControl(cc, f)
		case pbbp2.MethodData:
			c.handleData(ctx, cc, f, frags, jobs)
		default:
			cc.log.Warn("ignoring a frame with an unknown method", "method", f.Method, "type", f.Header(pbbp2.HeaderType))
		}
	}
}

func (c *Client) handleControl(cc *conn, f *pbbp2.Frame) {
	switch t := f.Header(pbbp2.HeaderType); t {
	case pbbp2.TypePong:
		if len(f.Payload) == 0 || c.cfg.PingInterval > 0 {
			return
		}
		var cfg ClientConfig
		if err := json.Unmarshal(f.Payload, &cfg); err != nil {
			cc.log.Warn("ignoring a pong with an unreadable client config", "err", err)
			return
		}
		if cfg.PingInterval <= 0 {
			return
		}
		if ping := serverPingInterval(cfg.PingInterval); ping != time.Duration(cc.pingInterval.Load()) {
			cc.setPing(&c.cfg, ping)
			cc.log.Info("server changed the ping interval", "ping_interval", ping, "liveness", time.Duration(cc.liveness.Load()))
		}
	case pbbp2.TypePing:
		// Lark does not ping clients; any frame already proved liveness.
	default:
		cc.log.Debug("ignoring a control frame", "type", t)
	}
}

// handleData reassembles and queues a data frame.
func (c *Client) handleData(ctx context.Context, cc *conn, f *pbbp2.Frame, frags *reassembler, jobs chan<- *job) {
	typ, msgID := f.Header(pbbp2.HeaderType), f.Header(pbbp2.HeaderMessageID)
	log := cc.log.With("type", typ, "message_id", msgID, "trace_id", f.Header(pbbp2.HeaderTraceID))
	if typ != pbbp2.TypeEvent && typ != pbbp2.TypeCard {
		log.Warn("ignoring a data frame of unknown type")
		return
	}
	payload := f.Payload
	if sum, ok := f.HeaderInt(pbbp2.HeaderSum); ok && sum > 1 {
		seq, ok := f.HeaderInt(pbbp2.HeaderSeq)
		if !ok {
			seq = -1
		}
		var err error
		payload, err = frags.add(msgID, sum, seq, f.Payload, time.Now())
		if err != nil {
			log.Warn("dropping a fragmented message", "sum", sum, "seq", seq, "err", err)
			return
		}
		if payload == nil {
			return // more fragments to come
		}
	} else if len(payload) > c.cfg.MaxMessageBytes {
		log.Warn("dropping an oversized message", "bytes", len(payload), "max", c.cfg.MaxMessageBytes)
		return
	}
	if ctx.Err() != nil || !cc.admit() {
		log.Debug("connection closing: leaving the frame unacked for redelivery")
		return
	}
	j := &job{cc: cc, frame: f, payload: payload, typ: typ, received: time.Now()}
	select {
	case jobs <- j:
	default:
		log.Warn("worker queue full: acking 500 so Lark redelivers later", "queue", c.cfg.QueueSize)
		c.ack(j, 500, nil)
		cc.inflight.Done()
	}
}

// wsHost is the host of a connection URL, for logs: its query carries the
// connection ticket and access key.
func wsHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	return u.Host
}

// dialError wraps a dial failure without the URL (url.Error quotes it).
func dialError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("dialing the long connection: %s: %w", ue.Op, ue.Err)
	}
	return fmt.Errorf("dialing the long connection: %w", err)
}
