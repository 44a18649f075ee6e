package playground_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/larkway/larkway/core/larkemu"
	"github.com/larkway/larkway/core/larkemu/playground"
)

// fakeCore records the events posted to it and answers card callbacks
// with a toast and a replacement card.
type fakeCore struct {
	mu     sync.Mutex
	events []map[string]any
}

func (f *fakeCore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var ev map[string]any
	_ = json.NewDecoder(r.Body).Decode(&ev)
	f.mu.Lock()
	f.events = append(f.events, ev)
	f.mu.Unlock()
	if h, _ := ev["header"].(map[string]any); h["event_type"] == "card.action.trigger" {
		_, _ = io.WriteString(w, `{"toast":{"type":"success","content":"Clicked."},"card":{"type":"raw","data":{"header":{"title":{"tag":"plain_text","content":"Updated card"}},"elements":[]}}}`)
		return
	}
	_, _ = io.WriteString(w, `{"msg":"success"}`)
}

func (f *fakeCore) last(t *testing.T) map[string]any {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.events) == 0 {
		t.Fatal("the core got no event")
	}
	return f.events[len(f.events)-1]
}

// get walks a decoded JSON document by keys and indexes.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

type env struct {
	core   *fakeCore
	emu    *larkemu.Emulator
	url    string
	client *http.Client
}

