package callback

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/larkway/larkway/core/internal/testenv"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

func TestHubs(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = c.Close() })
	for name, h := range map[string]Hub{"memory": NewMemory(), "redis": NewRedis(c, testenv.Name(t, "cb")+":")} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			w, err := h.Register(ctx, "ev1")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			ok, err := h.Deliver(ctx, "ev1", &pluginv1.CardResponse{Toast: &pluginv1.Toast{Content: "hi"}})
			if err != nil || !ok {
				t.Fatalf("deliver: %v %v", ok, err)
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			resp, ok := w.Wait(wctx)
			if !ok || resp.GetToast().GetContent() != "hi" {
				t.Fatalf("wait: %v %v", resp, ok)
			}
			// Nobody waits for ev2: Deliver says so.
			if ok, _ := h.Deliver(ctx, "ev2", &pluginv1.CardResponse{}); ok {
				t.Fatal("delivered to nobody")
			}
			// A waiter whose budget ran out gets nothing.
			w3, _ := h.Register(ctx, "ev3")
			short, cancel3 := context.WithTimeout(ctx, 20*time.Millisecond)
			defer cancel3()
			if _, ok := w3.Wait(short); ok {
				t.Fatal("got a response from nowhere")
			}
			w3.Close()
			if ok, _ := h.Deliver(ctx, "ev3", &pluginv1.CardResponse{}); ok {
				t.Fatal("delivered to a closed waiter")
			}
		})
	}
}
