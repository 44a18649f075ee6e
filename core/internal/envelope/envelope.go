// Package envelope turns Lark's event JSON (schema 1.0 and 2.0) into the
// contract's normalized Event, and carries Events over the bus.
package envelope

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/larkway/larkway/core/internal/bus"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// ErrUnknownSchema classes JSON that is neither a 1.0 nor a 2.0 event.
var ErrUnknownSchema = errors.New("unknown event schema")

// ErrMalformed classes an event whose fields do not have Lark's shapes.
var ErrMalformed = errors.New("malformed event")

// Topic is the bus topic holding one app's events.
func Topic(appID string) string { return "larkway-events-" + appID }

// Property names on bus messages.
const (
	PropEventType = "larkway-event-type"
	PropEventID   = "larkway-event-id"
	PropDedupKey  = "larkway-dedup-key"
)

// Encode wraps an Event as a bus message keyed by its partition key (chat id,
// else the sender's open id, else the event id) so one chat stays in order.
func Encode(ev *pluginv1.Event) (bus.Message, error) {
	b, err := proto.Marshal(ev)
	if err != nil {
		return bus.Message{}, fmt.Errorf("encoding event %s: %w", ev.GetEventId(), err)
	}
	return bus.Message{
		Key:     PartitionKey(ev),
		Payload: b,
		Properties: map[string]string{
			PropEventType: ev.GetEventType(),
			PropEventID:   ev.GetEventId(),
			PropDedupKey:  ev.GetDedupKey(),
		},
	}, nil
}

// Decode reads an Event from a bus message payload.
func Decode(payload []byte) (*pluginv1.Event, error) {
	ev := &pluginv1.Event{}
	if err := proto.Unmarshal(payload, ev); err != nil {
		return nil, fmt.Errorf("decoding event: %w", err)
	}
	return ev, nil
}

// PartitionKey is the chat id, else the sender's open id, else the event id.
func PartitionKey(ev *pluginv1.Event) string {
	switch {
	case ev.GetChatId() != "":
		return ev.GetChatId()
	case ev.GetSender().GetOpenId() != "":
		return ev.GetSender().GetOpenId()
	default:
		return ev.GetEventId()
	}
}

// Probe is the part of any Lark body needed to route it before normalizing:
// url_verification, the verification token (1.0 top-level, 2.0 header), and
// the encrypted wrapper.
type Probe struct {
	Encrypt   string `json:"encrypt"`
	Type      string `json:"type"`
	Challenge string `json:"challenge"`
	Token     string `json:"token"`
	Schema    string `json:"schema"`
	Header    *struct {
		Token string `json:"token"`
	} `json:"header"`
}

// VerificationToken returns the token the body carries (2.0 header.token,
// else 1.0 top-level token).
func (p *Probe) VerificationToken() string {
	if p.Header != nil {
		return p.Header.Token
	}
	return p.Token
}

// IsChallenge reports a url_verification request.
func (p *Probe) IsChallenge() bool { return p.Type == "url_verification" }

type v2Body struct {
	Schema string `json:"schema"`
	Header struct {
		EventID    string `json:"event_id"`
		EventType  string `json:"event_type"`
		CreateTime string `json:"create_time"`
		TenantKey  string `json:"tenant_key"`
		AppID      string `json:"app_id"`
	} `json:"header"`
	Event json.RawMessage `json:"event"`
}

type userIDs struct {
	OpenID  string `json:"open_id"`
	UserID  string `json:"user_id"`
	UnionID string `json:"union_id"`
}

type messageEvent struct {
	Sender struct {
		SenderID   userIDs `json:"sender_id"`
		SenderType string  `json:"sender_type"`
		TenantKey  string  `json:"tenant_key"`
	} `json:"sender"`
	Message struct {
		MessageID   string `json:"message_id"`
		RootID      string `json:"root_id"`
		ParentID    string `json:"parent_id"`
		ThreadID    string `json:"thread_id"`
		ChatID      string `json:"chat_id"`
		ChatType    string `json:"chat_type"`
		MessageType string `json:"message_type"`
		Content     string `json:"content"`
		Mentions    []struct {
			Key  string  `json:"key"`
			ID   userIDs `json:"id"`
			Name string  `json:"name"`
		} `json:"mentions"`
	} `json:"message"`
}

