package envelope

// Benchmark-only: the envelope decode (Normalize) with encoding/json beside
// goccy/go-json and bytedance/sonic, on the golden payloads. normalizeWith
// is a copy of Normalize with the JSON decoder as a parameter;
// TestJSONLibsGolden checks that the copy with encoding/json equals
// Normalize on every golden input (so the copy cannot drift unnoticed), and
// reports which libraries reproduce the golden files. Nothing here changes
// how the core decodes.

import (
	"bytes"
	stdjson "encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/bytedance/sonic"
	gojson "github.com/goccy/go-json"
	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

type unmarshalFunc func([]byte, any) error

var jsonLibs = []struct {
	name string
	u    unmarshalFunc
}{
	{"encoding_json", stdjson.Unmarshal},
	{"goccy_go-json", gojson.Unmarshal},
	{"sonic_default", sonic.ConfigDefault.Unmarshal},
	{"sonic_std", sonic.ConfigStd.Unmarshal},
}

func normalizeWith(u unmarshalFunc, appID string, raw []byte) (*pluginv1.Event, error) {
	if !utf8.Valid(raw) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrMalformed)
	}
	var head struct {
		Schema string             `json:"schema"`
		Type   string             `json:"type"`
		UUID   string             `json:"uuid"`
		Header stdjson.RawMessage `json:"header"`
	}
	if err := u(raw, &head); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch {
	case head.Schema == "2.0":
		return normalizeV2With(u, appID, raw)
	case head.Schema == "" && head.Type == "event_callback":
		return normalizeV1With(u, appID, raw)
	default:
		return nil, fmt.Errorf("%w: schema %q, type %q", ErrUnknownSchema, head.Schema, head.Type)
	}
}

