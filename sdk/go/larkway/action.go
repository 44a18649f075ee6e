package larkway

import (
	"encoding/json"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// ActionKind is a family of actions a plugin declares it may perform.
type ActionKind int

// Action kinds, for WithActions.
const (
	ActionSend ActionKind = iota + 1
	ActionReply
	ActionUpdateCard
	ActionReaction
	ActionRawCall
)

func (k ActionKind) proto() pluginv1.ActionKind {
	switch k {
	case ActionSend:
		return pluginv1.ActionKind_ACTION_KIND_SEND
	case ActionReply:
		return pluginv1.ActionKind_ACTION_KIND_REPLY
	case ActionUpdateCard:
		return pluginv1.ActionKind_ACTION_KIND_UPDATE_CARD
	case ActionReaction:
		return pluginv1.ActionKind_ACTION_KIND_REACTION
	case ActionRawCall:
		return pluginv1.ActionKind_ACTION_KIND_RAW_CALL
	}
	return pluginv1.ActionKind_ACTION_KIND_UNSPECIFIED
}

// Action is one Lark operation for the core to perform. Build it with the
// functions below; the zero value is invalid.
type Action struct{ a *pluginv1.Action }

// textContent encodes Lark's text content object.
func textContent(text string) string {
	b, _ := json.Marshal(struct {
		Text string `json:"text"`
	}{text})
	return string(b)
}

// ReplyText replies to the event's message with plain text.
func ReplyText(text string) Action { return Reply("text", textContent(text)) }

// Reply replies to the event's message with any message type and its
// content JSON (e.g. msgType "interactive" with a card).
func Reply(msgType, contentJSON string) Action {
	return Action{&pluginv1.Action{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MsgType: msgType, ContentJson: contentJSON}}}}
}

// ReplyInThread replies in a thread under the event's message.
func ReplyInThread(msgType, contentJSON string) Action {
	return Action{&pluginv1.Action{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MsgType: msgType, ContentJson: contentJSON, ReplyInThread: true}}}}
}

// ReplyTo replies to a message other than the event's own.
func ReplyTo(messageID, msgType, contentJSON string) Action {
	return Action{&pluginv1.Action{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MessageId: messageID, MsgType: msgType, ContentJson: contentJSON}}}}
}

// SendText sends a text message; receiveIDType is "open_id", "user_id",
// "union_id", "email" or "chat_id".
func SendText(receiveIDType, receiveID, text string) Action {
	return Send(receiveIDType, receiveID, "text", textContent(text))
}

// Send sends a message of any type.
func Send(receiveIDType, receiveID, msgType, contentJSON string) Action {
	return Action{&pluginv1.Action{Kind: &pluginv1.Action_Send{Send: &pluginv1.SendMessage{
		ReceiveIdType: receiveIDType, ReceiveId: receiveID, MsgType: msgType, ContentJson: contentJSON}}}}
}

// UpdateCard replaces the content of a shared card message.
func UpdateCard(messageID, cardJSON string) Action {
	return Action{&pluginv1.Action{Kind: &pluginv1.Action_UpdateCard{UpdateCard: &pluginv1.UpdateCard{MessageId: messageID, CardJson: cardJSON}}}}
}

// DelayedCardUpdate updates the clicked card with the callback's token
// (token "" means the delivery's own).
func DelayedCardUpdate(token, cardJSON string, openIDs ...string) Action {
	return Action{&pluginv1.Action{Kind: &pluginv1.Action_DelayedCardUpdate{DelayedCardUpdate: &pluginv1.DelayedCardUpdate{Token: token, CardJson: cardJSON, OpenIds: openIDs}}}}
}

// AddReaction adds an emoji reaction (messageID "" means the event's message).
func AddReaction(messageID, emojiType string) Action {
	return Action{&pluginv1.Action{Kind: &pluginv1.Action_AddReaction{AddReaction: &pluginv1.AddReaction{MessageId: messageID, EmojiType: emojiType}}}}
}

// RemoveReaction removes a reaction the bot added.
func RemoveReaction(messageID, reactionID string) Action {
	return Action{&pluginv1.Action{Kind: &pluginv1.Action_RemoveReaction{RemoveReaction: &pluginv1.RemoveReaction{MessageId: messageID, ReactionId: reactionID}}}}
}

// RawCall performs any OpenAPI request with the tenant token.
func RawCall(method, path, bodyJSON string) Action {
	return Action{&pluginv1.Action{Kind: &pluginv1.Action_RawCall{RawCall: &pluginv1.RawCall{Method: method, Path: path, BodyJson: bodyJSON}}}}
}

// ActionSummary is a plain view of an action for tests and logs.
type ActionSummary struct {
	// Kind is "send", "reply", "update_card", "delayed_card_update",
	// "add_reaction", "remove_reaction" or "raw_call".
	Kind string
	// Target is the message id, receive id or path the action applies to.
	Target      string
	MsgType     string
	ContentJSON string
	InThread    bool
}

// Summary describes the action.
func (a Action) Summary() ActionSummary {
	switch k := a.a.GetKind().(type) {
	case *pluginv1.Action_Send:
		return ActionSummary{Kind: "send", Target: k.Send.GetReceiveId(), MsgType: k.Send.GetMsgType(), ContentJSON: k.Send.GetContentJson()}
	case *pluginv1.Action_Reply:
		return ActionSummary{Kind: "reply", Target: k.Reply.GetMessageId(), MsgType: k.Reply.GetMsgType(), ContentJSON: k.Reply.GetContentJson(), InThread: k.Reply.GetReplyInThread()}
	case *pluginv1.Action_UpdateCard:
		return ActionSummary{Kind: "update_card", Target: k.UpdateCard.GetMessageId(), MsgType: "interactive", ContentJSON: k.UpdateCard.GetCardJson()}
	case *pluginv1.Action_DelayedCardUpdate:
		return ActionSummary{Kind: "delayed_card_update", Target: k.DelayedCardUpdate.GetToken(), MsgType: "interactive", ContentJSON: k.DelayedCardUpdate.GetCardJson()}
	case *pluginv1.Action_AddReaction:
		return ActionSummary{Kind: "add_reaction", Target: k.AddReaction.GetMessageId(), ContentJSON: k.AddReaction.GetEmojiType()}
	case *pluginv1.Action_RemoveReaction:
		return ActionSummary{Kind: "remove_reaction", Target: k.RemoveReaction.GetMessageId(), ContentJSON: k.RemoveReaction.GetReactionId()}
	case *pluginv1.Action_RawCall:
		return ActionSummary{Kind: "raw_call", Target: k.RawCall.GetPath(), MsgType: k.RawCall.GetMethod(), ContentJSON: k.RawCall.GetBodyJson()}
	}
	return ActionSummary{}
}
