package console

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/envelope"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

type nopPublisher struct{ err error }

func (p nopPublisher) Publish(context.Context, string, bus.Message) error { return p.err }

type nopExecutor struct{}

func (nopExecutor) Execute(context.Context, action.Request) ([]*pluginv1.RefusedAction, error) {
	return nil, nil
}
func (nopExecutor) SendFallback(context.Context, string, *pluginv1.Event, string) error {
	return errors.New("bot not in chat")
}

func message(chat, text string) bus.Message {
	m, _ := envelope.Encode(&pluginv1.Event{EventId: "ev-" + text, EventType: "im.message.receive_v1", AppId: "cli_a", ChatId: chat,
		Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: "om-" + text, ChatId: chat, Text: text}}})
	return m
}

// The hub counts every event and action; it keeps and sends items only
// while someone watches, filtered; a failed publish is no event; a watcher
// that does not read loses items instead of blocking the core.
func TestHub(t *testing.T) {
	h := NewHub()
	pub := h.Publisher(nopPublisher{})
	ctx := context.Background()
	_ = pub.Publish(ctx, envelope.Topic("cli_a"), message("oc_1", "unwatched"))
	if e, _ := h.Counts(); e != 1 {
		t.Fatalf("unwatched event counted %d times", e)
	}
	if past, _ := h.subscribe(Filter{}); len(past) != 0 {
		t.Fatal("an item was kept while nobody watched")
	}
	h = NewHub()
	pub, exec := h.Publisher(nopPublisher{}), h.Executor(nopExecutor{})
	_, all := h.subscribe(Filter{})
	_, byChat := h.subscribe(Filter{Chat: "oc_2"})
	_, byPlugin := h.subscribe(Filter{Plugin: "echo"})
	_ = pub.Publish(ctx, envelope.Topic("cli_a"), message("oc_1", "one"))
	_ = h.Publisher(nopPublisher{err: errors.New("bus down")}).Publish(ctx, envelope.Topic("cli_a"), message("oc_1", "lost"))
	_ = pub.Publish(ctx, envelope.Topic("cli_a"), message("oc_2", "two"))
	ev := &pluginv1.Event{AppId: "cli_a", ChatId: "oc_2"}
	_, _ = exec.Execute(ctx, action.Request{Plugin: "echo", Event: ev, Actions: []*pluginv1.Action{
		{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{}}}}})
	_ = exec.SendFallback(ctx, "other", ev, "sorry")

	if e, a := h.Counts(); e != 2 || a != 2 {
		t.Fatalf("counts %d events, %d actions; want 2 and 2", e, a)
	}
	want := []Item{
		{Kind: "event", App: "cli_a", Chat: "oc_1", Type: "im.message.receive_v1", Detail: "one"},
		{Kind: "event", App: "cli_a", Chat: "oc_2", Type: "im.message.receive_v1", Detail: "two"},
		{Kind: "action", App: "cli_a", Chat: "oc_2", Plugin: "echo", Type: "reply", Detail: "done"},
		{Kind: "action", App: "cli_a", Chat: "oc_2", Plugin: "other", Type: "fallback_reply", Detail: "error: bot not in chat"},
	}
	drain := func(ch chan Item) []Item {
		var out []Item
		for len(ch) > 0 {
			it := <-ch
			if it.Time.IsZero() {
				t.Errorf("item %+v has no time", it)
			}
			it.Time = time.Time{}
			out = append(out, it)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		ch   chan Item
		want []Item
	}{
		{"all", all, want},
		{"by chat", byChat, want[1:]},
		{"by plugin", byPlugin, want[2:3]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := drain(tc.ch); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	// A new watcher starts with the recent matching items.
	if past, _ := h.subscribe(Filter{App: "cli_a", Chat: "oc_1"}); len(past) != 1 || past[0].Detail != "one" {
		t.Fatalf("recent items by chat %+v", past)
	}
	// Nobody reads all: the core goes on, the items beyond its buffer are
	// dropped.
	for i := 0; i < 1000; i++ {
		_ = pub.Publish(ctx, envelope.Topic("cli_a"), message("oc_3", "flood"))
	}
	if len(all) != cap(all) {
		t.Fatalf("a watcher that does not read holds %d of %d items", len(all), cap(all))
	}
	h.unsubscribe(all)
	h.unsubscribe(all) // idempotent
}
