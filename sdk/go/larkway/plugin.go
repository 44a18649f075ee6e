// Package larkway is the Go SDK for larkway handler plugins.
//
// A plugin is a Plugin with handlers registered by event type, command or
// card action, and a one-line main:
//
//	func main() {
//		p := larkway.New("echo", "1.0.0", larkway.WithActions(larkway.ActionReply))
//		p.OnMessage(func(ctx context.Context, ev *larkway.Event) ([]larkway.Action, error) {
//			return []larkway.Action{larkway.ReplyText(ev.Message.Text)}, nil
//		})
//		p.Main()
//	}
//
// The SDK owns go-plugin's handshake, the health service, the Handle stream,
// shutdown and logging; the handler's context carries the delivery deadline.
package larkway

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/types/known/durationpb"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// HandlerFunc handles one event and returns the actions to perform.
type HandlerFunc func(ctx context.Context, ev *Event) ([]Action, error)

// CommandFunc handles a message command such as "/deploy prod --force".
type CommandFunc func(ctx context.Context, ev *Event, cmd Command) ([]Action, error)

// CardFunc handles a card action. The returned CardResponse (may be nil) is
// shown to the user who clicked if it arrives within the core's budget.
type CardFunc func(ctx context.Context, ev *Event) (*CardResponse, []Action, error)

// CardResponse is what Lark shows after a card click: a toast, a new card, or both.
type CardResponse struct {
	// ToastType is "info", "success", "warning" or "error".
	ToastType string
	Toast     string
	// CardJSON replaces the clicked card when non-empty.
	CardJSON string
}

// Option configures a Plugin.
type Option func(*Plugin)

// WithActions declares the action kinds the plugin may return; the core
// refuses any other.
func WithActions(kinds ...ActionKind) Option {
	return func(p *Plugin) { p.actions = append(p.actions, kinds...) }
}

// WithMaxInFlight sets how many deliveries the plugin takes at once.
func WithMaxInFlight(n int) Option { return func(p *Plugin) { p.maxInFlight = n } }

// WithDescription sets the description shown by the admin API.
func WithDescription(s string) Option { return func(p *Plugin) { p.description = s } }

// WithFallbackReply sets the text the core replies with when one of this
// plugin's deliveries is dead-lettered.
func WithFallbackReply(s string) Option { return func(p *Plugin) { p.fallback = s } }

// WithLogger replaces the default JSON logger on stderr.
func WithLogger(l *slog.Logger) Option { return func(p *Plugin) { p.logger = l } }

// WithChats limits every subscription to these chat ids.
func WithChats(chatIDs ...string) Option {
	return func(p *Plugin) { p.chats = append(p.chats, chatIDs...) }
}

// Plugin is a handler plugin: its identity, manifest and handlers. Register
// handlers before Main or Serve; they may then be called concurrently.
type Plugin struct {
	name, version, description, fallback string
	actions                              []ActionKind
	maxInFlight                          int
	chats                                []string
	logger                               *slog.Logger

	mu        sync.RWMutex
	byType    map[string]HandlerFunc
	commands  map[string]CommandFunc
	cmdOrder  []string
	onMessage HandlerFunc
	onCard    CardFunc
	patterns  []string

	state *State
	// resultBatches: the core said it accepts ResultBatch (Describe).
	resultBatches atomic.Bool
}

// New creates a plugin named name (lowercase letters, digits, dashes).
func New(name, version string, opts ...Option) *Plugin {
	p := &Plugin{name: name, version: version, byType: map[string]HandlerFunc{}, commands: map[string]CommandFunc{}, state: &State{}}
	for _, o := range opts {
		o(p)
	}
	if p.logger == nil {
		p.logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	return p
}

// Logger is the plugin's logger (JSON on stderr; the core re-logs each line
// under the plugin's name and version).
func (p *Plugin) Logger() *slog.Logger { return p.logger }

// OnEvent handles every event of one type.
func (p *Plugin) OnEvent(eventType string, h HandlerFunc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.byType[eventType] = h
}

// OnMessage handles received messages that no command handler took.
func (p *Plugin) OnMessage(h HandlerFunc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onMessage = h
}

// OnMessageMatching handles only messages whose text matches one of the RE2
// patterns (the core filters before delivering).
func (p *Plugin) OnMessageMatching(h HandlerFunc, patterns ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onMessage = h
	p.patterns = append(p.patterns, patterns...)
}

// OnCommand handles a message command, e.g. "/deploy". The name must start
// with "/".
func (p *Plugin) OnCommand(name string, h CommandFunc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := p.commands[name]; !dup {
		p.cmdOrder = append(p.cmdOrder, name)
	}
	p.commands[name] = h
}

// OnCardAction handles clicks on cards this plugin sent.
func (p *Plugin) OnCardAction(h CardFunc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onCard = h
}

// Commands lists registered command names in registration order.
func (p *Plugin) Commands() []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return append([]string(nil), p.cmdOrder...)
}

