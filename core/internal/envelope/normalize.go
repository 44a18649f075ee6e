package envelope

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// unmarshal is the JSON library: the slow path's decoder, and the
// reference for what the hand-written scanner (scan.go) decodes. The slow
// path runs only for bodies the scanner declines (odd keys, wrong types),
// so it uses encoding/json itself: goccy/go-json was faster there but
// panics on some truncated input (v0.10.5, `{"\` found by FuzzNormalize;
// the seed is in testdata). The JSON-library comparison
// (jsonlib_bench_test.go) swaps it, with decodeFast and decodeContent, to
// measure alternatives on this very code. Decoded strings must not alias
// the input: ingest reuses its buffers.
var unmarshal = json.Unmarshal

// decodeFast and decodeContent are the fast path's decoders: false means
// "use unmarshal".
var (
	decodeFast    = scanBody
	decodeContent = scanContent
)

// Event types with typed payloads.
const (
	TypeMessageReceive   = "im.message.receive_v1"
	TypeCardAction       = "card.action.trigger"
	TypeCardActionLegacy = "card.action.trigger_v1"
)

// Normalize turns decrypted event JSON (schema 2.0 or 1.0) for app into an
// Event. The raw JSON is kept verbatim. It does not authenticate: callers
// check tokens and signatures first (Parse serves both in one decode).
func Normalize(appID string, raw []byte) (*pluginv1.Event, error) {
	var b bodyJSON
	if decodeBody(raw, &b) {
		return b.normalize(appID, raw)
	}
	return normalizeSlow(appID, raw)
}

// newEvent is b.spare if set (Parse's pooled storage), else a new one.
func (b *bodyJSON) newEvent() *eventJSON {
	if e := b.spare; e != nil {
		b.spare = nil
		return e
	}
	return &eventJSON{}
}

// bodyJSON is every field of a plaintext Lark body that authentication or
// normalization reads (url_verification, schema 2.0 and 1.0 events), so one
// decode serves them all. Where event types share a key they share a field
// of one type; a body whose fields do not fit fails this decode and takes
// the slow path, which reads only what its event type needs.
type bodyJSON struct {
	// spare is storage for Event the fast decoder may use; not JSON.
	spare *eventJSON `json:"-"`

	Encrypt   string           `json:"encrypt"`
	Type      string           `json:"type"`
	Challenge string           `json:"challenge"`
	Token     string           `json:"token"`
	Schema    string           `json:"schema"`
	UUID      string           `json:"uuid"`
	TS        string           `json:"ts"`
	Header    *tokenHeaderJSON `json:"header"`
	Event     *eventJSON       `json:"event"`
}

// headerJSON is a 2.0 header as normalization reads it.
type headerJSON struct {
	EventID    string `json:"event_id"`
	EventType  string `json:"event_type"`
	CreateTime string `json:"create_time"`
	TenantKey  string `json:"tenant_key"`
	AppID      string `json:"app_id"`
}

// tokenHeaderJSON adds the verification token, which only authentication
// reads (normalization must not fail on its type).
type tokenHeaderJSON struct {
	headerJSON
	Token string `json:"token"`
}

// eventJSON is the union of the "event" objects normalization reads.
type eventJSON struct {
	// Schema 1.0's flat fields; its chat_id is 2.0 generic events' too.
	v1EventJSON
	// im.message.receive_v1
	Sender  senderJSON  `json:"sender"`
	Message messageJSON `json:"message"`
	// card.action.trigger (operator is a user id there, and holds
	// operator_id in some chat events: operatorJSON has both).
	Operator *operatorJSON   `json:"operator"`
	Token    string          `json:"token"`
	Action   cardActionJSON  `json:"action"`
	Context  cardContextJSON `json:"context"`
	// Other 2.0 events.
	OperatorID *userIDs `json:"operator_id"`
	UserID     *userIDs `json:"user_id"`
}

