package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/envelope"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Item is one line of the live tail: an event taken in, or an action a
// plugin asked for.
type Item struct {
	Time time.Time `json:"time"`
	// Kind is "event" or "action".
	Kind   string `json:"kind"`
	App    string `json:"app,omitempty"`
	Chat   string `json:"chat,omitempty"`
	Plugin string `json:"plugin,omitempty"`
	// Type is the event type, or the action's kind (reply, send, ...).
	Type string `json:"type"`
	// Detail is the message text, the clicked card value, or an action's
	// outcome.
	Detail string `json:"detail,omitempty"`
}

// Filter selects tail items; empty fields match anything. Plugin matches
// actions only (an event is not yet any plugin's).
type Filter struct{ App, Chat, Plugin string }

func (f Filter) match(it Item) bool {
	return (f.App == "" || f.App == it.App) && (f.Chat == "" || f.Chat == it.Chat) &&
		(f.Plugin == "" || f.Plugin == it.Plugin)
}

// recentItems is how many items a new tail starts with.
const recentItems = 200

// Hub collects events and actions for the live tail and counts them for
// the overview's rates. It decodes nothing while nobody watches: the
// counts are all the hot path pays for then.
type Hub struct {
	events, actions atomic.Uint64
	watchers        atomic.Int32

	mu     sync.Mutex
	subs   map[chan Item]Filter
	recent []Item
	now    func() time.Time
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{subs: map[chan Item]Filter{}, now: time.Now} }

// Counts are the events and actions seen so far.
func (h *Hub) Counts() (events, actions uint64) { return h.events.Load(), h.actions.Load() }

func (h *Hub) publish(it Item) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.recent) == recentItems {
		copy(h.recent, h.recent[1:])
		h.recent = h.recent[:recentItems-1]
	}
	h.recent = append(h.recent, it)
	for ch, f := range h.subs {
		if f.match(it) {
			select {
			case ch <- it:
			default: // a slow watcher misses lines rather than slowing the core
			}
		}
	}
}

// subscribe returns the recent matching items and a channel of new ones.
func (h *Hub) subscribe(f Filter) ([]Item, chan Item) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var past []Item
	for _, it := range h.recent {
		if f.match(it) {
			past = append(past, it)
		}
	}
	ch := make(chan Item, 256)
	h.subs[ch] = f
	h.watchers.Add(1)
	return past, ch
}

func (h *Hub) unsubscribe(ch chan Item) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		h.watchers.Add(-1)
	}
}

// tapPublisher is ingest's publisher, seen by the hub.
type tapPublisher struct {
	bus.Publisher
	h *Hub
}

// Publisher wraps the publisher ingest writes events to.
func (h *Hub) Publisher(p bus.Publisher) bus.Publisher { return &tapPublisher{Publisher: p, h: h} }

// Room passes on the bus's bound (bus.Admitter), so ingest's admission
// control sees through the tap: without it, ingest would find no bound and
// verify every request of a peak only to be refused at publish.
func (t *tapPublisher) Room() <-chan struct{} {
	if a, ok := t.Publisher.(bus.Admitter); ok {
		return a.Room()
	}
	return nil
}

func (t *tapPublisher) Publish(ctx context.Context, topic string, msg bus.Message) error {
	err := t.Publisher.Publish(ctx, topic, msg)
	if err != nil {
		return err
	}
	t.h.events.Add(1)
	if t.h.watchers.Load() == 0 {
		return nil
	}
	head, derr := envelope.DecodeHead(msg.Payload)
	if derr != nil {
		return nil
	}
	it := Item{Time: t.h.now(), Kind: "event", App: strings.TrimPrefix(topic, envelope.Topic("")), Chat: head.ChatID,
		Type: head.EventType, Detail: head.Text}
	if head.Card {
		it.Detail = head.CardValueJSON
	}
	t.h.publish(it)
	return nil
}

// Executor is the dispatcher's action executor (dispatch.Executor).
type Executor interface {
	Execute(ctx context.Context, req action.Request) ([]*pluginv1.RefusedAction, error)
	SendFallback(ctx context.Context, plugin string, ev *pluginv1.Event, text string) error
}

type tapExecutor struct {
	Executor
	h *Hub
}

// Executor wraps the executor the dispatcher hands actions to.
func (h *Hub) Executor(e Executor) Executor { return &tapExecutor{Executor: e, h: h} }

