package larkway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
	"github.com/larkway/larkway/sdk/go/contract"
)

// defaultMaxInFlight bounds concurrent handler calls when the plugin sets none.
const defaultMaxInFlight = 64

// Main serves the plugin and exits the process when the core stops it. It
// refuses to run when not started by a larkway core.
func (p *Plugin) Main() {
	if os.Getenv(contract.MagicCookieKey) != contract.MagicCookieValue {
		fmt.Fprintf(os.Stderr, "%s is a larkway plugin: it is started by the larkway core, not by hand (see sdk/README.md)\n", p.name)
		os.Exit(1)
	}
	p.Serve()
	os.Exit(0)
}

// Serve runs go-plugin's server until the core closes the connection or the
// process gets SIGINT/SIGTERM (the core drains in-flight deliveries first).
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
	return &pluginv1.DescribeResponse{Manifest: s.p.manifest()}, nil
}

// Handle runs deliveries concurrently (bounded) and sends each result as it
// completes. It returns when the core closes its side and every started
// handler has answered.
func (s *server) Handle(stream pluginv1.PluginService_HandleServer) error {
	return s.p.handleStream(stream.Context(), stream)
}

// handleStream is the transport-independent body of Handle, shared with the
// test kit's in-process stream.
func (p *Plugin) handleStream(ctx context.Context, stream interface {
	Send(*pluginv1.HandleResponse) error
	Recv() (*pluginv1.HandleRequest, error)
}) error {
	limit := p.maxInFlight
	if limit <= 0 {
		limit = defaultMaxInFlight
	}
	sem := make(chan struct{}, limit)
	var (
		wg      sync.WaitGroup
		sendMu  sync.Mutex
		sendErr error
	)
	defer wg.Wait()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		d := req.GetDelivery()
		if d == nil {
			if ack := req.GetResultAck(); ack != nil && len(ack.GetRefused()) > 0 {
				p.logger.Warn("core refused actions", "delivery_id", ack.GetDeliveryId(), "refused", len(ack.GetRefused()), "first_reason", ack.GetRefused()[0].GetReason())
			}
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res := p.deliver(ctx, d)
			sendMu.Lock()
			defer sendMu.Unlock()
			if sendErr == nil {
				sendErr = stream.Send(&pluginv1.HandleResponse{Kind: &pluginv1.HandleResponse_Result{Result: res}})
			}
		}()
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
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.AsTime())
		defer cancel()
	}
	res := p.handle(ctx, eventFromProto(d))
	res.DeliveryId = d.GetDeliveryId()
	return res
}