type v1EventJSON struct {
	Type          string `json:"type"`
	AppID         string `json:"app_id"`
	TenantKey     string `json:"tenant_key"`
	OpenID        string `json:"open_id"`
	UserOpenID    string `json:"user_open_id"`
	EmployeeID    string `json:"employee_id"`
	UnionID       string `json:"union_id"`
	OpenChatID    string `json:"open_chat_id"`
	ChatID        string `json:"chat_id"`
	OpenMessageID string `json:"open_message_id"`
	ChatType      string `json:"chat_type"`
	MsgType       string `json:"msg_type"`
	Text          string `json:"text"`
	TextNoAt      string `json:"text_without_at_bot"`
	ImageKey      string `json:"image_key"`
	FileKey       string `json:"file_key"`
	ParentID      string `json:"parent_id"`
	RootID        string `json:"root_id"`
}

type senderJSON struct {
	SenderID   userIDs `json:"sender_id"`
	SenderType string  `json:"sender_type"`
}

type messageJSON struct {
	MessageID   string        `json:"message_id"`
	RootID      string        `json:"root_id"`
	ParentID    string        `json:"parent_id"`
	ThreadID    string        `json:"thread_id"`
	ChatID      string        `json:"chat_id"`
	ChatType    string        `json:"chat_type"`
	MessageType string        `json:"message_type"`
	Content     string        `json:"content"`
	Mentions    []mentionJSON `json:"mentions"`
}

type mentionJSON struct {
	Key  string  `json:"key"`
	ID   userIDs `json:"id"`
	Name string  `json:"name"`
}

type operatorJSON struct {
	userIDs
	OperatorID *userIDs `json:"operator_id"`
}

type cardContextJSON struct {
	OpenMessageID string `json:"open_message_id"`
	OpenChatID    string `json:"open_chat_id"`
}

type userIDs struct {
	OpenID  string `json:"open_id"`
	UserID  string `json:"user_id"`
	UnionID string `json:"union_id"`
}

func (u *userIDs) proto(senderType string) *pluginv1.UserId {
	if u == nil || (u.OpenID == "" && u.UserID == "" && u.UnionID == "") {
		return nil
	}
	return &pluginv1.UserId{OpenId: u.OpenID, UserId: u.UserID, UnionId: u.UnionID, SenderType: senderType}
}

// decodeBody is the fast path's single decode; false sends raw to the slow
// path (which gives the same answers the multi-pass decoder always gave).
func decodeBody(raw []byte, b *bodyJSON) bool {
	// Invalid UTF-8 is malformed, but only after authentication looked at
	// the body: the slow path keeps that order.
	return utf8.Valid(raw) && decodeFast(raw, b)
}

// normalize builds the Event from a fast-path decode.
func (b *bodyJSON) normalize(appID string, raw []byte) (*pluginv1.Event, error) {
	switch {
	case b.Schema == "2.0":
		h := &headerJSON{}
		if b.Header != nil {
			h = &b.Header.headerJSON
		}
		ev, err := v2Event(appID, raw, h)
		if err != nil || b.Event == nil {
			return ev, err
		}
		return ev, fillV2(ev, b.Event)
	case b.Schema == "" && b.Type == "event_callback":
		e := &v1EventJSON{}
		if b.Event != nil {
			e = &b.Event.v1EventJSON
		}
		return v1Event(appID, raw, b.TS, b.UUID, e)
	default:
		return nil, fmt.Errorf("%w: schema %q, type %q", ErrUnknownSchema, b.Schema, b.Type)
	}
}

// normalizeSlow decodes in passes, each reading only what the previous one
// found the body needs: for bodies the union does not fit (and errors).
func normalizeSlow(appID string, raw []byte) (*pluginv1.Event, error) {
	if !utf8.Valid(raw) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrMalformed)
	}
	var head struct {
		Schema string          `json:"schema"`
		Type   string          `json:"type"`
		UUID   string          `json:"uuid"`
		Header json.RawMessage `json:"header"`
	}
	if err := unmarshal(raw, &head); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch {
	case head.Schema == "2.0":
		return normalizeV2Slow(appID, raw)
	case head.Schema == "" && head.Type == "event_callback":
		var b struct {
			TS    string      `json:"ts"`
			UUID  string      `json:"uuid"`
			Event v1EventJSON `json:"event"`
		}
		if err := unmarshal(raw, &b); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		return v1Event(appID, raw, b.TS, b.UUID, &b.Event)
	default:
		return nil, fmt.Errorf("%w: schema %q, type %q", ErrUnknownSchema, head.Schema, head.Type)
	}
}

