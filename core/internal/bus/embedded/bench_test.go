package embedded

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/larkway/larkway/core/internal/bus"
)

// BenchmarkPublish measures fsynced publishes from 32 concurrent callers
// (the bench's client count), with a consumer acking everything, and
// reports the WAL fsyncs they took.
func BenchmarkPublish(b *testing.B) {
	bs, err := Open(Config{Dir: b.TempDir()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer bs.Close(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	c, err := bs.Subscribe(ctx, bus.SubscribeOptions{Topic: "events", Subscription: "s"})
	if err != nil {
		b.Fatal(err)
	}
	var consumed sync.WaitGroup
	consumed.Go(func() {
		for {
			d, err := c.Receive(ctx)
			if err != nil {
				return
			}
			_ = d.Ack()
		}
	})
	payload := make([]byte, 1500)
	syncs, _ := bs.WALSyncs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if err := bs.Publish(ctx, "events", bus.Message{Key: "oc_" + strconv.Itoa(i%50), Payload: payload}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	after, _ := bs.WALSyncs()
	b.ReportMetric(float64(after-syncs)/float64(b.N), "fsyncs/op")
	cancel()
	consumed.Wait()
}