func start(t *testing.T) *env {
	t.Helper()
	core := &fakeCore{}
	coreSrv := httptest.NewServer(core)
	t.Cleanup(coreSrv.Close)
	e := &env{core: core, client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	e.emu = larkemu.New(larkemu.Options{Unlimited: true, Wrap: func(em *larkemu.Emulator, h http.Handler) http.Handler {
		p, err := playground.New(playground.Config{EventURL: coreSrv.URL + "/lark/events", AppID: "cli_pg", VerificationToken: "vt"}, em, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p.Handler(h)
	}})
	srv := httptest.NewServer(e.emu.Handler())
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

// post posts a form as htmx does and returns the status and body.
func (e *env) post(t *testing.T, path string, form url.Values, htmx bool) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if htmx {
		req.Header.Set("HX-Request", "true")
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// bot calls the emulated OpenAPI as the bot would.
func (e *env) bot(t *testing.T, method, path, body string) map[string]any {
	t.Helper()
	resp, err := http.Post(e.url+"/open-apis/auth/v3/tenant_access_token/internal", "application/json",
		strings.NewReader(`{"app_id":"cli_pg","app_secret":"s"}`))
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		Token string `json:"tenant_access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if code, _ := out["code"].(float64); code != 0 {
		t.Fatalf("%s %s: %v", method, path, out)
	}
	return out
}

// A user's message reaches the core as Lark sends it (p2p, an @mention of
// the bot as a mention key); the bot's thread reply, its reaction on the
// user's message and its card show in the conversation; a click sends a
// card callback with a delayed-update token, and the card the callback
// answers with replaces the card, with the toast beside it.
func TestPlaygroundConversation(t *testing.T) {
	e := start(t)
	code, _ := e.post(t, "/playground/send", url.Values{"chat": {"oc_playground_p2p"}, "text": {"hi"}, "mention": {"on"}}, true)
	if code != http.StatusOK {
		t.Fatalf("send: %d", code)
	}
	ev := e.core.last(t)
	var content struct{ Text string }
	_ = json.Unmarshal([]byte(get(ev, "event", "message", "content").(string)), &content)
	if get(ev, "header", "event_type") != "im.message.receive_v1" || get(ev, "header", "token") != "vt" || get(ev, "header", "app_id") != "cli_pg" ||
		get(ev, "event", "message", "chat_type") != "p2p" || get(ev, "event", "message", "chat_id") != "oc_playground_p2p" ||
		content.Text != "@_user_1 hi" || get(ev, "event", "message", "mentions", 0, "id", "open_id") != "ou_playground_bot" ||
		get(ev, "event", "sender", "sender_id", "open_id") != "ou_playground_user" {
		t.Fatalf("posted event %v", ev)
	}
	userMsg := get(ev, "event", "message", "message_id").(string)

	// The bot answers in a thread, reacts, and sends a card with a button.
	e.bot(t, http.MethodPost, "/open-apis/im/v1/messages/"+userMsg+"/reply", `{"msg_type":"text","content":"{\"text\":\"threaded answer\"}","reply_in_thread":true}`)
	e.bot(t, http.MethodPost, "/open-apis/im/v1/messages/"+userMsg+"/reactions", `{"reaction_type":{"emoji_type":"THUMBSUP"}}`)
	card := `{"header":{"title":{"tag":"plain_text","content":"Pick one"}},"elements":[{"tag":"action","actions":[{"tag":"button","text":{"tag":"plain_text","content":"Yes"},"value":{"choice":"yes"}}]}]}`
	cb, _ := json.Marshal(map[string]string{"receive_id": "oc_playground_p2p", "msg_type": "interactive", "content": card})
	sent := e.bot(t, http.MethodPost, "/open-apis/im/v1/messages?receive_id_type=chat_id", string(cb))
	cardID := get(sent, "data", "message_id").(string)

	_, page := e.get(t, "/playground/messages?chat=oc_playground_p2p")
	for _, want := range []string{"threaded answer", `class="thread">in thread`, `class="reaction">THUMBSUP`, `card-header">Pick one<`,
		`<span class="at">@bot</span> hi`, `>Yes</button>`} {
		if !strings.Contains(page, want) {
			t.Errorf("conversation lacks %q:\n%s", want, page)
		}
	}
	// Nothing changed: a poll with the page's version swaps nothing.
	v := regexp.MustCompile(`v=([0-9a-f]+)`).FindStringSubmatch(page)
	if v == nil {
		t.Fatalf("no version in %s", page)
	}
	if code, _ := e.get(t, "/playground/messages?chat=oc_playground_p2p&v="+v[1]); code != http.StatusNoContent {
		t.Fatalf("unchanged poll: %d, want 204", code)
	}

	code, page = e.post(t, "/playground/click", url.Values{"chat": {"oc_playground_p2p"}, "message_id": {cardID}, "value": {`{"choice":"yes"}`}}, true)
	ev = e.core.last(t)
	if code != http.StatusOK || get(ev, "header", "event_type") != "card.action.trigger" || get(ev, "event", "action", "value", "choice") != "yes" ||
		get(ev, "event", "context", "open_message_id") != cardID || get(ev, "event", "operator", "open_id") != "ou_playground_user" ||
		!strings.HasPrefix(get(ev, "event", "token").(string), "c-") {
		t.Fatalf("click: %d, posted %v", code, ev)
	}
	if !strings.Contains(page, `card-header">Updated card<`) || strings.Contains(page, "Pick one") || !strings.Contains(page, "Clicked.") {
		t.Fatalf("after the click the conversation shows:\n%s", page)
	}

	// A later update of the card (a PATCH) replaces the callback's answer.
	e.bot(t, http.MethodPatch, "/open-apis/im/v1/messages/"+cardID, `{"content":"{\"header\":{\"title\":{\"tag\":\"plain_text\",\"content\":\"Patched\"}},\"elements\":[]}"}`)
	if _, page = e.get(t, "/playground/messages?chat=oc_playground_p2p"); !strings.Contains(page, `card-header">Patched<`) {
		t.Fatalf("after the PATCH the conversation shows:\n%s", page)
	}

	// Without htmx (no JavaScript) a form goes back to the chat's page.
	if code, _ := e.post(t, "/playground/send", url.Values{"chat": {"oc_playground_group"}, "text": {"plain form"}}, false); code != http.StatusSeeOther {
		t.Fatalf("form post without htmx: %d, want 303", code)
	}
	if _, page := e.get(t, "/playground?chat=oc_playground_group"); !strings.Contains(page, "plain form") || strings.Contains(page, "threaded answer") {
		t.Fatalf("group chat page:\n%s", page)
	}
}

func (e *env) get(t *testing.T, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.url+path, nil)
	req.Header.Set("HX-Request", "true")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