func normalizeV2Slow(appID string, raw []byte) (*pluginv1.Event, error) {
	var b struct {
		Header headerJSON      `json:"header"`
		Event  json.RawMessage `json:"event"`
	}
	if err := unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	ev, err := v2Event(appID, raw, &b.Header)
	if err != nil || len(b.Event) == 0 || string(b.Event) == "null" {
		return ev, err
	}
	e := &eventJSON{}
	switch ev.GetEventType() {
	case TypeMessageReceive:
		var me struct {
			Sender  senderJSON  `json:"sender"`
			Message messageJSON `json:"message"`
		}
		err = unmarshal(b.Event, &me)
		e.Sender, e.Message = me.Sender, me.Message
	case TypeCardAction:
		var c struct {
			Operator *userIDs        `json:"operator"`
			Token    string          `json:"token"`
			Action   cardActionJSON  `json:"action"`
			Context  cardContextJSON `json:"context"`
		}
		err = unmarshal(b.Event, &c)
		e.Token, e.Action, e.Context = c.Token, c.Action, c.Context
		if c.Operator != nil {
			e.Operator = &operatorJSON{userIDs: *c.Operator}
		}
	default:
		var g struct {
			ChatID     string   `json:"chat_id"`
			OperatorID *userIDs `json:"operator_id"`
			Operator   *struct {
				OperatorID *userIDs `json:"operator_id"`
			} `json:"operator"`
			UserID *userIDs `json:"user_id"`
		}
		err = unmarshal(b.Event, &g)
		e.ChatID, e.OperatorID, e.UserID = g.ChatID, g.OperatorID, g.UserID
		if g.Operator != nil {
			e.Operator = &operatorJSON{OperatorID: g.Operator.OperatorID}
		}
	}
	if err != nil {
		return ev, fmt.Errorf("%w: %s event: %v", ErrMalformed, ev.GetEventType(), err)
	}
	return ev, fillV2(ev, e)
}

// v2Event checks a 2.0 header and builds the Event's common fields.
func v2Event(appID string, raw []byte, h *headerJSON) (*pluginv1.Event, error) {
	if h.EventID == "" || h.EventType == "" {
		return nil, fmt.Errorf("%w: header.event_id and header.event_type are required", ErrMalformed)
	}
	if h.AppID != "" && h.AppID != appID {
		return nil, fmt.Errorf("%w: event for app %q posted to app %q", ErrMalformed, h.AppID, appID)
	}
	return &pluginv1.Event{
		EventId: h.EventID, EventType: h.EventType, AppId: appID, TenantKey: h.TenantKey,
		Schema: "2.0", DedupKey: h.EventID, CreateTime: parseCreateTime(h.CreateTime), RawJson: raw,
	}, nil
}

// fillV2 adds the payload of a 2.0 event by its type.
func fillV2(ev *pluginv1.Event, e *eventJSON) error {
	switch ev.GetEventType() {
	case TypeMessageReceive:
		return fillMessage(ev, e)
	case TypeCardAction:
		fillCardV2(ev, e)
	default:
		fillGeneric(ev, e)
	}
	return nil
}

// fillGeneric fills chat and sender for events without a typed payload
// (bot added or removed, chat disbanded, …) from the fields Lark commonly uses.
func fillGeneric(ev *pluginv1.Event, e *eventJSON) {
	ev.ChatId = e.ChatID
	switch {
	case e.OperatorID != nil:
		ev.Sender = e.OperatorID.proto("user")
	case e.Operator != nil && e.Operator.OperatorID != nil:
		ev.Sender = e.Operator.OperatorID.proto("user")
	case e.UserID != nil:
		ev.Sender = e.UserID.proto("user")
	}
}

