package action

import (
	"context"

	"github.com/larkway/larkway/core/internal/action/ratelimit"
	"github.com/larkway/larkway/core/internal/lark"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// plan turns action i of req into the call it makes, or a reason to refuse
// it: a missing target, or a request Lark would reject (validated before it
// waits for a rate-limit slot it would waste).
func (e *Executor) plan(req Request, i int, a *pluginv1.Action, cli Client) (call, string) {
	ev := req.Event
	return e.planWithUUID(req, i, a, cli, IdempotencyKey(ev.GetAppId(), ev.GetDedupKey(), req.Plugin, i))
}

// planWithUUID is plan with the idempotency uuid of sends and replies given
// (a replay reuses the original's).
func (e *Executor) planWithUUID(req Request, i int, a *pluginv1.Action, cli Client, uuid string) (call, string) {
	ev := req.Event
	var c call
	var err error
	switch k := a.GetKind().(type) {
	case *pluginv1.Action_Reply:
		target := k.Reply.GetMessageId()
		if target == "" {
			target = eventMessageID(ev)
		}
		if target == "" {
			return c, "reply needs a message_id: the event has no message"
		}
		r := lark.ReplyRequest{MessageID: target, MsgType: k.Reply.GetMsgType(), Content: k.Reply.GetContentJson(),
			ReplyInThread: k.Reply.GetReplyInThread(), UUID: uuid}
		err = r.Validate()
		// A reply lands in the replied-to message's chat: the event's (a
		// plugin replying elsewhere is limited as if in the event's chat).
		c = call{api: lark.APIReply, target: ratelimit.ChatScope(ev.GetChatId()), priority: ratelimit.PriorityHigh,
			do: func(ctx context.Context) error { _, err := cli.Reply(ctx, r); return err }}
	case *pluginv1.Action_Send:
		s := k.Send
		r := lark.SendRequest{ReceiveIDType: s.GetReceiveIdType(), ReceiveID: s.GetReceiveId(), MsgType: s.GetMsgType(),
			Content: s.GetContentJson(), UUID: uuid}
		err = r.Validate()
		target := ratelimit.UserScope(r.ReceiveIDType, r.ReceiveID)
		if r.ReceiveIDType == lark.ReceiveIDChatID {
			target = ratelimit.ChatScope(r.ReceiveID)
		}
		c = call{api: lark.APISend, target: target, priority: sendPriority(ev, r),
			do: func(ctx context.Context) error { _, err := cli.Send(ctx, r); return err }}
	case *pluginv1.Action_UpdateCard:
		id := k.UpdateCard.GetMessageId()
		if id == "" {
			id = ev.GetCardAction().GetOpenMessageId()
		}
		r := lark.UpdateCardRequest{MessageID: id, Card: k.UpdateCard.GetCardJson()}
		err = r.Validate()
		c = call{api: lark.APIUpdateCard, target: ratelimit.CardScope(id), priority: ratelimit.PriorityHigh,
			do: func(ctx context.Context) error { return cli.UpdateCard(ctx, r) }}
	case *pluginv1.Action_DelayedCardUpdate:
		tok := k.DelayedCardUpdate.GetToken()
		if tok == "" {
			tok = ev.GetCardAction().GetToken()
		}
		if tok == "" {
			return c, "delayed_card_update needs a token: the event is not a card callback"
		}
		r := lark.DelayedCardUpdateRequest{Token: tok, Card: k.DelayedCardUpdate.GetCardJson(), OpenIDs: k.DelayedCardUpdate.GetOpenIds()}
		err = r.Validate()
		c = call{api: lark.APIDelayedCardUpdate, priority: ratelimit.PriorityHigh,
			do: func(ctx context.Context) error { return cli.DelayedUpdateCard(ctx, r) }}
	case *pluginv1.Action_AddReaction:
		id := k.AddReaction.GetMessageId()
		if id == "" {
			id = eventMessageID(ev)
		}
		r := lark.AddReactionRequest{MessageID: id, EmojiType: k.AddReaction.GetEmojiType()}
		err = r.Validate()
		c = call{api: lark.APIAddReaction, priority: ratelimit.PriorityNormal,
			do: func(ctx context.Context) error { _, err := cli.AddReaction(ctx, r); return err }}
	case *pluginv1.Action_RemoveReaction:
		r := lark.RemoveReactionRequest{MessageID: k.RemoveReaction.GetMessageId(), ReactionID: k.RemoveReaction.GetReactionId()}
		err = r.Validate()
		c = call{api: lark.APIRemoveReaction, priority: ratelimit.PriorityNormal,
			do: func(ctx context.Context) error { return cli.RemoveReaction(ctx, r) }}
	case *pluginv1.Action_RawCall:
		r := lark.RawRequest{Method: k.RawCall.GetMethod(), Path: k.RawCall.GetPath(), Body: []byte(k.RawCall.GetBodyJson())}
		err = r.Validate()
		c = call{api: lark.APIRaw, priority: ratelimit.PriorityNormal,
			do: func(ctx context.Context) error { _, err := cli.Raw(ctx, r); return err }}
	default:
		kind, _ := kindOf(a)
		return c, kind + " is not supported by this core version"
	}
	if err != nil {
		return c, err.Error()
	}
	c.client = cli
	return c, ""
}

// eventMessageID is the message an event is about: the received message, or
// the clicked card.
func eventMessageID(ev *pluginv1.Event) string {
	if id := ev.GetMessage().GetMessageId(); id != "" {
		return id
	}
	return ev.GetCardAction().GetOpenMessageId()
}

// sendPriority: a send into the event's own chat or to its sender answers a
// person; any other send is a broadcast.
func sendPriority(ev *pluginv1.Event, r lark.SendRequest) ratelimit.Priority {
	s := ev.GetSender()
	switch {
	case r.ReceiveIDType == lark.ReceiveIDChatID && r.ReceiveID == ev.GetChatId() && r.ReceiveID != "",
		r.ReceiveIDType == lark.ReceiveIDOpenID && r.ReceiveID == s.GetOpenId() && r.ReceiveID != "",
		r.ReceiveIDType == lark.ReceiveIDUserID && r.ReceiveID == s.GetUserId() && r.ReceiveID != "",
		r.ReceiveIDType == lark.ReceiveIDUnionID && r.ReceiveID == s.GetUnionId() && r.ReceiveID != "":
		return ratelimit.PriorityHigh
	}
	return ratelimit.PriorityLow
}