// Normalize turns decrypted event JSON for app into an Event. The raw JSON is
// kept verbatim. It does not authenticate: callers check tokens and signatures.
func Normalize(appID string, raw []byte) (*pluginv1.Event, error) {
	var b v2Body
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if b.Schema != "2.0" {
		return nil, fmt.Errorf("%w: schema %q", ErrUnknownSchema, b.Schema)
	}
	h := b.Header
	if h.EventID == "" || h.EventType == "" {
		return nil, fmt.Errorf("%w: header.event_id and header.event_type are required", ErrMalformed)
	}
	ev := &pluginv1.Event{
		EventId: h.EventID, EventType: h.EventType, AppId: appID, TenantKey: h.TenantKey,
		Schema: "2.0", DedupKey: h.EventID, CreateTime: parseCreateTime(h.CreateTime), RawJson: raw,
	}
	if h.EventType == "im.message.receive_v1" {
		if err := normalizeMessage(ev, b.Event); err != nil {
			return nil, err
		}
	}
	return ev, nil
}

func normalizeMessage(ev *pluginv1.Event, raw json.RawMessage) error {
	var me messageEvent
	if err := json.Unmarshal(raw, &me); err != nil {
		return fmt.Errorf("%w: im.message.receive_v1 event: %v", ErrMalformed, err)
	}
	m := me.Message
	if m.MessageID == "" {
		return fmt.Errorf("%w: im.message.receive_v1 without message.message_id", ErrMalformed)
	}
	msg := &pluginv1.Message{
		MessageId: m.MessageID, RootId: m.RootID, ParentId: m.ParentID, ThreadId: m.ThreadID,
		ChatId: m.ChatID, ChatType: m.ChatType, MessageType: m.MessageType, ContentJson: m.Content,
	}
	for _, mn := range m.Mentions {
		msg.Mentions = append(msg.Mentions, &pluginv1.Mention{Key: mn.Key, Name: mn.Name,
			Id: &pluginv1.UserId{OpenId: mn.ID.OpenID, UserId: mn.ID.UserID, UnionId: mn.ID.UnionID}})
	}
	if m.MessageType == "text" && m.Content != "" {
		var c struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal([]byte(m.Content), &c); err != nil {
			return fmt.Errorf("%w: text content is not JSON: %v", ErrMalformed, err)
		}
		msg.Text = replaceMentions(c.Text, msg.Mentions)
	}
	ev.ChatId = m.ChatID
	ev.DedupKey = m.MessageID // Lark: dedupe messages on message_id, not event_id.
	ev.Sender = &pluginv1.UserId{OpenId: me.Sender.SenderID.OpenID, UserId: me.Sender.SenderID.UserID,
		UnionId: me.Sender.SenderID.UnionID, SenderType: me.Sender.SenderType}
	ev.Payload = &pluginv1.Event_Message{Message: msg}
	return nil
}

// replaceMentions turns "@_user_1 hi" into "@Alice hi".
func replaceMentions(text string, ms []*pluginv1.Mention) string {
	for _, m := range ms {
		if m.GetKey() != "" {
			text = strings.ReplaceAll(text, m.GetKey(), "@"+m.GetName())
		}
	}
	return text
}

// parseCreateTime reads Lark's create_time: a decimal string in milliseconds
// (13 digits) or microseconds (16 digits); anything else gives nil.
func parseCreateTime(s string) *timestamppb.Timestamp {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return nil
	}
	switch {
	case len(s) >= 16:
		return timestamppb.New(time.UnixMicro(n))
	case len(s) >= 13:
		return timestamppb.New(time.UnixMilli(n))
	default:
		return timestamppb.New(time.Unix(n, 0))
	}
}
