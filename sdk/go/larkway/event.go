package larkway

import (
	"time"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Well-known event types.
const (
	EventMessageReceive   = "im.message.receive_v1"
	EventCardAction       = "card.action.trigger"
	EventCardActionLegacy = "card.action.trigger_v1"
)

// Event is one Lark event or callback, normalized by the core from schema 1.0
// or 2.0. Message or CardAction is set for those kinds; Raw always holds the
// event JSON exactly as Lark sent it.
type Event struct {
	ID         string
	Type       string
	AppID      string
	TenantKey  string
	Schema     string
	DedupKey   string
	ChatID     string
	CreateTime time.Time
	Sender     User
	Message    *Message
	CardAction *CardAction
	Raw        []byte
	// Attempt is 1 on the first delivery and counts redeliveries.
	Attempt int
}

// User carries the ids Lark gives for a user or bot.
type User struct {
	OpenID, UserID, UnionID string
	// SenderType is "user" or "app" for message senders.
	SenderType string
}

// Message is a received chat message.
type Message struct {
	ID, RootID, ParentID, ThreadID string
	ChatID, ChatType               string
	// Type is the msg_type: "text", "post", "image", ...
	Type string
	// ContentJSON is Lark's content JSON string.
	ContentJSON string
	// Text is the plain text, with mention placeholders replaced by names.
	Text        string
	Mentions    []Mention
	ResourceKey string
}

// Mention is an @-mention.
type Mention struct {
	Key, Name string
	ID        User
}

// CardAction is a click or form submission on an interactive card.
type CardAction struct {
	MessageID, ChatID string
	// Token is the delayed-update credential.
	Token                string
	Tag, Name, Option    string
	ValueJSON, FormJSON  string
	InputValue, Timezone string
	Operator             User
	// AwaitsResponse is true when Lark's callback waits for a toast or card.
	AwaitsResponse bool
}

func eventFromProto(d *pluginv1.Delivery) *Event {
	pe := d.GetEvent()
	ev := &Event{
		ID:        pe.GetEventId(),
		Type:      pe.GetEventType(),
		AppID:     pe.GetAppId(),
		TenantKey: pe.GetTenantKey(),
		Schema:    pe.GetSchema(),
		DedupKey:  pe.GetDedupKey(),
		ChatID:    pe.GetChatId(),
		Sender:    userFromProto(pe.GetSender()),
		Raw:       pe.GetRawJson(),
		Attempt:   int(d.GetAttempt()),
	}
	if ct := pe.GetCreateTime(); ct != nil {
		ev.CreateTime = ct.AsTime()
	}
	if m := pe.GetMessage(); m != nil {
		msg := &Message{
			ID: m.GetMessageId(), RootID: m.GetRootId(), ParentID: m.GetParentId(), ThreadID: m.GetThreadId(),
			ChatID: m.GetChatId(), ChatType: m.GetChatType(), Type: m.GetMessageType(),
			ContentJSON: m.GetContentJson(), Text: m.GetText(), ResourceKey: m.GetResourceKey(),
		}
		for _, mn := range m.GetMentions() {
			msg.Mentions = append(msg.Mentions, Mention{Key: mn.GetKey(), Name: mn.GetName(), ID: userFromProto(mn.GetId())})
		}
		ev.Message = msg
	}
	if c := pe.GetCardAction(); c != nil {
		ev.CardAction = &CardAction{
			MessageID: c.GetOpenMessageId(), ChatID: c.GetOpenChatId(), Token: c.GetToken(),
			Tag: c.GetTag(), Name: c.GetName(), Option: c.GetOption(),
			ValueJSON: c.GetValueJson(), FormJSON: c.GetFormValueJson(),
			InputValue: c.GetInputValue(), Timezone: c.GetTimezone(),
			Operator: userFromProto(c.GetOperator()), AwaitsResponse: c.GetAwaitsResponse(),
		}
	}
	return ev
}

func userFromProto(u *pluginv1.UserId) User {
	return User{OpenID: u.GetOpenId(), UserID: u.GetUserId(), UnionID: u.GetUnionId(), SenderType: u.GetSenderType()}
}
