// Command echo is the smallest larkway plugin: it replies to every message
// with the message's own text.
package main

import (
	"context"

	"github.com/larkway/larkway/sdk/go/larkway"
)

// newPlugin is separate from main so tests can drive it in-process.
func newPlugin() *larkway.Plugin {
	p := larkway.New("echo", "1.0.0",
		larkway.WithDescription("replies to every message with its own text"),
		larkway.WithActions(larkway.ActionReply))
	p.OnMessage(func(_ context.Context, ev *larkway.Event) ([]larkway.Action, error) {
		text := ev.Message.Text
		if text == "" {
			text = "(" + ev.Message.Type + " message)"
		}
		return []larkway.Action{larkway.ReplyText("echo: " + text)}, nil
	})
	return p
}

func main() { newPlugin().Main() }
