// Package playground is a chat window on the Lark emulator for plugin
// authors: type as a Lark user in a group or a p2p chat (text, /commands,
// @mentions of the bot) and see what the bot answers — text, replies in
// threads, reactions and interactive cards rendered from their Lark card
// JSON. A click on a card button (or a select) sends a real card callback
// through the core, signed as Lark signs it; the card's update, whether
// the callback's answer or a later PATCH or delayed update, replaces the
// card in place.
//
// It is served beside the emulator (`larkway emulator --playground-core`)
// under /playground and needs no Lark tenant:
//
//	GET  /playground                 the chat window (?chat=ID)
//	GET  /playground/messages?chat=  the conversation (refreshed by htmx)
//	POST /playground/send            chat, text[, mention=on]: a user's message
//	POST /playground/click           chat, message_id, value[, option]: a card click
//
// Events go to the core's webhook as Lark posts them: schema 2.0 JSON,
// encrypted and signed when the app has an Encrypt Key
// (docs/lark-webhook-security.md).
package playground

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/larkway/larkway/core/internal/htmx"
	"github.com/larkway/larkway/core/internal/ingest"
	"github.com/larkway/larkway/core/larkemu"
)

//go:embed web
var webFS embed.FS

// Chat is a conversation the playground offers.
type Chat struct {
	ID   string
	Name string
	// Type is "group" or "p2p" (the event's chat_type).
	Type string
}

// DefaultChats are a group chat and a p2p chat with the bot.
var DefaultChats = []Chat{
	{ID: "oc_playground_group", Name: "Group chat", Type: "group"},
	{ID: "oc_playground_p2p", Name: "Direct message", Type: "p2p"},
}

// Config says where the core is and which app the playground speaks as.
type Config struct {
	// EventURL is the core's event webhook (apps[].event_path).
	EventURL string
	// AppID, VerificationToken and EncryptKey are the app's, as in the
	// core's config; EncryptKey empty posts plain events.
	AppID, VerificationToken, EncryptKey string
	// BotOpenID and BotName are what an @mention of the bot carries
	// (defaults "ou_playground_bot", "bot").
	BotOpenID, BotName string
	// UserOpenID and UserName are the user the playground types as
	// (defaults "ou_playground_user", "You").
	UserOpenID, UserName string
	// Chats are offered (default DefaultChats).
	Chats []Chat
	// ConsoleURL, if set, is linked from the page.
	ConsoleURL string
	// Client posts to the core (default: a client with a 10 s timeout).
	Client *http.Client
}

// Playground is the playground's HTTP handler.
type Playground struct {
	cfg    Config
	emu    *larkemu.Emulator
	logger *slog.Logger
	tmpl   *template.Template
	mux    *http.ServeMux

	mu       sync.Mutex
	sent     []userMessage          // the user's messages, oldest first
	notes    map[string][]note      // by card message ID: toasts and errors of clicks
	answered map[string]cardVersion // by card message ID: the card a callback answered with
	system   []note                 // failures not tied to a message
}

type userMessage struct {
	ID, Chat, Text string
	Mention        bool
	Time           time.Time
}

type note struct {
	Chat, Text, Kind string
	Time             time.Time
}

type cardVersion struct {
	JSON string
	Time time.Time
}

