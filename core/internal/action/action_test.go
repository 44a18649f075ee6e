package action

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/larkway/larkway/core/internal/lark"
	"github.com/larkway/larkway/core/larkemu"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

func newExecutor(t *testing.T) (*Executor, *larkemu.Emulator) {
	t.Helper()
	emu := larkemu.New(larkemu.Options{Apps: map[string]string{"cli_a": "secret"}})
	srv := httptest.NewServer(emu.Handler())
	t.Cleanup(srv.Close)
	cli, err := lark.New(lark.Config{AppID: "cli_a", AppSecret: "secret", BaseURL: srv.URL}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close(context.Background()) })
	return New(map[string]Client{"cli_a": cli}, slog.New(slog.DiscardHandler), nil), emu
}

func event() *pluginv1.Event {
	return &pluginv1.Event{EventId: "ev1", AppId: "cli_a", DedupKey: "om_1", ChatId: "oc_1",
		Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: "om_1", ChatId: "oc_1"}}}
}

func reply(text string) *pluginv1.Action {
	return &pluginv1.Action{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MsgType: "text", ContentJson: `{"text":"` + text + `"}`}}}
}

var allowReply = []pluginv1.ActionKind{pluginv1.ActionKind_ACTION_KIND_REPLY}

func TestExecuteReplyIsIdempotent(t *testing.T) {
	e, emu := newExecutor(t)
	req := Request{Plugin: "p", Allowed: allowReply, Event: event(), Actions: []*pluginv1.Action{reply("one"), reply("two")}}
	for range 3 { // a redelivered event runs the same actions again
		refused, err := e.Execute(context.Background(), req)
		if err != nil || len(refused) != 0 {
			t.Fatalf("refused %v err %v", refused, err)
		}
	}
	msgs := emu.Messages()
	if len(msgs) != 2 || msgs[0].ParentID != "om_1" || !strings.Contains(msgs[1].Content, "two") {
		t.Fatalf("emulator recorded %+v", msgs)
	}
}

func TestExecuteRefusals(t *testing.T) {
	e, emu := newExecutor(t)
	send := &pluginv1.Action{Kind: &pluginv1.Action_Send{Send: &pluginv1.SendMessage{ReceiveIdType: "chat_id", ReceiveId: "oc_1", MsgType: "text", ContentJson: `{"text":"x"}`}}}
	badContent := &pluginv1.Action{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MsgType: "text", ContentJson: `not json`}}}
	tooLong := reply(strings.Repeat("x", 151*1024))
	refused, err := e.Execute(context.Background(), Request{Plugin: "p", Allowed: allowReply, Event: event(),
		Actions: []*pluginv1.Action{send, {}, badContent, tooLong, reply("ok")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(refused) != 4 {
		t.Fatalf("refused %v", refused)
	}
	for i, want := range []string{"allowed_actions", "empty", "", ""} {
		if refused[i].GetIndex() != uint32([]int{0, 1, 2, 3}[i]) || !strings.Contains(refused[i].GetReason(), want) {
			t.Errorf("refusal %d: %v", i, refused[i])
		}
	}
	if msgs := emu.Messages(); len(msgs) != 1 || !strings.Contains(msgs[0].Content, "ok") {
		t.Fatalf("emulator recorded %+v", msgs)
	}
}

func TestExecuteWithoutClient(t *testing.T) {
	e := New(map[string]Client{}, slog.New(slog.DiscardHandler), nil)
	_, err := e.Execute(context.Background(), Request{Plugin: "p", Allowed: allowReply, Event: event(), Actions: []*pluginv1.Action{reply("x")}})
	if !errors.Is(err, ErrNoClient) {
		t.Fatalf("err %v", err)
	}
}

type failingClient struct{ err error }

func (f failingClient) Reply(context.Context, lark.ReplyRequest) (lark.Sent, error) {
	return lark.Sent{}, f.err
}
func (f failingClient) Send(context.Context, lark.SendRequest) (lark.Sent, error) {
	return lark.Sent{}, f.err
}

func TestRetryableFailureAsksForRedelivery(t *testing.T) {
	e := New(map[string]Client{"cli_a": failingClient{&lark.APIError{Code: 99991400, HTTPStatus: 429}}}, slog.New(slog.DiscardHandler), nil)
	_, err := e.Execute(context.Background(), Request{Plugin: "p", Allowed: allowReply, Event: event(), Actions: []*pluginv1.Action{reply("x")}})
	if !errors.Is(err, ErrRetryable) {
		t.Fatalf("err %v", err)
	}
	e = New(map[string]Client{"cli_a": failingClient{&lark.APIError{Code: 230002, HTTPStatus: 400}}}, slog.New(slog.DiscardHandler), nil)
	refused, err := e.Execute(context.Background(), Request{Plugin: "p", Allowed: allowReply, Event: event(), Actions: []*pluginv1.Action{reply("x")}})
	if err != nil || len(refused) != 1 {
		t.Fatalf("business error: refused %v err %v", refused, err)
	}
}

func TestIdempotencyKey(t *testing.T) {
	a := IdempotencyKey("cli_a", "om_1", "p", 0)
	if a != IdempotencyKey("cli_a", "om_1", "p", 0) || len(a) > 50 {
		t.Fatalf("key %q", a)
	}
	seen := map[string]bool{a: true}
	for _, k := range []string{IdempotencyKey("cli_b", "om_1", "p", 0), IdempotencyKey("cli_a", "om_2", "p", 0),
		IdempotencyKey("cli_a", "om_1", "q", 0), IdempotencyKey("cli_a", "om_1", "p", 1), IdempotencyKey("cli_a", "om_1p", "", 0)} {
		if seen[k] {
			t.Fatalf("collision %q", k)
		}
		seen[k] = true
	}
}
