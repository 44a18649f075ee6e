// Command noop is the bench's no-op plugin: it takes every message and
// returns no action, so `larkway bench` measures delivery alone. With
// LARKWAY_BENCH_NOOP_RATE set (events per second) it handles no more than
// that: a slow plugin, whose backlog the bus must hold through a peak.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/time/rate"

	"github.com/larkway/larkway/sdk/go/larkway"
)

func main() {
	handle := func(context.Context, *larkway.Event) ([]larkway.Action, error) { return nil, nil }
	if v := os.Getenv("LARKWAY_BENCH_NOOP_RATE"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r <= 0 {
			fmt.Fprintf(os.Stderr, "noop: LARKWAY_BENCH_NOOP_RATE %q: want a positive number of events per second\n", v)
			os.Exit(2)
		}
		lim := rate.NewLimiter(rate.Limit(r), 1)
		handle = func(ctx context.Context, _ *larkway.Event) ([]larkway.Action, error) {
			return nil, lim.Wait(ctx)
		}
	}
	p := larkway.New("noop", "1.0.0", larkway.WithDescription("takes every message, does nothing"))
	p.OnMessage(handle)
	p.Main()
}