func normalizeV2With(u unmarshalFunc, appID string, raw []byte) (*pluginv1.Event, error) {
	var b struct {
		Header struct {
			EventID    string `json:"event_id"`
			EventType  string `json:"event_type"`
			CreateTime string `json:"create_time"`
			TenantKey  string `json:"tenant_key"`
			AppID      string `json:"app_id"`
		} `json:"header"`
		Event stdjson.RawMessage `json:"event"`
	}
	if err := u(raw, &b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	h := b.Header
	if h.EventID == "" || h.EventType == "" {
		return nil, fmt.Errorf("%w: header.event_id and header.event_type are required", ErrMalformed)
	}
	if h.AppID != "" && h.AppID != appID {
		return nil, fmt.Errorf("%w: event for app %q posted to app %q", ErrMalformed, h.AppID, appID)
	}
	ev := &pluginv1.Event{
		EventId: h.EventID, EventType: h.EventType, AppId: appID, TenantKey: h.TenantKey,
		Schema: "2.0", DedupKey: h.EventID, CreateTime: parseCreateTime(h.CreateTime), RawJson: raw,
	}
	if len(b.Event) == 0 || string(b.Event) == "null" {
		return ev, nil
	}
	switch h.EventType {
	case TypeMessageReceive:
		return ev, normalizeMessageWith(u, ev, b.Event)
	case TypeCardAction:
		return ev, normalizeCardV2With(u, ev, b.Event)
	default:
		return ev, normalizeGenericWith(u, ev, b.Event)
	}
}

func normalizeGenericWith(u unmarshalFunc, ev *pluginv1.Event, raw []byte) error {
	var g struct {
		ChatID     string   `json:"chat_id"`
		OperatorID *userIDs `json:"operator_id"`
		Operator   *struct {
			OperatorID *userIDs `json:"operator_id"`
		} `json:"operator"`
		UserID *userIDs `json:"user_id"`
	}
	if err := u(raw, &g); err != nil {
		return fmt.Errorf("%w: %s event: %v", ErrMalformed, ev.GetEventType(), err)
	}
	ev.ChatId = g.ChatID
	switch {
	case g.OperatorID != nil:
		ev.Sender = g.OperatorID.proto("user")
	case g.Operator != nil && g.Operator.OperatorID != nil:
		ev.Sender = g.Operator.OperatorID.proto("user")
	case g.UserID != nil:
		ev.Sender = g.UserID.proto("user")
	}
	return nil
}

func normalizeMessageWith(u unmarshalFunc, ev *pluginv1.Event, raw []byte) error {
	var me struct {
		Sender struct {
			SenderID   userIDs `json:"sender_id"`
			SenderType string  `json:"sender_type"`
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
	if err := u(raw, &me); err != nil {
		return fmt.Errorf("%w: %s event: %v", ErrMalformed, TypeMessageReceive, err)
	}
	m := me.Message
	if m.MessageID == "" {
		return fmt.Errorf("%w: %s without message.message_id", ErrMalformed, TypeMessageReceive)
	}
	msg := &pluginv1.Message{
		MessageId: m.MessageID, RootId: m.RootID, ParentId: m.ParentID, ThreadId: m.ThreadID,
		ChatId: m.ChatID, ChatType: m.ChatType, MessageType: m.MessageType, ContentJson: m.Content,
	}
	for _, mn := range m.Mentions {
		msg.Mentions = append(msg.Mentions, &pluginv1.Mention{Key: mn.Key, Name: mn.Name, Id: mn.ID.proto("")})
	}
	if err := parseContentWith(u, msg); err != nil {
		return err
	}
	ev.ChatId = m.ChatID
	ev.DedupKey = m.MessageID
	ev.Sender = me.Sender.SenderID.proto(me.Sender.SenderType)
	ev.Payload = &pluginv1.Event_Message{Message: msg}
	return nil
}

func parseContentWith(u unmarshalFunc, msg *pluginv1.Message) error {
	if msg.GetContentJson() == "" {
		return nil
	}
	var c struct {
		Text     string          `json:"text"`
		Title    string          `json:"title"`
		Content  [][]postElement `json:"content"`
		ImageKey string          `json:"image_key"`
		FileKey  string          `json:"file_key"`
	}
	if err := u([]byte(msg.GetContentJson()), &c); err != nil {
		if msg.GetMessageType() == "text" || msg.GetMessageType() == "post" {
			return fmt.Errorf("%w: %s content is not JSON: %v", ErrMalformed, msg.GetMessageType(), err)
		}
		return nil
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

func normalizeCardV2With(u unmarshalFunc, ev *pluginv1.Event, raw []byte) error {
	var c struct {
		Operator *userIDs       `json:"operator"`
		Token    string         `json:"token"`
		Action   cardActionJSON `json:"action"`
		Context  struct {
			OpenMessageID string `json:"open_message_id"`
			OpenChatID    string `json:"open_chat_id"`
		} `json:"context"`
	}
	if err := u(raw, &c); err != nil {
		return fmt.Errorf("%w: %s event: %v", ErrMalformed, TypeCardAction, err)
	}
	ca := c.Action.proto()
	ca.OpenMessageId, ca.OpenChatId, ca.Token = c.Context.OpenMessageID, c.Context.OpenChatID, c.Token
	ca.Operator = c.Operator.proto("user")
	ev.ChatId = c.Context.OpenChatID
	ev.Sender = ca.GetOperator()
	ev.Payload = &pluginv1.Event_CardAction{CardAction: ca}
	return nil
}

func normalizeV1With(u unmarshalFunc, appID string, raw []byte) (*pluginv1.Event, error) {
	var b struct {
		TS    string `json:"ts"`
		UUID  string `json:"uuid"`
		Event struct {
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
		} `json:"event"`
	}
	if err := u(raw, &b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	e := b.Event
	if b.UUID == "" || e.Type == "" {
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
		EventId: b.UUID, EventType: e.Type, AppId: appID, TenantKey: e.TenantKey, Schema: "1.0",
		DedupKey: b.UUID, ChatId: chat, RawJson: raw, CreateTime: parseV1TS(b.TS),
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

// goldenInputs are the golden schema 1.0/2.0 inputs (legacy cards have
// their own normalizer and are not part of the envelope decode compared).
func goldenInputs(tb testing.TB) map[string][]byte {
	tb.Helper()
	paths, _ := filepath.Glob("testdata/*.json")
	out := map[string][]byte{}
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".json")
		if strings.HasSuffix(name, ".golden") || strings.HasPrefix(name, "card_action_legacy") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		out[name] = b
	}
	return out
}

// TestJSONLibsGolden: the copy with encoding/json is Normalize; each
// library's output is compared with the golden files.
func TestJSONLibsGolden(t *testing.T) {
	for name, raw := range goldenInputs(t) {
		want, err := Normalize("cli_golden", raw)
		if err != nil {
			t.Fatal(err)
		}
		golden, err := os.ReadFile("testdata/" + name + ".golden.json")
		if err != nil {
			t.Fatal(err)
		}
		for _, lib := range jsonLibs {
			got, err := normalizeWith(lib.u, "cli_golden", raw)
			switch {
			case err != nil:
				t.Logf("%s: %s fails: %v", lib.name, name, err)
			case lib.name == "encoding_json" && !proto.Equal(got, want):
				t.Errorf("%s: the benchmark's copy of Normalize has drifted from normalize.go", name)
			case !bytes.Equal(canonical(t, got), golden):
				t.Logf("%s: %s differs from the golden file", lib.name, name)
			}
		}
	}
	// Malformed inputs must still be refused by each library.
	for _, lib := range jsonLibs {
		for _, bad := range []string{`{`, `[]`, `{"schema":"2.0","header":[]}`, `{"schema":"2.0","header":{"event_id":"e","event_type":"im.message.receive_v1"},"event":{"message":"x"}}`} {
			if _, err := normalizeWith(lib.u, "cli_golden", []byte(bad)); err == nil {
				t.Logf("%s accepts malformed %s", lib.name, bad)
			}
		}
	}
}

// BenchmarkNormalizeJSON decodes every golden 1.0/2.0 input per op.
func BenchmarkNormalizeJSON(b *testing.B) {
	inputs := goldenInputs(b)
	for _, lib := range jsonLibs {
		b.Run(lib.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, raw := range inputs {
					if _, err := normalizeWith(lib.u, "cli_golden", raw); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
