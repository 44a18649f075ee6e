// Package larkwaytest tests larkway plugins in-process: build an event, run
// it through the plugin's handlers, and assert on the actions — no process,
// no network, no core.
//
//	out := larkwaytest.Run(t, newPlugin(), larkwaytest.Message("/roll 2d6"))
//	larkwaytest.RequireReplyText(t, out, "🎲")
package larkwaytest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/larkway/larkway/sdk/go/larkway"
)

// EventOption adjusts a sample event.
type EventOption func(*larkway.Event)

// InChat sets the chat id.
func InChat(chatID string) EventOption {
	return func(e *larkway.Event) {
		e.ChatID = chatID
		if e.Message != nil {
			e.Message.ChatID = chatID
		}
		if e.CardAction != nil {
			e.CardAction.ChatID = chatID
		}
	}
}

// From sets the sender's open id.
func From(openID string) EventOption {
	return func(e *larkway.Event) {
		e.Sender.OpenID = openID
		if e.CardAction != nil {
			e.CardAction.Operator.OpenID = openID
		}
	}
}

// Attempt sets the delivery attempt.
func Attempt(n int) EventOption { return func(e *larkway.Event) { e.Attempt = n } }

// WithMention adds an @-mention of name (with open id) to a message.
func WithMention(name, openID string) EventOption {
	return func(e *larkway.Event) {
		if e.Message == nil {
			return
		}
		key := fmt.Sprintf("@_user_%d", len(e.Message.Mentions)+1)
		e.Message.Mentions = append(e.Message.Mentions, larkway.Mention{Key: key, Name: name, ID: larkway.User{OpenID: openID}})
	}
}

var seq atomic.Int64

func nextID(prefix string) string { return fmt.Sprintf("%s_test_%d", prefix, seq.Add(1)) }

// Message builds an im.message.receive_v1 text message event as the core
// delivers it (text already has mentions replaced by names).
func Message(text string, opts ...EventOption) *larkway.Event {
	content, _ := json.Marshal(map[string]string{"text": text})
	id := nextID("om")
	e := &larkway.Event{
		ID: nextID("ev"), Type: larkway.EventMessageReceive, AppID: "cli_test", TenantKey: "tenant_test", Schema: "2.0",
		DedupKey: id, ChatID: "oc_test_chat", CreateTime: time.Unix(1_700_000_000, 0), Attempt: 1,
		Sender: larkway.User{OpenID: "ou_test_user", SenderType: "user"},
		Message: &larkway.Message{ID: id, ChatID: "oc_test_chat", ChatType: "group", Type: "text",
			ContentJSON: string(content), Text: text},
	}
	for _, o := range opts {
		o(e)
	}
	return e
}

// CardAction builds a card.action.trigger event for a click on a button
// carrying value (marshalled to JSON).
func CardAction(messageID string, value any, opts ...EventOption) *larkway.Event {
	v, _ := json.Marshal(value)
	e := &larkway.Event{
		ID: nextID("ev"), Type: larkway.EventCardAction, AppID: "cli_test", TenantKey: "tenant_test", Schema: "2.0",
		ChatID: "oc_test_chat", CreateTime: time.Unix(1_700_000_000, 0), Attempt: 1,
		Sender: larkway.User{OpenID: "ou_test_user", SenderType: "user"},
		CardAction: &larkway.CardAction{MessageID: messageID, ChatID: "oc_test_chat", Token: "c-test-token",
			Tag: "button", ValueJSON: string(v), Operator: larkway.User{OpenID: "ou_test_user"}, AwaitsResponse: true},
	}
	e.DedupKey = e.ID
	for _, o := range opts {
		o(e)
	}
	return e
}

// Run handles ev with p under a 10 s deadline and returns the outcome.
func Run(t testing.TB, p *larkway.Plugin, ev *larkway.Event) larkway.Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.HandleEvent(ctx, ev)
}

// Summaries lists the outcome's actions in plain form.
func Summaries(out larkway.Outcome) []larkway.ActionSummary {
	s := make([]larkway.ActionSummary, 0, len(out.Actions))
	for _, a := range out.Actions {
		s = append(s, a.Summary())
	}
	return s
}

// Texts returns the text of every text reply or send, in order.
func Texts(out larkway.Outcome) []string {
	var texts []string
	for _, s := range Summaries(out) {
		if s.MsgType != "text" {
			continue
		}
		var c struct {
			Text string `json:"text"`
		}
		if json.Unmarshal([]byte(s.ContentJSON), &c) == nil {
			texts = append(texts, c.Text)
		}
	}
	return texts
}

// RequireDone fails unless the outcome is done.
func RequireDone(t testing.TB, out larkway.Outcome) {
	t.Helper()
	if out.Status != larkway.StatusDone {
		t.Fatalf("outcome %s (%s), want done", out.Status, out.Err)
	}
}

// RequireReplyText fails unless the outcome is done with exactly one
// action, a text reply containing substr.
func RequireReplyText(t testing.TB, out larkway.Outcome, substr string) {
	t.Helper()
	RequireDone(t, out)
	s := Summaries(out)
	if len(s) != 1 || s[0].Kind != "reply" || s[0].MsgType != "text" {
		t.Fatalf("actions %+v, want one text reply", s)
	}
	if texts := Texts(out); len(texts) != 1 || !strings.Contains(texts[0], substr) {
		t.Fatalf("reply %q does not contain %q", texts, substr)
	}
}

// MemoryState is an in-memory state store for tests: NewPlugin(...).
// SetStateBackend(larkwaytest.NewMemoryState()).
type MemoryState struct {
	mu   sync.Mutex
	rev  uint64
	data map[string]larkway.Entry
}

// NewMemoryState returns an empty store.
func NewMemoryState() *MemoryState { return &MemoryState{data: map[string]larkway.Entry{}} }

// Get implements larkway.StateBackend.
func (m *MemoryState) Get(_ context.Context, key string) (larkway.Entry, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.data[key]
	return e, ok, nil
}

// Set implements larkway.StateBackend.
func (m *MemoryState) Set(_ context.Context, key string, value []byte, _ time.Duration) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rev++
	m.data[key] = larkway.Entry{Value: append([]byte(nil), value...), Revision: m.rev}
	return m.rev, nil
}

// CompareAndSwap implements larkway.StateBackend.
func (m *MemoryState) CompareAndSwap(_ context.Context, key string, expected uint64, value []byte, _ time.Duration) (bool, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.data[key].Revision
	if cur != expected {
		return false, cur, nil
	}
	m.rev++
	m.data[key] = larkway.Entry{Value: append([]byte(nil), value...), Revision: m.rev}
	return true, m.rev, nil
}

// Delete implements larkway.StateBackend.
func (m *MemoryState) Delete(_ context.Context, key string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.data[key]
	delete(m.data, key)
	return ok, nil
}
