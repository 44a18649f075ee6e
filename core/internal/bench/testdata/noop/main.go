// Command noop is the bench's no-op plugin: it takes every message and
// returns no action, so `larkway bench` measures delivery alone.
package main

import (
	"context"

	"github.com/larkway/larkway/sdk/go/larkway"
)

func main() {
	p := larkway.New("noop", "1.0.0", larkway.WithDescription("takes every message, does nothing"))
	p.OnMessage(func(context.Context, *larkway.Event) ([]larkway.Action, error) { return nil, nil })
	p.Main()
}
