package larkway_test

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/sdk/go/larkway"
	"github.com/larkway/larkway/sdk/go/larkwaytest"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		text  string
		ok    bool
		name  string
		args  []string
		flags map[string]string
	}{
		{"/help", true, "/help", nil, map[string]string{}},
		{"  /Deploy prod --force --region=eu", true, "/deploy", []string{"prod"}, map[string]string{"force": "true", "region": "eu"}},
		{"@Bot /say \"hello world\" twice", true, "/say", []string{"hello world", "twice"}, map[string]string{}},
		{"@Bot @Other /roll 2d6", true, "/roll", []string{"2d6"}, map[string]string{}},
		{"hello /help", false, "", nil, nil},
		{"/", false, "", nil, nil},
		{"@Bot", false, "", nil, nil},
		{"", false, "", nil, nil},
		{"/x -- --=v", true, "/x", []string{"--"}, map[string]string{"": "v"}},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			c, ok := larkway.ParseCommand(tt.text)
			if ok != tt.ok {
				t.Fatalf("ok = %v", ok)
			}
			if !ok {
				return
			}
			if c.Name != tt.name || !reflect.DeepEqual(c.Args, tt.args) || !reflect.DeepEqual(c.Flags, tt.flags) {
				t.Fatalf("got %+v", c)
			}
		})
	}
}

func FuzzParseCommand(f *testing.F) {
	f.Add("/deploy prod --force")
	f.Add(`@a "/b" "c`)
	f.Fuzz(func(t *testing.T, s string) {
		c, ok := larkway.ParseCommand(s)
		if ok && !strings.HasPrefix(c.Name, "/") {
			t.Fatalf("command name %q", c.Name)
		}
	})
}

func TestOutcomes(t *testing.T) {
	p := larkway.New("t", "1", larkway.WithLogger(discardLogger()))
	p.OnCommand("/fail", func(context.Context, *larkway.Event, larkway.Command) ([]larkway.Action, error) {
		return nil, larkway.Permanent(errors.New("bad input"))
	})
	p.OnCommand("/later", func(context.Context, *larkway.Event, larkway.Command) ([]larkway.Action, error) {
		return nil, larkway.RetryAfter(errors.New("busy"), time.Second)
	})
	p.OnCommand("/err", func(context.Context, *larkway.Event, larkway.Command) ([]larkway.Action, error) {
		return nil, errors.New("transient")
	})
	p.OnCommand("/panic", func(context.Context, *larkway.Event, larkway.Command) ([]larkway.Action, error) {
		panic("boom")
	})
	p.OnCommand("/deadline", func(ctx context.Context, _ *larkway.Event, _ larkway.Command) ([]larkway.Action, error) {
		if _, ok := ctx.Deadline(); !ok {
			return nil, larkway.Permanent(errors.New("no deadline"))
		}
		return []larkway.Action{larkway.ReplyText("ok")}, nil
	})
	tests := []struct {
		text   string
		status larkway.Status
		err    string
	}{
		{"/fail", larkway.StatusFailed, "bad input"},
		{"/later", larkway.StatusRetry, "busy"},
		{"/err", larkway.StatusRetry, "transient"},
		{"/panic", larkway.StatusRetry, "panicked"},
		{"/deadline", larkway.StatusDone, ""},
		{"/unknown", larkway.StatusDone, ""},
		{"no command", larkway.StatusDone, ""},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			out := larkwaytest.Run(t, p, larkwaytest.Message(tt.text))
			if out.Status != tt.status || !strings.Contains(out.Err, tt.err) {
				t.Fatalf("outcome %+v", out)
			}
		})
	}
}

func TestRoutingPrecedence(t *testing.T) {
	p := larkway.New("t", "1", larkway.WithLogger(discardLogger()))
	p.OnCommand("/ping", func(context.Context, *larkway.Event, larkway.Command) ([]larkway.Action, error) {
		return []larkway.Action{larkway.ReplyText("pong")}, nil
	})
	p.OnMessage(func(_ context.Context, ev *larkway.Event) ([]larkway.Action, error) {
		return []larkway.Action{larkway.ReplyText("msg:" + ev.Message.Text)}, nil
	})
	p.OnCardAction(func(_ context.Context, ev *larkway.Event) (*larkway.CardResponse, []larkway.Action, error) {
		return &larkway.CardResponse{ToastType: "success", Toast: "clicked"}, []larkway.Action{larkway.UpdateCard(ev.CardAction.MessageID, `{}`)}, nil
	})
	larkwaytest.RequireReplyText(t, larkwaytest.Run(t, p, larkwaytest.Message("@Bot /ping")), "pong")
	larkwaytest.RequireReplyText(t, larkwaytest.Run(t, p, larkwaytest.Message("hi")), "msg:hi")
	out := larkwaytest.Run(t, p, larkwaytest.CardAction("om_card", map[string]string{"k": "v"}))
	larkwaytest.RequireDone(t, out)
	if out.Card == nil || out.Card.Toast != "clicked" || out.Card.ToastType != "success" {
		t.Fatalf("card response %+v", out.Card)
	}
	if s := larkwaytest.Summaries(out); len(s) != 1 || s[0].Kind != "update_card" || s[0].Target != "om_card" {
		t.Fatalf("actions %+v", s)
	}
}

func TestActionSummaries(t *testing.T) {
	tests := []struct {
		a    larkway.Action
		want larkway.ActionSummary
	}{
		{larkway.ReplyText("hi"), larkway.ActionSummary{Kind: "reply", MsgType: "text", ContentJSON: `{"text":"hi"}`}},
		{larkway.ReplyInThread("post", `{}`), larkway.ActionSummary{Kind: "reply", MsgType: "post", ContentJSON: `{}`, InThread: true}},
		{larkway.SendText("chat_id", "oc_1", `a"b`), larkway.ActionSummary{Kind: "send", Target: "oc_1", MsgType: "text", ContentJSON: `{"text":"a\"b"}`}},
		{larkway.AddReaction("om_1", "THUMBSUP"), larkway.ActionSummary{Kind: "add_reaction", Target: "om_1", ContentJSON: "THUMBSUP"}},
		{larkway.RawCall("GET", "/open-apis/x", ""), larkway.ActionSummary{Kind: "raw_call", Target: "/open-apis/x", MsgType: "GET"}},
		{larkway.Action{}, larkway.ActionSummary{}},
	}
	for _, tt := range tests {
		if got := tt.a.Summary(); got != tt.want {
			t.Errorf("got %+v want %+v", got, tt.want)
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
