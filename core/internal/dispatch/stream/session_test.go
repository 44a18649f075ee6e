package stream

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/larkway/larkway/core/internal/testenv"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// plugin answers by the event id: "done" DONE, "hang" never, "end" ends
// the stream, "stray" DONE after a result for no delivery.
type plugin struct {
	pluginv1.UnimplementedPluginServiceServer
	acks chan *pluginv1.ResultAck
}

func (p *plugin) Handle(stream pluginv1.PluginService_HandleServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		if a := req.GetResultAck(); a != nil {
			p.acks <- a
			continue
		}
		ds := req.GetDeliveries().GetDeliveries()
		if d := req.GetDelivery(); d != nil {
			ds = append(ds, d)
		}
		for _, d := range ds {
			switch d.GetEvent().GetEventId() {
			case "hang":
				continue
			case "end":
				return errors.New("crashed")
			case "stray":
				_ = stream.Send(&pluginv1.HandleResponse{Kind: &pluginv1.HandleResponse_Result{Result: &pluginv1.Result{DeliveryId: "nobody"}}})
			}
			_ = stream.Send(&pluginv1.HandleResponse{Kind: &pluginv1.HandleResponse_Result{Result: &pluginv1.Result{
				DeliveryId: d.GetDeliveryId(), Outcome: pluginv1.Outcome_OUTCOME_DONE, Error: d.GetEvent().GetEventId()}}})
		}
	}
}

func open(t *testing.T, o Options) (*Session, *plugin) {
	t.Helper()
	p := &plugin{acks: make(chan *pluginv1.ResultAck, 1)}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	pluginv1.RegisterPluginServiceServer(srv, p)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///buf", grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return lis.Dial() }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), pluginv1.NewPluginServiceClient(conn), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); conn.Close(); srv.Stop() })
	return s, p
}

func event(t *testing.T, id string) []byte {
	t.Helper()
	b, err := proto.Marshal(&pluginv1.Event{EventId: id})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// Deliver returns the delivery's own result, ErrTimeout past the deadline,
// and ErrBroken once the stream ends; a result for no delivery is counted
// and dropped.
func TestDeliver(t *testing.T) {
	unknown := prometheus.NewCounter(prometheus.CounterOpts{Name: "unknown"})
	s, _ := open(t, Options{Name: "p", Deadline: 200 * time.Millisecond, MaxInFlight: 4, Metrics: Metrics{UnknownResults: unknown}})
	ctx := context.Background()

	res, err := s.Deliver(ctx, 1, event(t, "stray"))
	if err != nil || res.GetError() != "stray" || res.GetOutcome() != pluginv1.Outcome_OUTCOME_DONE {
		t.Fatalf("Deliver = %v, %v", res, err)
	}
	if got := value(t, unknown); got != 1 {
		t.Fatalf("%v unknown results counted, want 1", got)
	}
	if _, err := s.Deliver(ctx, 1, event(t, "hang")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("unanswered delivery: %v, want ErrTimeout", err)
	}
	if _, err := s.Deliver(ctx, 1, event(t, "end")); !errors.Is(err, ErrBroken) {
		t.Fatalf("delivery whose stream ended: %v, want ErrBroken", err)
	}
	<-s.Broken()
	if s.Err() == nil {
		t.Fatal("a broken session has no error")
	}
	if _, err := s.Deliver(ctx, 1, event(t, "done")); !errors.Is(err, ErrBroken) {
		t.Fatalf("delivery on a broken stream: %v, want ErrBroken", err)
	}
}

// Close ends the deliveries in flight and those waiting for one of
// max_in_flight's slots with ErrBroken.
func TestCloseEndsWaitingDeliveries(t *testing.T) {
	s, _ := open(t, Options{Name: "p", Deadline: time.Minute, MaxInFlight: 1})
	hung, waiting := make(chan error, 1), make(chan error, 1)
	go func() { _, err := s.Deliver(context.Background(), 1, event(t, "hang")); hung <- err }()
	testenv.Eventually(t, 10*time.Second, "the first delivery took no slot", func() bool { return len(s.slots) == 1 })
	go func() { _, err := s.Deliver(context.Background(), 1, event(t, "done")); waiting <- err }()
	s.Close()
	for name, ch := range map[string]chan error{"in flight": hung, "waiting for a slot": waiting} {
		if err := <-ch; !errors.Is(err, ErrBroken) {
			t.Errorf("delivery %s: %v, want ErrBroken", name, err)
		}
	}
}

// Ack reaches the plugin.
func TestAck(t *testing.T) {
	s, p := open(t, Options{Name: "p", Deadline: time.Second})
	s.Ack("p-1", []*pluginv1.RefusedAction{{Index: 2, Reason: "not allowed"}})
	select {
	case a := <-p.acks:
		if a.GetDeliveryId() != "p-1" || a.GetRefused()[0].GetIndex() != 2 {
			t.Fatalf("ack %v", a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no ack")
	}
}

// A detached session takes no deliveries; Drain returns once the active
// ones are released, or with ctx's error while one is still active.
func TestDetachAndDrain(t *testing.T) {
	s, _ := open(t, Options{Name: "p", Deadline: time.Second})
	if !s.Acquire() || s.Active() != 1 {
		t.Fatal("acquire on a fresh session")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Drain(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("drain with a delivery active: %v", err)
	}
	if s.Acquire() {
		t.Fatal("a drained session took a delivery")
	}

	s2, _ := open(t, Options{Name: "p", Deadline: time.Second})
	s2.Acquire()
	drained := make(chan error, 1)
	go func() { drained <- s2.Drain(context.Background()) }()
	s2.Release()
	if err := <-drained; err != nil {
		t.Fatalf("drain after release: %v", err)
	}
}
