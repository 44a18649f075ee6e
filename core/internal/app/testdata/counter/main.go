// Command counter is a test plugin that keeps a per-chat counter in the
// core's state store, incremented with compare-and-swap, and reports the
// trace it continues.
package main

import (
	"context"
	"errors"
	"strconv"

	"go.opentelemetry.io/otel/trace"

	"github.com/larkway/larkway/sdk/go/larkway"
)

func main() {
	p := larkway.New("counter", "1.0.0", larkway.WithActions(larkway.ActionReply))
	p.OnCommand("/count", func(ctx context.Context, ev *larkway.Event, _ larkway.Command) ([]larkway.Action, error) {
		key := "count:" + ev.ChatID
		for range 10 {
			e, _, err := p.State().Get(ctx, key)
			if err != nil {
				return nil, err
			}
			n, _ := strconv.Atoi(string(e.Value))
			n++
			ok, _, err := p.State().CompareAndSwap(ctx, key, e.Revision, []byte(strconv.Itoa(n)), 0)
			if err != nil {
				return nil, err
			}
			if ok {
				return []larkway.Action{larkway.ReplyText("count: " + strconv.Itoa(n))}, nil
			}
		}
		return nil, errors.New("state store contended")
	})
	// /trace replies with the trace id the handler's context continues.
	p.OnCommand("/trace", func(ctx context.Context, _ *larkway.Event, _ larkway.Command) ([]larkway.Action, error) {
		return []larkway.Action{larkway.ReplyText("trace: " + trace.SpanContextFromContext(ctx).TraceID().String())}, nil
	})
	p.Main()
}
