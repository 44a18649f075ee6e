package main

import (
	"testing"

	"github.com/larkway/larkway/sdk/go/larkwaytest"
)

func TestEchoRepliesWithTheText(t *testing.T) {
	out := larkwaytest.Run(t, newPlugin(), larkwaytest.Message("hello there"))
	larkwaytest.RequireReplyText(t, out, "echo: hello there")
}

func TestEchoNamesNonTextMessages(t *testing.T) {
	ev := larkwaytest.Message("")
	ev.Message.Type = "image"
	out := larkwaytest.Run(t, newPlugin(), ev)
	larkwaytest.RequireReplyText(t, out, "(image message)")
}
