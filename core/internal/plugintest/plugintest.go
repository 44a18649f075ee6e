// Package plugintest provides in-process plugin instances for tests of the
// dispatcher and the manager: a real gRPC PluginService over an in-memory
// connection, with behaviour chosen per test.
package plugintest

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// HandleFunc answers one delivery; returning nil sends no result (the
// delivery times out).
type HandleFunc func(d *pluginv1.Delivery) *pluginv1.Result

// ReplyWithText is a HandleFunc: done, with a text reply echoing the message.
func ReplyWithText(d *pluginv1.Delivery) *pluginv1.Result {
	return &pluginv1.Result{DeliveryId: d.GetDeliveryId(), Outcome: pluginv1.Outcome_OUTCOME_DONE,
		Actions: []*pluginv1.Action{{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MsgType: "text",
			ContentJson: `{"text":"` + d.GetEvent().GetMessage().GetText() + `"}`}}}}}
}

// Plugin is a fake plugin instance.
type Plugin struct {
	pluginv1.UnimplementedPluginServiceServer
	manifest *pluginv1.Manifest
	handle   HandleFunc
	conn     *grpc.ClientConn
	srv      *grpc.Server

	unhealthy atomic.Bool
	closed    atomic.Bool
	crash     chan struct{}
	crashOnce sync.Once

	mu   sync.Mutex
	seen []*pluginv1.Delivery
	acks []*pluginv1.ResultAck
}

// New starts a fake plugin with manifest m answering with h.
func New(t testing.TB, m *pluginv1.Manifest, h HandleFunc) *Plugin {
	t.Helper()
	p := &Plugin{manifest: m, handle: h, crash: make(chan struct{})}
	lis := bufconn.Listen(1 << 20)
	p.srv = grpc.NewServer()
	pluginv1.RegisterPluginServiceServer(p.srv, p)
	go func() { _ = p.srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///plugintest",
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return lis.Dial() }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	p.conn = conn
	t.Cleanup(p.Close)
	return p
}

// Manifest implements dispatch.Plugin.
func (p *Plugin) Manifest() *pluginv1.Manifest { return p.manifest }

// Service implements dispatch.Plugin.
func (p *Plugin) Service() pluginv1.PluginServiceClient {
	return pluginv1.NewPluginServiceClient(p.conn)
}

// Ping fails while SetHealthy(false).
func (p *Plugin) Ping(context.Context) error {
	if p.unhealthy.Load() || p.closed.Load() {
		return errors.New("plugintest: unhealthy")
	}
	return nil
}

// SetHealthy switches the health check.
func (p *Plugin) SetHealthy(ok bool) { p.unhealthy.Store(!ok) }

// Crash ends the Handle stream with an error, like a dying process.
func (p *Plugin) Crash() { p.crashOnce.Do(func() { close(p.crash) }) }

// Close stops the server; idempotent.
func (p *Plugin) Close() {
	if p.closed.Swap(true) {
		return
	}
	p.Crash()
	_ = p.conn.Close()
	p.srv.Stop()
}

// Closed reports whether Close was called.
func (p *Plugin) Closed() bool { return p.closed.Load() }

// Seen returns the deliveries received so far.
func (p *Plugin) Seen() []*pluginv1.Delivery {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*pluginv1.Delivery(nil), p.seen...)
}

// Acks returns the ResultAcks received so far.
func (p *Plugin) Acks() []*pluginv1.ResultAck {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*pluginv1.ResultAck(nil), p.acks...)
}

// Handle implements the stream: each delivery is answered concurrently.
func (p *Plugin) Handle(stream pluginv1.PluginService_HandleServer) error {
	var sendMu sync.Mutex
	reqs := make(chan *pluginv1.HandleRequest)
	errc := make(chan error, 1)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			reqs <- r
		}
	}()
	for {
		select {
		case <-p.crash:
			return errors.New("plugintest: crashed")
		case <-errc:
			return nil
		case r := <-reqs:
			if ack := r.GetResultAck(); ack != nil {
				p.mu.Lock()
				p.acks = append(p.acks, ack)
				p.mu.Unlock()
				continue
			}
			d := r.GetDelivery()
			p.mu.Lock()
			p.seen = append(p.seen, d)
			p.mu.Unlock()
			go func() {
				res := p.handle(d)
				if res == nil {
					return
				}
				sendMu.Lock()
				defer sendMu.Unlock()
				_ = stream.Send(&pluginv1.HandleResponse{Kind: &pluginv1.HandleResponse_Result{Result: res}})
			}()
		}
	}
}
