package larkway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
	"github.com/larkway/larkway/sdk/go/contract"
)

// maxBatchBytes bounds one ResultBatch message.
const maxBatchBytes = 1 << 20

// defaultMaxInFlight bounds concurrent handler calls when the plugin sets none.
const defaultMaxInFlight = 64

// Main serves the plugin and exits the process when the core stops it:
// launched by the core (go-plugin), or as its own deployment when --listen
// or LARKWAY_LISTEN is given (RemoteConfig). Otherwise it refuses to run.
func (p *Plugin) Main() {
	if os.Getenv(contract.MagicCookieKey) != contract.MagicCookieValue {
		rc, err := ParseRemoteConfig(os.Args[1:], os.Getenv)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if rc.Listen != "" {
			if err := p.ServeRemote(context.Background(), rc); err != nil {
				p.logger.Error("plugin stopped", "err", err)
				os.Exit(1)
			}
			os.Exit(0)
		}
	}
	if os.Getenv(contract.MagicCookieKey) != contract.MagicCookieValue {
		fmt.Fprintf(os.Stderr, "%s is a larkway plugin: it is started by the larkway core, or served with --listen (see sdk/README.md)\n", p.name)
		os.Exit(1)
	}
	p.Serve()
	os.Exit(0)
}

// Serve runs go-plugin's server until the core stops the plugin (it drains
// the deliveries in flight, then calls plugin.GRPCController/Shutdown).
// SIGINT is ignored; SIGTERM ends the process at once (whatever was in
// flight is redelivered).
func (p *Plugin) Serve() {
	// go-plugin ends the process on the core's request; SIGINT from a terminal
	// (Ctrl-C reaches the whole process group) must not kill the plugin before
	// the core has drained it, so it is ignored here.
	signal.Ignore(syscall.SIGINT)
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake(),
		Plugins:         plugin.PluginSet{contract.PluginName: &grpcPlugin{p: p}},
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger: hclog.New(&hclog.LoggerOptions{
			Name: p.name, Output: os.Stderr, JSONFormat: true, Level: hclog.Warn,
		}),
	})
}

// Handshake is go-plugin's handshake for larkway plugins.
func Handshake() plugin.HandshakeConfig {
	return plugin.HandshakeConfig{
		ProtocolVersion:  contract.ProtocolVersion,
		MagicCookieKey:   contract.MagicCookieKey,
		MagicCookieValue: contract.MagicCookieValue,
	}
}

type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	p *Plugin
}

func (g *grpcPlugin) GRPCServer(b *plugin.GRPCBroker, s *grpc.Server) error {
	g.p.state.setBroker(b)
	pluginv1.RegisterPluginServiceServer(s, &server{p: g.p})
	return nil
}

func (g *grpcPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("the larkway SDK serves plugins; it is not a plugin client")
}

type server struct {
	pluginv1.UnimplementedPluginServiceServer
	p *Plugin
}

func (s *server) Describe(_ context.Context, req *pluginv1.DescribeRequest) (*pluginv1.DescribeResponse, error) {
	s.p.state.setBrokerID(req.GetStateBrokerId())
	s.p.resultBatches.Store(req.GetAcceptsResultBatches())
	return &pluginv1.DescribeResponse{Manifest: s.p.manifest()}, nil
}

// Handle runs deliveries concurrently (bounded) and sends each result as it
// completes. It returns when the core closes its side and every started
// handler has answered.
func (s *server) Handle(stream pluginv1.PluginService_HandleServer) error {
	return s.p.handleStream(stream.Context(), stream)
}