// manifest derives the manifest from the registered handlers.
func (p *Plugin) manifest() *pluginv1.Manifest {
	p.mu.RLock()
	defer p.mu.RUnlock()
	m := &pluginv1.Manifest{Name: p.name, Version: p.version, Description: p.description,
		MaxInFlight: uint32(max(p.maxInFlight, 0)), FallbackReplyText: p.fallback, AcceptsDeliveryBatches: true}
	for _, k := range p.actions {
		m.AllowedActions = append(m.AllowedActions, k.proto())
	}
	sub := func(s *pluginv1.Subscription) {
		s.ChatIds = p.chats
		m.Subscriptions = append(m.Subscriptions, s)
	}
	if p.onMessage != nil {
		sub(&pluginv1.Subscription{EventTypes: []string{EventMessageReceive}, TextPatterns: p.patterns})
	} else if len(p.cmdOrder) > 0 {
		sub(&pluginv1.Subscription{EventTypes: []string{EventMessageReceive}, Commands: append([]string(nil), p.cmdOrder...)})
	}
	if p.onCard != nil {
		sub(&pluginv1.Subscription{EventTypes: []string{EventCardAction, EventCardActionLegacy}})
	}
	for t := range p.byType {
		sub(&pluginv1.Subscription{EventTypes: []string{t}})
	}
	return m
}

// handle routes one event to its handler and classes the outcome.
func (p *Plugin) handle(ctx context.Context, ev *Event) *pluginv1.Result {
	actions, card, err := p.route(ctx, ev)
	res := &pluginv1.Result{Outcome: pluginv1.Outcome_OUTCOME_DONE}
	switch {
	case err != nil && IsPermanent(err):
		res.Outcome, res.Error = pluginv1.Outcome_OUTCOME_FAILED, err.Error()
		return res
	case err != nil:
		res.Outcome, res.Error = pluginv1.Outcome_OUTCOME_RETRY, err.Error()
		if d := retryDelay(err); d > 0 {
			res.RetryAfter = durationpb.New(d)
		}
		return res
	}
	for _, a := range actions {
		if a.a != nil {
			res.Actions = append(res.Actions, a.a)
		}
	}
	if card != nil {
		res.CardResponse = card.proto()
	}
	return res
}

func (p *Plugin) route(ctx context.Context, ev *Event) (actions []Action, card *CardResponse, err error) {
	defer func() {
		// A panicking handler must not take the process (and every other
		// in-flight delivery) down with it: report it as a retryable error.
		if r := recover(); r != nil {
			p.logger.Error("handler panicked", "event_id", ev.ID, "panic", fmt.Sprint(r))
			actions, card, err = nil, nil, fmt.Errorf("handler panicked: %v", r)
		}
	}()
	p.mu.RLock()
	byType, onMessage, onCard := p.byType[ev.Type], p.onMessage, p.onCard
	commands := p.commands
	p.mu.RUnlock()

	if ev.CardAction != nil && onCard != nil {
		card, actions, err = onCard(ctx, ev)
		return actions, card, err
	}
	if ev.Message != nil {
		if cmd, ok := ParseCommand(ev.Message.Text); ok {
			p.mu.RLock()
			h := commands[cmd.Name]
			p.mu.RUnlock()
			if h != nil {
				actions, err = h(ctx, ev, cmd)
				return actions, nil, err
			}
		}
		if onMessage != nil {
			actions, err = onMessage(ctx, ev)
			return actions, nil, err
		}
	}
	if byType != nil {
		actions, err = byType(ctx, ev)
		return actions, nil, err
	}
	// Delivered but nothing handles it (e.g. an unknown command while only
	// commands are registered): done, no actions.
	return nil, nil, nil
}

func (c *CardResponse) proto() *pluginv1.CardResponse {
	out := &pluginv1.CardResponse{CardJson: c.CardJSON}
	if c.Toast != "" {
		t := pluginv1.ToastType_TOAST_TYPE_INFO
		switch strings.ToLower(c.ToastType) {
		case "success":
			t = pluginv1.ToastType_TOAST_TYPE_SUCCESS
		case "warning":
			t = pluginv1.ToastType_TOAST_TYPE_WARNING
		case "error":
			t = pluginv1.ToastType_TOAST_TYPE_ERROR
		}
		out.Toast = &pluginv1.Toast{Type: t, Content: c.Toast}
	}
	return out
}
