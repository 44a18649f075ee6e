package embedded

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
)

// BenchmarkPublish measures fsynced publishes from 32 concurrent callers
// (the bench's client count), with a consumer acking everything, and
// reports the WAL fsyncs they took.
func BenchmarkPublish(b *testing.B) {
	bs := openBench(b)
	defer bs.Close(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	consumed := consume(ctx, b, bs, 1, func(d *bus.Delivery) { _ = d.Ack() })
	syncs, _ := bs.WALSyncs()
	b.SetParallelism(16)
	b.ResetTimer()
	publishAll(ctx, b, bs, 50, 1500, func() {})
	b.StopTimer()
	after, _ := bs.WALSyncs()
	b.ReportMetric(float64(after-syncs)/float64(b.N), "fsyncs/op")
	cancel()
	consumed.Wait()
}

// BenchmarkPipeline is the embedded bus's share of an event under the
// sustained benchmark: 64 publishers of 1.4 KB events over 100 keys, four
// consumers that write a done marker (as the dispatcher's dedup store
// does) and ack. It reports the process's CPU per message, the figure the
// bus adds to larkway's core, whatever the machine's wall clock does.
func BenchmarkPipeline(b *testing.B) {
	bs := openBench(b)
	defer bs.Close(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	done := bs.State("dedup")
	var acked atomic.Int64
	drained := make(chan struct{})
	consumed := consume(ctx, b, bs, 4, func(d *bus.Delivery) {
		_ = done.Put(d.ID, []byte{1}, time.Now().Add(time.Hour), false)
		_ = d.Ack()
		if acked.Add(1) == int64(b.N) {
			close(drained)
		}
	})
	var before syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.SetParallelism(32) // 64 publishers on 2 cores
	b.ResetTimer()
	publishAll(ctx, b, bs, 100, 1400, cancel) // on a failure nothing waits for the rest

	select {
	case <-drained:
	case <-ctx.Done():
	}
	b.StopTimer()
	var after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	cancel()
	consumed.Wait()
}

func openBench(b *testing.B) *Bus {
	bs, err := Open(Config{Dir: b.TempDir()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	return bs
}

// consume runs n consumers of subscription s on events, each calling settle
// for every delivery, until ctx ends; wait for them on the WaitGroup.
func consume(ctx context.Context, b *testing.B, bs *Bus, n int, settle func(*bus.Delivery)) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range n {
		c, err := bs.Subscribe(ctx, bus.SubscribeOptions{Topic: "events", Subscription: "s"})
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			for {
				d, err := c.Receive(ctx)
				if err != nil {
					return
				}
				settle(d)
			}
		})
	}
	return &wg
}

// publishAll publishes b.N events of size bytes over keys keys from
// b.RunParallel's goroutines; a failed publish fails b and calls failed.
func publishAll(ctx context.Context, b *testing.B, bs *Bus, keys, size int, failed func()) {
	payload := make([]byte, size)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if err := bs.Publish(ctx, "events", bus.Message{Key: "oc_" + strconv.Itoa(i%keys), Payload: payload}); err != nil {
				b.Error(err)
				failed()
				return
			}
		}
	})
}