func fillMessage(ev *pluginv1.Event, e *eventJSON) error {
	m := &e.Message
	if m.MessageID == "" {
		return fmt.Errorf("%w: %s without message.message_id", ErrMalformed, TypeMessageReceive)
	}
	msg := &pluginv1.Message{
		MessageId: m.MessageID, RootId: m.RootID, ParentId: m.ParentID, ThreadId: m.ThreadID,
		ChatId: m.ChatID, ChatType: m.ChatType, MessageType: m.MessageType, ContentJson: m.Content,
	}
	if len(m.Mentions) > 0 {
		msg.Mentions = make([]*pluginv1.Mention, 0, len(m.Mentions))
	}
	for i := range m.Mentions {
		mn := &m.Mentions[i]
		msg.Mentions = append(msg.Mentions, &pluginv1.Mention{Key: mn.Key, Name: mn.Name, Id: mn.ID.proto("")})
	}
	if err := parseContent(msg); err != nil {
		return err
	}
	ev.ChatId = m.ChatID
	// Lark: "use message_id to deduplicate, do not rely on event_id".
	ev.DedupKey = m.MessageID
	ev.Sender = e.Sender.SenderID.proto(e.Sender.SenderType)
	ev.Payload = &pluginv1.Event_Message{Message: msg}
	return nil
}

// contentJSON is what a message's content JSON carries for the kinds typed.
type contentJSON struct {
	Text     string          `json:"text"`
	Title    string          `json:"title"`
	Content  [][]postElement `json:"content"`
	ImageKey string          `json:"image_key"`
	FileKey  string          `json:"file_key"`
}

// parseContent fills Text and ResourceKey from the content JSON string.
func parseContent(msg *pluginv1.Message) error {
	if msg.GetContentJson() == "" {
		return nil
	}
	var c contentJSON
	if !decodeContent(msg.GetContentJson(), &c) {
		c = contentJSON{}
		if err := unmarshal([]byte(msg.GetContentJson()), &c); err != nil {
			// Content of a kind we do not type (or not an object) stays in
			// content_json only; a text message must parse, though.
			if msg.GetMessageType() == "text" || msg.GetMessageType() == "post" {
				return fmt.Errorf("%w: %s content is not JSON: %v", ErrMalformed, msg.GetMessageType(), err)
			}
			return nil
		}
	}
	switch msg.GetMessageType() {
	case "text":
		msg.Text = replaceMentions(c.Text, msg.GetMentions())
	case "post":
		msg.Text = replaceMentions(postText(c.Title, c.Content), msg.GetMentions())
	case "image":
		msg.ResourceKey = c.ImageKey
	case "file", "audio", "media":
		msg.ResourceKey = c.FileKey
	}
	return nil
}

type postElement struct {
	Tag      string `json:"tag"`
	Text     string `json:"text"`
	UserID   string `json:"user_id"`
	UserName string `json:"user_name"`
	Href     string `json:"href"`
}

