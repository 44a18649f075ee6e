// Package longconn receives a Lark app's events and card callbacks over
// Lark's long connection (WebSocket "long connection mode",
// docs/lark-facts.md#long-connection), publishes them to the bus, and
// acknowledges each frame only after the bus has durably stored it — the same
// contract as the webhook (core/internal/ingest): an ack with code 200 always
// means "stored", anything else gets code 500 so Lark redelivers (15 s,
// 5 min, 1 h, 6 h).
//
// This is our own client rather than oapi-sdk-go's ws package, because
// v3.2.2's client:
//
//   - cannot be stopped: Start ignores its context, blocks forever
//     (select {}) and there is no Close, so it leaks its goroutines and the
//     socket (upstream #141, #190, #204, #231);
//   - never notices a dead connection: no read deadline, pongs are not used
//     for liveness and failed pings are only logged, so a half-open TCP
//     connection silently stops delivering events (#224);
//   - drops card callbacks (type=card frames) without acking them, and its
//     acks cannot carry a card response, so users see error 200340;
//   - reassembles fragmented payloads from concurrent goroutines without a
//     lock (a data race that can lose a message, which is then never acked);
//   - runs each frame in an unbounded goroutine and POSTs the discovery
//     endpoint with http.DefaultClient, which has no timeout (a hung request
//     blocks reconnection forever), and panics when a success carries null
//     data.
//
// Shape: Run keeps Config.Connections connection slots. Each slot loops:
// discover an endpoint URL (POST {BaseURL}/callback/ws/endpoint, bounded),
// dial it, serve it until it fails, back off (exponential with jitter),
// repeat. Serving a connection is one read loop — which also reassembles
// fragments, so reassembly needs no lock — and a ping loop; the read
// deadline is pushed out by every received frame, so a connection that
// receives nothing (not even a pong) for LivenessTimeout is closed and
// replaced. Data frames go to a worker pool shared by all connections,
// which normalizes, publishes and acks them on the connection they came in
// on.
//
// Card callbacks (type=card frames, and card.action.trigger events) go to
// the CardResponder, whose JSON answer (toast and/or card) is returned to
// Lark base64-encoded in the ack's data field, as newer SDKs do. The
// responder owns the callback: the client does not publish it. With no
// responder, card callbacks are published like events and answered {}
// (card unchanged).
package longconn

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/larkway/larkway/core/internal/backoff"
	"github.com/larkway/larkway/core/internal/bus"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// CardResponder answers card callbacks that arrive over the long
// connection. Respond gets the normalized event (payload CardAction) and
// returns the response body Lark expects for card.action.trigger — e.g.
// {"toast":{"type":"success","content":"ok"}} and/or
// {"card":{"type":"raw","data":{…}}} — or nil for {} (card unchanged). It
// is called from many goroutines at once; ctx carries Config.CardTimeout
// (Lark waits 3 s). An error acks the callback with code 500: the user sees
// Lark's error toast.
type CardResponder interface {
	Respond(ctx context.Context, ev *pluginv1.Event) (responseJSON []byte, err error)
}

// ErrRunning is returned by a second concurrent Run.
var ErrRunning = errors.New("longconn: client is already running")

// Client keeps an app's long connections. Build it with New; Run it once at
// a time.
type Client struct {
	cfg    Config
	pub    bus.Publisher
	cards  CardResponder
	logger *slog.Logger
	httpc  *http.Client
	dialer *websocket.Dialer

	running   atomic.Bool
	connected atomic.Int32
	nextConn  atomic.Uint64
}

// New builds a client. It does no I/O; Run validates cfg. cards may be nil.
func New(cfg Config, pub bus.Publisher, cards CardResponder, logger *slog.Logger) *Client {
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// Keep-alives off: discovery is rare, and an idle pooled connection
	// would outlive Run.
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, DisableKeepAlives: true,
		TLSHandshakeTimeout: cfg.DiscoveryTimeout}
	return &Client{
		cfg:    cfg,
		pub:    pub,
		cards:  cards,
		logger: logger.With("component", "longconn", "app", cfg.AppID),
		httpc:  &http.Client{Transport: tr, Timeout: cfg.DiscoveryTimeout},
		dialer: &websocket.Dialer{
			Proxy:            http.ProxyFromEnvironment,
			HandshakeTimeout: cfg.HandshakeTimeout,
			ReadBufferSize:   16 << 10,
			WriteBufferSize:  4 << 10,
		},
	}
}

// Connected is the number of connections open now.
func (c *Client) Connected() int { return int(c.connected.Load()) }

// Run keeps the connections open until ctx ends, then stops reading, lets
// frames already being handled finish and be acked (each bounded by
// PublishTimeout or CardTimeout), closes the connections and returns nil;
// frames still queued are left unacked, so Lark redelivers them. No
// goroutine outlives Run.
//
// A connection slot that meets a permanent failure (see ErrPermanent) stops
// and logs it; Run returns early, with those errors joined, only when every
// slot has stopped so. It returns a config error before doing anything.
func (c *Client) Run(ctx context.Context) error {
	if err := c.cfg.Validate(); err != nil {
		return err
	}
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)

	jobs := make(chan *job, c.cfg.QueueSize)
	var workers sync.WaitGroup
	for range c.cfg.Workers {
		workers.Go(func() {
			for j := range jobs {
				c.handle(ctx, j)
			}
		})
	}

	errs := make([]error, c.cfg.Connections)
	var slots sync.WaitGroup
	for i := range c.cfg.Connections {
		slots.Go(func() { errs[i] = c.runSlot(ctx, i, jobs) })
	}
	slots.Wait()
	// Every connection has stopped reading, so nothing sends on jobs.
	close(jobs)
	workers.Wait()
	c.httpc.CloseIdleConnections()
	if ctx.Err() != nil {
		return nil
	}
	return errors.Join(errs...)
}

// runSlot keeps one connection open until ctx ends or a permanent failure.
func (c *Client) runSlot(ctx context.Context, slot int, jobs chan<- *job) error {
	log := c.logger.With("slot", slot)
	attempt := 0
	for ctx.Err() == nil {
		started := time.Now()
		err := c.connectAndServe(ctx, log, jobs)
		if ctx.Err() != nil {
			return nil
		}
		if IsPermanent(err) {
			log.Error("long connection stopped: permanent failure, not retrying", "err", err)
			return err
		}
		// A connection that stayed up a while resets the backoff.
		if time.Since(started) >= healthyAfter(c.cfg) {
			attempt = 0
		}
		wait := reconnectDelay(c.cfg.ReconnectMin, c.cfg.ReconnectMax, attempt)
		attempt++
		log.Warn("long connection lost; reconnecting", "err", err, "attempt", attempt, "backoff", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	return nil
}

// healthyAfter is how long a connection must last to reset the backoff.
func healthyAfter(cfg Config) time.Duration { return min(30*time.Second, cfg.ReconnectMax) }

// reconnectDelay is the wait before attempt n (from 0): min·2ⁿ capped at
// max, jittered so slots and replicas that failed together do not retry
// together.
func reconnectDelay(lo, hi time.Duration, n int) time.Duration {
	return backoff.Policy{First: lo, Max: hi, Jitter: true}.Delay(n + 1)
}