// handleStream is the transport-independent body of Handle, shared with the
// test kit's in-process stream. Deliveries come one per message or in
// batches; results go back through a sender that sends whatever is ready at
// once as one ResultBatch when the core accepts batches.
func (p *Plugin) handleStream(ctx context.Context, stream interface {
	Send(*pluginv1.HandleResponse) error
	Recv() (*pluginv1.HandleRequest, error)
}) error {
	limit := p.maxInFlight
	if limit <= 0 {
		limit = defaultMaxInFlight
	}
	out := newResultSender(stream, p.resultBatches.Load())
	// Deliveries run on a pool of at most limit workers that live as long as
	// the stream. A goroutine per delivery cost 6% of the no-op bench
	// plugin's CPU in stack growth alone; a pooled worker keeps its stack.
	work := make(chan *pluginv1.Delivery)
	workers := 0
	var wg sync.WaitGroup
	defer out.close()
	defer wg.Wait()
	defer close(work)
	start := func(d *pluginv1.Delivery) error {
		if d == nil { // a nil would stop the worker that takes it
			d = &pluginv1.Delivery{} // answered as malformed
		}
		select {
		case work <- d: // an idle worker took it
			return nil
		default:
		}
		if workers < limit {
			workers++
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ; d != nil; d = <-work {
					out.add(p.deliver(ctx, d))
				}
			}()
			return nil
		}
		select {
		case work <- d:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case req.GetDelivery() != nil:
			if err := start(req.GetDelivery()); err != nil {
				return err
			}
		case req.GetDeliveries() != nil:
			for _, d := range req.GetDeliveries().GetDeliveries() {
				if err := start(d); err != nil {
					return err
				}
			}
		default:
			// The core acks a result only when it refused some of its
			// actions, after running them: logged, never waited for.
			if ack := req.GetResultAck(); ack != nil && len(ack.GetRefused()) > 0 {
				p.logger.Warn("core refused actions", "delivery_id", ack.GetDeliveryId(), "refused", len(ack.GetRefused()), "first_reason", ack.GetRefused()[0].GetReason())
			}
		}
	}
}

// resultSender sends results from one goroutine, so handlers never wait on
// the stream and results that finish together share a message.
type resultSender struct {
	stream interface {
		Send(*pluginv1.HandleResponse) error
	}
	batches bool

	mu     sync.Mutex
	queue  []*pluginv1.Result
	kick   chan struct{}
	closed chan struct{}
	done   chan struct{}
}

func newResultSender(stream interface {
	Send(*pluginv1.HandleResponse) error
}, batches bool) *resultSender {
	r := &resultSender{stream: stream, batches: batches, kick: make(chan struct{}, 1), closed: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r
}

func (r *resultSender) add(res *pluginv1.Result) {
	r.mu.Lock()
	r.queue = append(r.queue, res)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default: // the sender is already due to run
	}
}

// close sends what is queued and stops the sender.
func (r *resultSender) close() {
	close(r.closed)
	<-r.done
}

func (r *resultSender) run() {
	defer close(r.done)
	var err error // after a failed Send the stream is gone: results are dropped, the core redelivers
	for {
		stop := false
		select {
		case <-r.kick:
		case <-r.closed:
			stop = true
		}
		// Let handlers that are runnable right now finish too, so their
		// results share this message. This never waits on a timer.
		runtime.Gosched()
		r.mu.Lock()
		queued := r.queue
		r.queue = nil
		r.mu.Unlock()
		switch {
		case err != nil || len(queued) == 0:
		case r.batches && len(queued) > 1:
			for len(queued) > 0 && err == nil {
				// Bounded well under gRPC's 4 MiB default receive limit.
				n, size := 1, proto.Size(queued[0])
				for n < len(queued) && size+proto.Size(queued[n]) <= maxBatchBytes {
					size += proto.Size(queued[n])
					n++
				}
				err = r.stream.Send(&pluginv1.HandleResponse{Kind: &pluginv1.HandleResponse_Results{Results: &pluginv1.ResultBatch{Results: queued[:n]}}})
				queued = queued[n:]
			}
		default:
			for _, res := range queued {
				if err = r.stream.Send(&pluginv1.HandleResponse{Kind: &pluginv1.HandleResponse_Result{Result: res}}); err != nil {
					break
				}
			}
		}
		if stop {
			return
		}
	}
}

// deliver runs one delivery under its deadline.
func (p *Plugin) deliver(ctx context.Context, d *pluginv1.Delivery) *pluginv1.Result {
	if d.GetDeliveryId() == "" || d.GetEvent() == nil {
		return &pluginv1.Result{DeliveryId: d.GetDeliveryId(), Outcome: pluginv1.Outcome_OUTCOME_FAILED, Error: "malformed delivery: missing id or event"}
	}
	// Continue the core's trace: a handler's spans join the webhook's trace.
	if tc := d.GetTraceContext(); len(tc) > 0 {
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier(tc))
	}
	if dl := d.GetDeadline(); dl != nil {
		dc := newDeadlineCtx(ctx, dl.AsTime())
		defer dc.end()
		ctx = dc
	}
	res := p.handle(ctx, eventFromProto(d))
	res.DeliveryId = d.GetDeliveryId()
	return res
}