// postText flattens a rich-text post: title, then one line per paragraph.
func postText(title string, paras [][]postElement) string {
	var b strings.Builder
	if title != "" {
		b.WriteString(title)
	}
	for _, p := range paras {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		for _, e := range p {
			switch e.Tag {
			case "text", "a", "code_block", "md":
				b.WriteString(e.Text)
			case "at":
				if e.UserName != "" {
					b.WriteString("@" + e.UserName)
				} else {
					b.WriteString(e.UserID)
				}
			}
		}
	}
	return b.String()
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

type cardActionJSON struct {
	Value      json.RawMessage `json:"value"`
	Tag        string          `json:"tag"`
	Option     string          `json:"option"`
	Timezone   string          `json:"timezone"`
	Name       string          `json:"name"`
	FormValue  json.RawMessage `json:"form_value"`
	InputValue string          `json:"input_value"`
}

func (a cardActionJSON) proto() *pluginv1.CardAction {
	return &pluginv1.CardAction{Tag: a.Tag, ValueJson: rawString(a.Value), Option: a.Option, Name: a.Name,
		FormValueJson: rawString(a.FormValue), InputValue: a.InputValue, Timezone: a.Timezone}
}

func rawString(r json.RawMessage) string {
	if len(r) == 0 || string(r) == "null" {
		return ""
	}
	return string(r)
}

func fillCardV2(ev *pluginv1.Event, e *eventJSON) {
	ca := e.Action.proto()
	ca.OpenMessageId, ca.OpenChatId, ca.Token = e.Context.OpenMessageID, e.Context.OpenChatID, e.Token
	if e.Operator != nil {
		ca.Operator = e.Operator.userIDs.proto("user")
	}
	ev.ChatId = e.Context.OpenChatID
	ev.Sender = ca.GetOperator()
	ev.Payload = &pluginv1.Event_CardAction{CardAction: ca}
}

// NormalizeLegacyCard turns a legacy card.action.trigger_v1 callback (posted
// to the card request URL; no schema, no event id) into an Event. Its id and
// dedup key are a hash of the body, so a re-post of the same click dedups.
func NormalizeLegacyCard(appID string, raw []byte) (*pluginv1.Event, error) {
	if !utf8.Valid(raw) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrMalformed)
	}
	var c struct {
		OpenID        string         `json:"open_id"`
		UserID        string         `json:"user_id"`
		UnionID       string         `json:"union_id"`
		OpenMessageID string         `json:"open_message_id"`
		OpenChatID    string         `json:"open_chat_id"`
		TenantKey     string         `json:"tenant_key"`
		Token         string         `json:"token"`
		Action        cardActionJSON `json:"action"`
	}
	if err := unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if c.OpenMessageID == "" {
		return nil, fmt.Errorf("%w: card callback without open_message_id", ErrMalformed)
	}
	sum := sha256.Sum256(raw)
	id := "card-" + hex.EncodeToString(sum[:16])
	ca := c.Action.proto()
	ca.OpenMessageId, ca.OpenChatId, ca.Token = c.OpenMessageID, c.OpenChatID, c.Token
	ca.Operator = (&userIDs{OpenID: c.OpenID, UserID: c.UserID, UnionID: c.UnionID}).proto("user")
	return &pluginv1.Event{
		EventId: id, EventType: TypeCardActionLegacy, AppId: appID, TenantKey: c.TenantKey, Schema: "card",
		DedupKey: id, ChatId: c.OpenChatID, Sender: ca.GetOperator(), RawJson: raw,
		Payload: &pluginv1.Event_CardAction{CardAction: ca},
	}, nil
}

// v1Event builds the Event of a schema 1.0 body.
func v1Event(appID string, raw []byte, ts, uuid string, e *v1EventJSON) (*pluginv1.Event, error) {
	if uuid == "" || e.Type == "" {
		return nil, fmt.Errorf("%w: schema 1.0 needs uuid and event.type", ErrMalformed)
	}
	if e.AppID != "" && e.AppID != appID {
		return nil, fmt.Errorf("%w: event for app %q posted to app %q", ErrMalformed, e.AppID, appID)
	}
	chat := e.OpenChatID
	if chat == "" {
		chat = e.ChatID
	}
	ev := &pluginv1.Event{
		EventId: uuid, EventType: e.Type, AppId: appID, TenantKey: e.TenantKey, Schema: "1.0",
		DedupKey: uuid, ChatId: chat, RawJson: raw, CreateTime: parseV1TS(ts),
	}
	open := e.OpenID
	if open == "" {
		open = e.UserOpenID
	}
	ev.Sender = (&userIDs{OpenID: open, UserID: e.EmployeeID, UnionID: e.UnionID}).proto("user")
	if e.Type == "message" && e.OpenMessageID != "" {
		text := e.TextNoAt
		if text == "" {
			text = e.Text
		}
		msg := &pluginv1.Message{MessageId: e.OpenMessageID, ChatId: e.OpenChatID, ChatType: e.ChatType,
			MessageType: e.MsgType, Text: strings.TrimSpace(text), RootId: e.RootID, ParentId: e.ParentID}
		switch {
		case e.ImageKey != "":
			msg.ResourceKey = e.ImageKey
		case e.FileKey != "":
			msg.ResourceKey = e.FileKey
		}
		ev.Payload = &pluginv1.Event_Message{Message: msg}
	}
	return ev, nil
}

// parseV1TS reads 1.0's "ts": Unix seconds with a fraction, as a string.
func parseV1TS(s string) *timestamppb.Timestamp {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 {
		return nil
	}
	sec := int64(f)
	return timestamppb.New(time.Unix(sec, int64((f-float64(sec))*1e9)).Truncate(time.Millisecond))
}

// parseCreateTime reads 2.0's create_time: a decimal string in milliseconds
// (13 digits) or microseconds (16 digits).
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
