package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/larkway/larkway/core/internal/lark"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Server is an HTTP server on loopback run for one measurement.
type Server struct {
	URL  string
	srv  *http.Server
	done chan error
}

// Serve starts h on a loopback port with the core's server timeouts.
func Serve(h http.Handler, path string) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{URL: "http://" + ln.Addr().String() + path, done: make(chan error, 1),
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the server and waits for it.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// BareResponder is the floor of any webhook: net/http reading the body and
// answering 200 {"msg":"success"}, nothing else.
func BareResponder() http.Handler {
	body := []byte(`{"msg":"success"}` + "\n")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = w.Write(body)
	})
}

// SDKDispatcher is oapi-sdk-go's webhook (httpserverext + dispatcher)
// doing inline what a bot on the SDK does per event: verify, decrypt,
// parse, and a handler that sends no reply. handled counts its events.
func SDKDispatcher(app App, handled *atomic.Int64) http.Handler {
	return lark.NewSDKReference(app.VerificationToken, app.EncryptKey, func() { handled.Add(1) })
}

// GRPCResult is a raw gRPC stream measurement.
type GRPCResult struct {
	Messages  int           `json:"messages"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	PerSecond float64       `json:"per_second"`
	Window    int           `json:"window"`
}

// echoServer answers every delivery on its Handle stream with a DONE result.
type echoServer struct {
	pluginv1.UnimplementedPluginServiceServer
}

func (echoServer) Handle(stream grpc.BidiStreamingServer[pluginv1.HandleRequest, pluginv1.HandleResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		res := &pluginv1.HandleResponse{Kind: &pluginv1.HandleResponse_Result{Result: &pluginv1.Result{
			DeliveryId: req.GetDelivery().GetDeliveryId(), Outcome: pluginv1.Outcome_OUTCOME_DONE}}}
		if err := stream.Send(res); err != nil {
			return err
		}
	}
}

// GRPCStream measures raw gRPC throughput: one bidirectional stream of the
// plugin contract's Handle over a unix socket, the server echoing a result
// for each delivery, with window deliveries in flight (the dispatcher's
// default), for d. The deliveries carry events (cycled), so the reference
// moves the same messages the dispatcher does; with none it sends a minimal
// event.
func GRPCStream(ctx context.Context, dir string, window int, d time.Duration, events []*pluginv1.Event) (GRPCResult, error) {
	sock := filepath.Join(dir, fmt.Sprintf("grpc-%d.sock", time.Now().UnixNano()))
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return GRPCResult{}, err
	}
	defer os.Remove(sock)
	return grpcStream(ctx, ln, nil, "unix://"+sock, insecure.NewCredentials(), window, d, events)
}

// GRPCStreamTLS is GRPCStream over loopback TCP with mutual TLS, as the
// core talks to a remote plugin: the reference for the remote dispatch
// figure.
func GRPCStreamTLS(ctx context.Context, pki PKI, window int, d time.Duration, events []*pluginv1.Event) (GRPCResult, error) {
	stc, ctc, err := pki.tlsConfigs()
	if err != nil {
		return GRPCResult{}, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return GRPCResult{}, err
	}
	return grpcStream(ctx, ln, []grpc.ServerOption{grpc.Creds(credentials.NewTLS(stc))}, ln.Addr().String(), credentials.NewTLS(ctc), window, d, events)
}

// grpcStream serves echoServer on ln and measures one Handle stream to it.
func grpcStream(ctx context.Context, ln net.Listener, sopts []grpc.ServerOption, target string, creds credentials.TransportCredentials,
	window int, d time.Duration, events []*pluginv1.Event) (GRPCResult, error) {
	if len(events) == 0 {
		events = []*pluginv1.Event{{EventId: "ev_small", EventType: "im.message.receive_v1", AppId: "cli_bench", ChatId: "oc_small"}}
	}
	srv := grpc.NewServer(sopts...)
	pluginv1.RegisterPluginServiceServer(srv, echoServer{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() { srv.Stop(); <-served }()

	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return GRPCResult{}, err
	}
	defer cc.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := pluginv1.NewPluginServiceClient(cc).Handle(sctx)
	if err != nil {
		return GRPCResult{}, err
	}
	// Warm the stream up before timing.
	if err := stream.Send(delivery("warm", events[0])); err != nil {
		return GRPCResult{}, err
	}
	if _, err := stream.Recv(); err != nil {
		return GRPCResult{}, err
	}

	slots := make(chan struct{}, window)
	var received atomic.Int64
	recvDone := make(chan struct{})
	var recvErr error // set before recvDone closes
	go func() {
		defer close(recvDone)
		for {
			if _, err := stream.Recv(); err != nil {
				if !errors.Is(err, io.EOF) {
					recvErr = err
				}
				return
			}
			received.Add(1)
			<-slots
		}
	}()
	start := time.Now()
	end := start.Add(d)
	sent := 0
	for time.Now().Before(end) && ctx.Err() == nil {
		slots <- struct{}{}
		if err := stream.Send(delivery("d"+strconv.Itoa(sent), events[sent%len(events)])); err != nil {
			return GRPCResult{}, err
		}
		sent++
	}
	// Every slot free again: every result is in.
	for range window {
		select {
		case slots <- struct{}{}:
		case <-recvDone:
			return GRPCResult{}, fmt.Errorf("gRPC stream ended early: %v", recvErr)
		}
	}
	elapsed := time.Since(start)
	_ = stream.CloseSend()
	cancel()
	<-recvDone
	n := int(received.Load())
	return GRPCResult{Messages: n, Elapsed: elapsed, PerSecond: float64(n) / elapsed.Seconds(), Window: window}, nil
}

func delivery(id string, ev *pluginv1.Event) *pluginv1.HandleRequest {
	return &pluginv1.HandleRequest{Kind: &pluginv1.HandleRequest_Delivery{Delivery: &pluginv1.Delivery{
		DeliveryId: id, Attempt: 1, Event: ev}}}
}
