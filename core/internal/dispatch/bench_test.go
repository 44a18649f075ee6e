package dispatch

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/bus/memory"
	"github.com/larkway/larkway/core/internal/envelope"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// noopPlugin answers every delivery DONE with no actions, batching its
// results as a batching plugin does; it is the benchmark's plugin side.
type noopPlugin struct {
	pluginv1.UnimplementedPluginServiceServer
	manifest *pluginv1.Manifest
	conn     *grpc.ClientConn
}

func (p *noopPlugin) Manifest() *pluginv1.Manifest { return p.manifest }
func (p *noopPlugin) Service() pluginv1.PluginServiceClient {
	return pluginv1.NewPluginServiceClient(p.conn)
}

func (p *noopPlugin) Handle(stream pluginv1.PluginService_HandleServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		ds := req.GetDeliveries().GetDeliveries()
		if d := req.GetDelivery(); d != nil {
			ds = append(ds, d)
		}
		if len(ds) == 0 {
			continue
		}
		out := make([]*pluginv1.Result, len(ds))
		for i, d := range ds {
			out[i] = &pluginv1.Result{DeliveryId: d.GetDeliveryId(), Outcome: pluginv1.Outcome_OUTCOME_DONE}
		}
		if err := stream.Send(&pluginv1.HandleResponse{Kind: &pluginv1.HandleResponse_Results{Results: &pluginv1.ResultBatch{Results: out}}}); err != nil {
			return nil
		}
	}
}

// countingExec closes all once it has executed want results.
type countingExec struct {
	n    atomic.Int64
	want int64
	all  chan struct{}
}

func (c *countingExec) Execute(context.Context, action.Request) ([]*pluginv1.RefusedAction, error) {
	if c.n.Add(1) == c.want {
		close(c.all)
	}
	return nil, nil
}

func (c *countingExec) SendFallback(context.Context, string, *pluginv1.Event, string) error {
	return nil
}

// BenchmarkDeliver is one event through the whole dispatch path per op:
// bus → per-chat queue → claim → the plugin's stream (batched) → result →
// settle, with an in-process no-op plugin over bufconn and 64 chats.
func BenchmarkDeliver(b *testing.B) {
	bs := memory.New(slog.New(slog.DiscardHandler))
	defer bs.Close(context.Background())
	exec := &countingExec{want: int64(b.N), all: make(chan struct{})}
	const topic = "events-bench"
	d := New(Config{Topics: []string{topic}, Deadline: 10 * time.Second, MaxAttempts: 3, MaxInFlight: 64,
		Backoff: func(int) time.Duration { return time.Second }}, bs, exec, slog.New(slog.DiscardHandler), nil)

	lis := bufconn.Listen(4 << 20)
	srv := grpc.NewServer()
	p := &noopPlugin{manifest: &pluginv1.Manifest{Name: "noop", Version: "1", MaxInFlight: 64, AcceptsDeliveryBatches: true,
		Subscriptions: []*pluginv1.Subscription{{EventTypes: []string{"im.message.receive_v1"}}}}}
	pluginv1.RegisterPluginServiceServer(srv, p)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient("passthrough:///buf", grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return lis.Dial() }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	p.conn = conn

	ctx, cancel := context.WithCancel(context.Background())
	r := d.Route("noop")
	subscribed, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- r.Run(ctx, func() { close(subscribed) }) }()
	<-subscribed
	s, _, err := r.Attach(context.Background(), p)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	defer func() { cancel(); <-done }()

	msgs := make([]bus.Message, b.N)
	for i := range msgs {
		chat := fmt.Sprintf("oc_%d", i%64)
		ev := &pluginv1.Event{EventId: fmt.Sprintf("ev-%d", i), EventType: "im.message.receive_v1", AppId: "cli_b", ChatId: chat,
			DedupKey: fmt.Sprintf("om-%d", i), Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: fmt.Sprintf("om-%d", i), ChatId: chat, Text: "hi"}}}
		if msgs[i], err = envelope.Encode(ev); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range msgs {
		if err := bs.Publish(context.Background(), topic, msgs[i]); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-exec.all:
	case err := <-done:
		b.Fatalf("route ended: %v", err)
	}
	b.StopTimer()
}