// New returns the playground on emu; it does no I/O.
func New(cfg Config, emu *larkemu.Emulator, logger *slog.Logger) (*Playground, error) {
	if cfg.EventURL == "" || cfg.AppID == "" {
		return nil, errors.New("playground: the core's event URL and the app id are required")
	}
	if cfg.BotOpenID == "" {
		cfg.BotOpenID = "ou_playground_bot"
	}
	if cfg.BotName == "" {
		cfg.BotName = "bot"
	}
	if cfg.UserOpenID == "" {
		cfg.UserOpenID = "ou_playground_user"
	}
	if cfg.UserName == "" {
		cfg.UserName = "You"
	}
	if len(cfg.Chats) == 0 {
		cfg.Chats = DefaultChats
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t, err := template.New("page.html").Funcs(template.FuncMap{
		"clock": func(t time.Time) string { return t.Format("15:04:05") },
		"cardData": func(chat, messageID string, c *cardView) map[string]any {
			return map[string]any{"Chat": chat, "MessageID": messageID, "Card": c}
		},
		"elsData": func(chat, messageID string, els []element) map[string]any {
			return map[string]any{"Chat": chat, "MessageID": messageID, "Elements": els}
		},
	}).ParseFS(webFS, "web/*.html")
	if err != nil {
		return nil, fmt.Errorf("parsing playground templates: %w", err)
	}
	p := &Playground{cfg: cfg, emu: emu, logger: logger.With("component", "playground"), tmpl: t, mux: http.NewServeMux(),
		notes: map[string][]note{}, answered: map[string]cardVersion{}}
	p.mux.HandleFunc("GET /playground", p.page)
	p.mux.HandleFunc("GET /playground/messages", p.messages)
	p.mux.HandleFunc("POST /playground/send", p.send)
	p.mux.HandleFunc("POST /playground/click", p.click)
	p.mux.Handle("GET /playground/static/"+htmx.File, htmx.Handler())
	web, _ := fs.Sub(webFS, "web") // a constant, present directory
	p.mux.Handle("GET /playground/static/", http.StripPrefix("/playground/", http.FileServerFS(web)))
	return p, nil
}

// Handler serves the playground under /playground and everything else with
// next (the emulator).
func (p *Playground) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/playground" || strings.HasPrefix(r.URL.Path, "/playground/") {
			w.Header().Set("X-Frame-Options", "DENY")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			p.mux.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (p *Playground) chat(id string) Chat {
	for _, c := range p.cfg.Chats {
		if c.ID == id {
			return c
		}
	}
	return p.cfg.Chats[0]
}

func (p *Playground) render(w http.ResponseWriter, name string, data any) {
	var b bytes.Buffer
	if err := p.tmpl.ExecuteTemplate(&b, name, data); err != nil {
		p.logger.Error("rendering the playground", "template", name, "err", err)
		http.Error(w, "rendering failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b.Bytes())
}

func (p *Playground) page(w http.ResponseWriter, r *http.Request) {
	c := p.chat(r.URL.Query().Get("chat"))
	tl := p.timeline(c.ID)
	p.render(w, "page.html", map[string]any{"Chat": c, "Chats": p.cfg.Chats, "Timeline": tl, "V": version(tl),
		"Console": p.cfg.ConsoleURL, "User": p.cfg.UserName, "Bot": p.cfg.BotName})
}

// version identifies a timeline's content, so that a poll finding nothing
// new swaps nothing (204) and keyboard focus stays where it is.
func version(tl []entry) string {
	b, _ := json.Marshal(tl)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// messages answers the conversation; a request outside htmx (a form posted
// without JavaScript) is sent back to the chat's page.
func (p *Playground) messages(w http.ResponseWriter, r *http.Request) {
	c := p.chat(r.FormValue("chat"))
	if r.Header.Get("HX-Request") != "true" {
		http.Redirect(w, r, chatURL(c.ID), http.StatusSeeOther)
		return
	}
	tl := p.timeline(c.ID)
	v := version(tl)
	if r.Method == http.MethodGet && r.URL.Query().Get("v") == v {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	p.render(w, "timeline", map[string]any{"Chat": c, "Timeline": tl, "V": v})
}

func newID(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return prefix + hex.EncodeToString(b)
}

// send posts the user's message to the core as im.message.receive_v1.
func (p *Playground) send(w http.ResponseWriter, r *http.Request) {
	c := p.chat(r.PostFormValue("chat"))
	text := strings.TrimSpace(r.PostFormValue("text"))
	if text == "" {
		p.messages(w, r)
		return
	}
	mention := r.PostFormValue("mention") == "on" || strings.Contains(text, "@"+p.cfg.BotName)
	m := userMessage{ID: newID("om_pg_"), Chat: c.ID, Text: text, Mention: mention, Time: time.Now()}
	// Lark puts a mention key in the text and describes it in mentions.
	wire := text
	var mentions []any
	if mention {
		if strings.Contains(wire, "@"+p.cfg.BotName) {
			wire = strings.Replace(wire, "@"+p.cfg.BotName, "@_user_1", 1)
		} else {
			wire = "@_user_1 " + wire
		}
		mentions = []any{map[string]any{"key": "@_user_1", "name": p.cfg.BotName, "tenant_key": "playground",
			"id": map[string]string{"open_id": p.cfg.BotOpenID}}}
	}
	content, _ := json.Marshal(map[string]string{"text": wire})
	p.emu.RegisterInboundMessage(larkemu.InboundMessage{MessageID: m.ID, ChatID: c.ID, SenderOpenID: p.cfg.UserOpenID,
		MsgType: "text", Content: string(content), CreateTime: m.Time})
	p.mu.Lock()
	p.sent = append(p.sent, m)
	p.mu.Unlock()
	ms := strconv.FormatInt(m.Time.UnixMilli(), 10)
	ev := map[string]any{
		"schema": "2.0",
		"header": p.header("im.message.receive_v1", ms),
		"event": map[string]any{
			"sender": map[string]any{"sender_id": map[string]string{"open_id": p.cfg.UserOpenID}, "sender_type": "user", "tenant_key": "playground"},
			"message": map[string]any{"message_id": m.ID, "create_time": ms, "update_time": ms, "chat_id": c.ID, "chat_type": c.Type,
				"message_type": "text", "content": string(content), "mentions": mentions},
		},
	}
	if _, err := p.post(r.Context(), ev); err != nil {
		p.addSystem(c.ID, "The core did not take the message: "+err.Error())
	}
	p.messages(w, r)
}

func (p *Playground) header(eventType, ms string) map[string]string {
	return map[string]string{"event_id": newID("ev_pg_"), "token": p.cfg.VerificationToken, "create_time": ms,
		"event_type": eventType, "tenant_key": "playground", "app_id": p.cfg.AppID}
}

func (p *Playground) addSystem(chat, text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.system = append(p.system, note{Chat: chat, Text: text, Kind: "error", Time: time.Now()})
}

// post seals ev as Lark does for the app and posts it to the core,
// returning the answer's body.
func (p *Playground) post(ctx context.Context, ev any) ([]byte, error) {
	plain, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	body, h, err := seal(p.cfg.EncryptKey, plain)
	if err != nil {
		return nil, fmt.Errorf("sealing the event: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.cfg.EventURL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header = h
	resp, err := p.cfg.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("posting to %s: %w", p.cfg.EventURL, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return rb, fmt.Errorf("the core answered %s: %s", resp.Status, bytes.TrimSpace(rb))
	}
	return rb, nil
}

// click sends card.action.trigger for a click on card message_id, with a
// fresh delayed-update token from the emulator, as Lark does.
func (p *Playground) click(w http.ResponseWriter, r *http.Request) {
	c := p.chat(r.PostFormValue("chat"))
	msgID := r.PostFormValue("message_id")
	value := json.RawMessage(r.PostFormValue("value"))
	if !json.Valid(value) {
		value = json.RawMessage(`{}`)
	}
	act := map[string]any{"value": value, "tag": "button"}
	if opt := r.PostFormValue("option"); opt != "" || r.PostFormValue("tag") == "select_static" {
		act["tag"], act["option"] = "select_static", opt
	}
	ms := strconv.FormatInt(time.Now().UnixMilli(), 10)
	ev := map[string]any{
		"schema": "2.0",
		"header": p.header("card.action.trigger", ms),
		"event": map[string]any{
			"operator": map[string]string{"open_id": p.cfg.UserOpenID},
			"token":    p.emu.IssueCardToken(msgID),
			"action":   act,
			"host":     "im_message",
			"context":  map[string]string{"open_message_id": msgID, "open_chat_id": c.ID},
		},
	}
	body, err := p.post(r.Context(), ev)
	now := time.Now()
	p.mu.Lock()
	if err != nil {
		p.notes[msgID] = append(p.notes[msgID], note{Chat: c.ID, Text: "The click failed: " + err.Error(), Kind: "error", Time: now})
	} else {
		toast, card := callbackAnswer(body)
		if toast.Content != "" {
			p.notes[msgID] = append(p.notes[msgID], note{Chat: c.ID, Text: toast.Content, Kind: toast.Type, Time: now})
		}
		if card != "" {
			p.answered[msgID] = cardVersion{JSON: card, Time: now}
		}
	}
	p.mu.Unlock()
	p.messages(w, r)
}

type toast struct{ Type, Content string }

// callbackAnswer reads a card callback's answer: its toast and the card it
// replaces the clicked one with, if any ({"type":"raw","data":{...}} or
// the card itself).
func callbackAnswer(body []byte) (toast, string) {
	var a struct {
		Toast struct {
			Type    string `json:"type"`
			Content string `json:"content"`
		} `json:"toast"`
		Card json.RawMessage `json:"card"`
	}
	if json.Unmarshal(body, &a) != nil {
		return toast{}, ""
	}
	t := toast{Type: a.Toast.Type, Content: a.Toast.Content}
	if len(a.Card) == 0 || string(a.Card) == "null" {
		return t, ""
	}
	var wrapped struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if json.Unmarshal(a.Card, &wrapped) == nil && wrapped.Type == "raw" && len(wrapped.Data) > 0 {
		return t, string(wrapped.Data)
	}
	return t, string(a.Card)
}

// entry is one line of the conversation.
type entry struct {
	ID   string
	Time time.Time
	// From is "user", "bot" or "system".
	From string
	Text string
	// Mention marks a user's message that @mentions the bot.
	Mention bool
	// ReplyTo quotes the replied-to message; Thread marks a reply in a
	// thread.
	ReplyTo   string
	Thread    bool
	Card      *cardView
	Reactions []string
	Notes     []note
	MsgType   string
	Edited    bool
}

// timeline merges the user's messages, the bot's and the notes of chat,
// oldest first.
func (p *Playground) timeline(chat string) []entry {
	msgs := p.emu.Messages()
	updates := p.emu.Updates()
	reactions := p.emu.Reactions()
	p.mu.Lock()
	sent := slices.Clone(p.sent)
	notes := map[string][]note{}
	for k, v := range p.notes {
		notes[k] = slices.Clone(v)
	}
	answered := map[string]cardVersion{}
	for k, v := range p.answered {
		answered[k] = v
	}
	system := slices.Clone(p.system)
	p.mu.Unlock()

	texts := map[string]string{}
	var out []entry
	for _, m := range sent {
		texts[m.ID] = m.Text
		if m.Chat == chat {
			out = append(out, entry{ID: m.ID, Time: m.Time, From: "user", Text: m.Text, Mention: m.Mention})
		}
	}
	for _, m := range msgs {
		texts[m.MessageID] = summary(m.MsgType, m.Content)
	}
	for _, m := range msgs {
		if m.ChatID != chat || m.Deleted {
			continue
		}
		e := entry{ID: m.MessageID, Time: m.CreateTime, From: "bot", MsgType: m.MsgType, Thread: m.ThreadID != "" || m.ReplyInThread,
			Notes: notes[m.MessageID], Edited: m.Edits > 0}
		if m.ParentID != "" {
			e.ReplyTo = texts[m.ParentID]
			if e.ReplyTo == "" {
				e.ReplyTo = m.ParentID
			}
		}
		if m.MsgType == "interactive" {
			cur, at := m.Content, m.CreateTime
			for _, u := range updates {
				if u.MessageID == m.MessageID && !u.Time.Before(at) {
					cur, at = u.Card, u.Time
				}
			}
			if a, ok := answered[m.MessageID]; ok && !a.Time.Before(at) {
				cur = a.JSON
			}
			e.Card = renderCard(cur)
		} else {
			e.Text = summary(m.MsgType, m.Content)
		}
		out = append(out, e)
	}
	for _, n := range system {
		if n.Chat == chat {
			out = append(out, entry{Time: n.Time, From: "system", Text: n.Text})
		}
	}
	for i := range out {
		for _, rc := range reactions {
			if rc.MessageID == out[i].ID && !rc.Removed {
				out[i].Reactions = append(out[i].Reactions, rc.EmojiType)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b entry) int { return a.Time.Compare(b.Time) })
	return out
}

// summary is a message's text: a text message's text, a post's text
// runs, else its type.
func summary(msgType, content string) string {
	switch msgType {
	case "text":
		var c struct {
			Text string `json:"text"`
		}
		if json.Unmarshal([]byte(content), &c) == nil {
			return c.Text
		}
	case "post":
		return postText(content)
	case "interactive":
		return "(card)"
	}
	return "(" + msgType + " message)"
}

// postText flattens a post's first language: its title and text runs.
func postText(content string) string {
	var byLang map[string]struct {
		Title   string             `json:"title"`
		Content [][]map[string]any `json:"content"`
	}
	if json.Unmarshal([]byte(content), &byLang) != nil {
		return "(post message)"
	}
	var b strings.Builder
	for _, p := range byLang {
		if p.Title != "" {
			b.WriteString(p.Title + "\n")
		}
		for _, line := range p.Content {
			for _, run := range line {
				if s, ok := run["text"].(string); ok {
					b.WriteString(s)
				}
			}
			b.WriteString("\n")
		}
		break
	}
	return strings.TrimSpace(b.String())
}

// chatURL is the page of chat.
func chatURL(chat string) string { return "/playground?chat=" + url.QueryEscape(chat) }

// seal encrypts plain under key with a fresh IV and signs it with a fresh
// timestamp and nonce: the body and headers Lark posts for an app with an
// Encrypt Key (docs/lark-webhook-security.md). Without a key the event goes
// plain, as Lark sends it then.
func seal(key string, plain []byte) ([]byte, http.Header, error) {
	h := http.Header{"Content-Type": {"application/json"}}
	if key == "" {
		return plain, h, nil
	}
	iv := make([]byte, 16)
	_, _ = rand.Read(iv) // never fails (crypto/rand)
	enc, err := ingest.Encrypt(plain, key, iv)
	if err != nil {
		return nil, nil, err
	}
	body, _ := json.Marshal(map[string]string{"encrypt": enc})
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	nonce := newID("n")
	// Canonical keys set directly, as Lark's SDK reads them.
	h[ingest.HeaderTimestamp] = []string{ts}
	h[ingest.HeaderNonce] = []string{nonce}
	h[ingest.HeaderSignature] = []string{ingest.EventSignature(ts, nonce, key, body)}
	return body, h, nil
}
