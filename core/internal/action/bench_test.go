package action

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/action/ratelimit"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// BenchmarkExecutorReplies measures replies per second through the whole
// executor — permission check, uuid, rate-limit queue, circuit breaker, the
// lark client and the SDK — to the emulator in unlimited mode over
// loopback HTTP, with client-side limits off (so the limiter's store is not
// consulted; the breaker is). "embedded" keeps state in the process,
// "redis" shares the breaker through Redis.
func BenchmarkExecutorReplies(b *testing.B) {
	for _, mode := range []struct {
		name  string
		redis bool
	}{{"embedded", false}, {"redis", true}} {
		b.Run(mode.name, func(b *testing.B) {
			c := newCluster(b, clusterOpts{redis: mode.redis, cfg: Config{Limits: ratelimit.Limits{Disabled: true}}})
			ex := c.execs[0]
			var n atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					if i%20000 == 0 {
						c.emu.Reset() // bound the emulator's records
					}
					id := fmt.Sprintf("om_bench_%d", i)
					refused, err := ex.Execute(b.Context(), Request{Plugin: "p", Allowed: allowReply,
						Event: messageEvent(id, fmt.Sprintf("oc_bench_%d", i%64)), Actions: []*pluginv1.Action{reply("bench")}})
					if err != nil || len(refused) != 0 {
						b.Errorf("refused %v, err %v", refused, err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "actions/s")
		})
	}
}

// BenchmarkExecutorRepliesLimited is the same with the rate limiter on but
// limits too high to ever make a call wait: the cost of the queue and the
// (Redis) GCRA per call.
func BenchmarkExecutorRepliesLimited(b *testing.B) {
	for _, mode := range []struct {
		name  string
		redis bool
	}{{"embedded", false}, {"redis", true}} {
		b.Run(mode.name, func(b *testing.B) {
			c := newCluster(b, clusterOpts{redis: mode.redis, cfg: Config{Limits: ratelimit.Limits{
				AppPerSecond: ratelimit.Limit{Count: 1_000_000, Window: time.Second}, AppPerMinute: ratelimit.Limit{Count: 60_000_000, Window: time.Minute},
				PerChat: ratelimit.Limit{Count: 1000, Window: time.Second}}}})
			ex := c.execs[0]
			var n atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					if i%20000 == 0 {
						c.emu.Reset()
					}
					id := fmt.Sprintf("om_benchl_%d", i)
					refused, err := ex.Execute(b.Context(), Request{Plugin: "p", Allowed: allowReply,
						Event: messageEvent(id, fmt.Sprintf("oc_bench_%d", i)), Actions: []*pluginv1.Action{reply("bench")}})
					if err != nil || len(refused) != 0 {
						b.Errorf("refused %v, err %v", refused, err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "actions/s")
		})
	}
}