func (t *tapExecutor) Execute(ctx context.Context, req action.Request) ([]*pluginv1.RefusedAction, error) {
	refused, err := t.Executor.Execute(ctx, req)
	t.h.actions.Add(uint64(len(req.Actions)))
	if t.h.watchers.Load() == 0 || len(req.Actions) == 0 {
		return refused, err
	}
	outcome := "done"
	switch {
	case err != nil:
		outcome = "error: " + err.Error()
	case len(refused) > 0:
		outcome = fmt.Sprintf("%d refused", len(refused))
	}
	var app, chat string
	if req.Event != nil {
		app, chat = req.Event.GetAppId(), req.Event.GetChatId()
	}
	for _, a := range req.Actions {
		kind := "action"
		if od := a.ProtoReflect().Descriptor().Oneofs().ByName("kind"); od != nil {
			if fd := a.ProtoReflect().WhichOneof(od); fd != nil {
				kind = string(fd.Name())
			}
		}
		t.h.publish(Item{Time: t.h.now(), Kind: "action", App: app, Chat: chat, Plugin: req.Plugin, Type: kind, Detail: outcome})
	}
	return refused, err
}

// SendFallback is a reply the core sends itself when a plugin fails an
// event for good (the plugin's fallback_reply_text): an action too.
func (t *tapExecutor) SendFallback(ctx context.Context, plugin string, ev *pluginv1.Event, text string) error {
	err := t.Executor.SendFallback(ctx, plugin, ev, text)
	t.h.actions.Add(1)
	if t.h.watchers.Load() > 0 {
		outcome := "done: " + text
		if err != nil {
			outcome = "error: " + err.Error()
		}
		t.h.publish(Item{Time: t.h.now(), Kind: "action", App: ev.GetAppId(), Chat: ev.GetChatId(), Plugin: plugin,
			Type: "fallback_reply", Detail: outcome})
	}
	return err
}

// rateSampler turns the hub's counts into rates between two overview
// renders, at least a second apart.
type rateSampler struct {
	at              time.Time
	events, actions uint64
	last            Rates
}

// Rates are events and actions per second, per this replica.
type Rates struct{ Events, Actions float64 }

func (c *Console) sampleRates() Rates {
	ev, ac := c.deps.Tail.Counts()
	now := c.deps.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.rates
	if dt := now.Sub(s.at).Seconds(); !s.at.IsZero() && dt >= 1 {
		s.last = Rates{Events: float64(ev-s.events) / dt, Actions: float64(ac-s.actions) / dt}
	}
	if s.at.IsZero() || now.Sub(s.at) >= time.Second {
		s.at, s.events, s.actions = now, ev, ac
	}
	return s.last
}

func filterOf(r *http.Request) Filter {
	q := r.URL.Query()
	return Filter{App: strings.TrimSpace(q.Get("app")), Chat: strings.TrimSpace(q.Get("chat")), Plugin: strings.TrimSpace(q.Get("plugin"))}
}

func (c *Console) tailPage(w http.ResponseWriter, r *http.Request) {
	f := filterOf(r)
	q := url.Values{}
	for k, v := range map[string]string{"app": f.App, "chat": f.Chat, "plugin": f.Plugin} {
		if v != "" {
			q.Set(k, v)
		}
	}
	c.render(w, r, http.StatusOK, "tail", map[string]any{"Filter": f, "On": c.deps.Tail != nil, "Query": q.Encode()})
}

// tailStream serves the tail as server-sent events, one JSON Item per
// event, starting with the recent matching items.
func (c *Console) tailStream(w http.ResponseWriter, r *http.Request) {
	if c.deps.Tail == nil {
		c.fail(w, r, http.StatusNotImplemented, "The live tail is off on this replica.")
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		c.fail(w, r, http.StatusInternalServerError, "Streaming is not supported here.")
		return
	}
	past, ch := c.deps.Tail.subscribe(filterOf(r))
	defer c.deps.Tail.unsubscribe(ch)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	write := func(it Item) bool {
		b, _ := json.Marshal(it)
		_, err := fmt.Fprintf(w, "data: %s\n\n", b)
		return err == nil
	}
	for _, it := range past {
		if !write(it) {
			return
		}
	}
	// A comment line opens the stream at once, even with nothing to say.
	_, _ = fmt.Fprint(w, ": tail open\n\n")
	fl.Flush()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-c.closed:
			return
		case <-keepalive.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			fl.Flush()
		case it := <-ch:
			if !write(it) {
				return
			}
			fl.Flush()
		}
	}
}
