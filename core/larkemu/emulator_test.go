package larkemu_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/larkway/larkway/core/larkemu"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	appID  = "cli_emu"
	secret = "emu-secret"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	emu   *larkemu.Emulator
	srv   *httptest.Server
	clock *fakeClock
}

func newEnv(t *testing.T, opts larkemu.Options) *env {
	t.Helper()
	e := &env{clock: newFakeClock()}
	if opts.Now == nil {
		opts.Now = e.clock.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e.emu = larkemu.New(opts)
	e.srv = httptest.NewServer(e.emu.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

// newAppEnv serves an emulator for the test app without rate limits: the
// tests using it are about other behaviour (limits_test.go covers limits).
func newAppEnv(t *testing.T) *env {
	return newEnv(t, larkemu.Options{Apps: map[string]string{appID: secret}, Unlimited: true})
}

type response struct {
	status      int
	header      http.Header
	contentType string
	body        map[string]any
	raw         string
}

func (e *env) do(t *testing.T, method, path, auth, body string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, contentType: resp.Header.Get("Content-Type"), raw: string(raw)}
	if strings.HasPrefix(r.contentType, "application/json") {
		if err := json.Unmarshal(raw, &r.body); err != nil && !strings.HasPrefix(string(raw), "[") {
			t.Fatalf("decoding %s: %v", raw, err)
		}
	}
	return r
}

func (r response) code() int {
	c, _ := r.body["code"].(float64)
	return int(c)
}

func (r response) data() map[string]any {
	d, _ := r.body["data"].(map[string]any)
	return d
}

func (e *env) token(t *testing.T) string {
	t.Helper()
	r := e.do(t, "POST", "/open-apis/auth/v3/tenant_access_token/internal", "", fmt.Sprintf(`{"app_id":%q,"app_secret":%q}`, appID, secret))
	tok, _ := r.body["tenant_access_token"].(string)
	if r.status != 200 || r.code() != 0 || tok == "" {
		t.Fatalf("token: HTTP %d %s", r.status, r.raw)
	}
	return tok
}

func textBody(s string) string { return fmt.Sprintf(`{"text":%q}`, s) }

// sendBody builds a send request body with content encoded as a string.
func sendBody(receiveID, msgType, content, uuid string) string {
	b, _ := json.Marshal(map[string]any{"receive_id": receiveID, "msg_type": msgType, "content": content, "uuid": uuid})
	return string(b)
}

func replyBody(msgType, content, uuid string, inThread bool) string {
	b, _ := json.Marshal(map[string]any{"msg_type": msgType, "content": content, "uuid": uuid, "reply_in_thread": inThread})
	return string(b)
}

func TestTenantAccessToken(t *testing.T) {
	tests := map[string]struct {
		apps   map[string]string
		body   string
		code   int
		msg    string
		issued bool
	}{
		"known app":             {map[string]string{appID: secret}, `{"app_id":"cli_emu","app_secret":"emu-secret"}`, 0, "ok", true},
		"wrong secret":          {map[string]string{appID: secret}, `{"app_id":"cli_emu","app_secret":"nope"}`, 10014, "app secret invalid", false},
		"unknown app":           {map[string]string{appID: secret}, `{"app_id":"cli_other","app_secret":"emu-secret"}`, 10003, "invalid param", false},
		"missing secret":        {map[string]string{appID: secret}, `{"app_id":"cli_emu"}`, 10003, "invalid param", false},
		"not JSON":              {map[string]string{appID: secret}, `app_id=cli_emu`, 10003, "invalid param", false},
		"any app when no Apps":  {nil, `{"app_id":"cli_any","app_secret":"whatever"}`, 0, "ok", true},
		"empty secret, no Apps": {nil, `{"app_id":"cli_any","app_secret":""}`, 10003, "invalid param", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, larkemu.Options{Apps: tc.apps})
			r := e.do(t, "POST", "/open-apis/auth/v3/tenant_access_token/internal", "", tc.body)
			// Lark answers token failures with HTTP 200 and a body code.
			if r.status != 200 || !strings.HasPrefix(r.contentType, "application/json") {
				t.Fatalf("HTTP %d %q, want 200 JSON", r.status, r.contentType)
			}
			if r.code() != tc.code || r.body["msg"] != tc.msg {
				t.Fatalf("body %s, want code %d msg %q", r.raw, tc.code, tc.msg)
			}
			tok, _ := r.body["tenant_access_token"].(string)
			if tc.issued != strings.HasPrefix(tok, "t-") {
				t.Fatalf("token %q, issued want %v", tok, tc.issued)
			}
			if tc.issued && r.body["expire"] != float64(7200) {
				t.Fatalf("expire %v, want 7200", r.body["expire"])
			}
			if got := e.emu.TokenFetches(); got != 1 {
				t.Fatalf("TokenFetches() = %d, want 1", got)
			}
		})
	}
}

func TestTokenReissuedInLast30Minutes(t *testing.T) {
	e := newAppEnv(t)
	fetch := func() (string, float64) {
		r := e.do(t, "POST", "/open-apis/auth/v3/tenant_access_token/internal/", "", `{"app_id":"cli_emu","app_secret":"emu-secret"}`)
		tok, _ := r.body["tenant_access_token"].(string)
		exp, _ := r.body["expire"].(float64)
		return tok, exp
	}
	first, exp := fetch()
	if exp != 7200 {
		t.Fatalf("expire %v, want 7200", exp)
	}
	e.clock.Advance(90 * time.Minute) // exactly 30 min left: same token
	same, exp := fetch()
	if same != first || exp != 1800 {
		t.Fatalf("with 30 min left got %q (expire %v), want the same token with 1800", same, exp)
	}
	e.clock.Advance(time.Second) // < 30 min left: new token
	second, exp := fetch()
	if second == first || exp != 7200 {
		t.Fatalf("with < 30 min left got %q (expire %v), want a new token with 7200", second, exp)
	}
	// Both stay valid until their own expiry.
	send := func(tok string) int {
		return e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", "Bearer "+tok, sendBody("oc_1", "text", textBody("x"), "")).code()
	}
	if c1, c2 := send(first), send(second); c1 != 0 || c2 != 0 {
		t.Fatalf("old token code %d, new token code %d, want both 0", c1, c2)
	}
	e.clock.Advance(30 * time.Minute)
	if c1, c2 := send(first), send(second); c1 != 99991663 || c2 != 0 {
		t.Fatalf("after expiry: old token code %d, new token code %d, want 99991663 and 0", c1, c2)
	}
	if got := e.emu.TokenFetches(); got != 3 {
		t.Fatalf("TokenFetches() = %d, want 3", got)
	}
}

func TestShortTokenTTL(t *testing.T) {
	e := newEnv(t, larkemu.Options{Apps: map[string]string{appID: secret}, TokenTTL: 8 * time.Second})
	tok := e.token(t)
	r := e.do(t, "POST", "/open-apis/auth/v3/tenant_access_token/internal", "", `{"app_id":"cli_emu","app_secret":"emu-secret"}`)
	if r.body["tenant_access_token"] != tok || r.body["expire"] != float64(8) {
		t.Fatalf("second fetch %s, want the same token with expire 8", r.raw)
	}
	e.clock.Advance(6*time.Second + time.Millisecond) // under a quarter of the TTL left
	if r := e.do(t, "POST", "/open-apis/auth/v3/tenant_access_token/internal", "", `{"app_id":"cli_emu","app_secret":"emu-secret"}`); r.body["tenant_access_token"] == tok {
		t.Fatalf("fetch with < TTL/4 left returned the same token")
	}
}

func TestAuthentication(t *testing.T) {
	e := newAppEnv(t)
	tok := e.token(t)
	tests := map[string]struct {
		auth string
		code int
	}{
		"no header":          {"", 99991661},
		"no Bearer prefix":   {tok, 99991661},
		"empty Bearer":       {"Bearer ", 99991661},
		"unknown token":      {"Bearer t-fakefakefakefake", 99991663},
		"user token shape":   {"Bearer u-abc", 99991663},
		"valid token":        {"Bearer " + tok, 0},
		"lowercase bearer":   {"bearer " + tok, 99991661},
		"token with padding": {"Bearer  " + tok + " ", 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			for _, path := range []string{"/open-apis/im/v1/messages?receive_id_type=chat_id", "/open-apis/im/v1/messages/om_1/reply"} {
				// An invalid body too: authentication comes first.
				r := e.do(t, "POST", path, tc.auth, `{"receive_id":"oc_1","msg_type":"text","content":"{\"text\":\"x\"}"}`)
				if r.code() != tc.code {
					t.Fatalf("%s: body %s, want code %d", path, r.raw, tc.code)
				}
				if tc.code != 0 {
					logID, _ := r.body["error"].(map[string]any)["log_id"].(string)
					if r.status != 400 || logID == "" {
						t.Fatalf("%s: HTTP %d, log_id %q; want 400 with a log_id", path, r.status, logID)
					}
				}
			}
		})
	}
	e.clock.Advance(2 * time.Hour)
	if r := e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", "Bearer "+tok, sendBody("oc_1", "text", textBody("x"), "")); r.code() != 99991663 || r.status != 400 {
		t.Fatalf("expired token: HTTP %d %s, want 400 99991663", r.status, r.raw)
	}
}

func TestExpireTokens(t *testing.T) {
	e := newAppEnv(t)
	tok := e.token(t)
	e.emu.ExpireTokens()
	if r := e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", "Bearer "+tok, sendBody("oc_1", "text", textBody("x"), "")); r.code() != 99991663 {
		t.Fatalf("revoked token: %s, want 99991663", r.raw)
	}
	if fresh := e.token(t); fresh == tok {
		t.Fatalf("token endpoint returned the revoked token")
	}
}

func TestSendValidation(t *testing.T) {
	e := newAppEnv(t)
	auth := "Bearer " + e.token(t)
	big := func(n int) string { return textBody(strings.Repeat("a", n)) }
	card := func(n int) string {
		return fmt.Sprintf(`{"elements":[{"tag":"markdown","content":%q}]}`, strings.Repeat("a", n))
	}
	tests := map[string]struct {
		query string
		body  string
		code  int
	}{
		"ok chat":                     {"chat_id", sendBody("oc_1", "text", textBody("hi"), ""), 0},
		"ok open_id":                  {"open_id", sendBody("ou_1", "text", textBody("hi"), ""), 0},
		"ok email":                    {"email", sendBody("a@example.com", "text", textBody("hi"), ""), 0},
		"ok user_id":                  {"user_id", sendBody("u123", "text", textBody("hi"), ""), 0},
		"ok union_id":                 {"union_id", sendBody("on_1", "text", textBody("hi"), ""), 0},
		"ok image":                    {"chat_id", sendBody("oc_1", "image", `{"image_key":"img_v2_1"}`, ""), 0},
		"ok card":                     {"chat_id", sendBody("oc_1", "interactive", card(100), ""), 0},
		"ok post":                     {"chat_id", sendBody("oc_1", "post", `{"zh_cn":{"title":"t","content":[[{"tag":"text","text":"x"}]]}}`, ""), 0},
		"ok uuid of 50":               {"chat_id", sendBody("oc_1", "text", textBody("hi"), strings.Repeat("u", 50)), 0},
		"ok text of 100 KB":           {"chat_id", sendBody("oc_1", "text", big(100<<10), ""), 0},
		"missing receive_id_type":     {"", sendBody("oc_1", "text", textBody("hi"), ""), 99992402},
		"thread_id not sendable":      {"thread_id", sendBody("omt_1", "text", textBody("hi"), ""), 99992402},
		"missing receive_id":          {"chat_id", sendBody("", "text", textBody("hi"), ""), 99992402},
		"missing msg_type":            {"chat_id", sendBody("oc_1", "", textBody("hi"), ""), 99992402},
		"unknown msg_type":            {"chat_id", sendBody("oc_1", "markdown", textBody("hi"), ""), 99992402},
		"content as object":           {"chat_id", `{"receive_id":"oc_1","msg_type":"text","content":{"text":"hi"}}`, 99992402},
		"missing content":             {"chat_id", `{"receive_id":"oc_1","msg_type":"text"}`, 99992402},
		"body not JSON":               {"chat_id", `receive_id=oc_1`, 99992402},
		"uuid of 51":                  {"chat_id", sendBody("oc_1", "text", textBody("hi"), strings.Repeat("u", 51)), 99992402},
		"content string not JSON":     {"chat_id", sendBody("oc_1", "text", "hi", ""), 230001},
		"text content lacks text":     {"chat_id", sendBody("oc_1", "text", `{"title":"x"}`, ""), 230001},
		"image content lacks key":     {"chat_id", sendBody("oc_1", "image", `{"file_key":"x"}`, ""), 230001},
		"empty card":                  {"chat_id", sendBody("oc_1", "interactive", `{}`, ""), 230001},
		"chat_id without oc_":         {"chat_id", sendBody("ou_1", "text", textBody("hi"), ""), 230001},
		"open_id without ou_":         {"open_id", sendBody("oc_1", "text", textBody("hi"), ""), 230001},
		"text over 150 KB":            {"chat_id", sendBody("oc_1", "text", big(150<<10), ""), 230025},
		"card over 30 KB":             {"chat_id", sendBody("oc_1", "interactive", card(30<<10), ""), 230025},
		"post over 30 KB":             {"chat_id", sendBody("oc_1", "post", fmt.Sprintf(`{"zh_cn":{"title":%q}}`, strings.Repeat("a", 30<<10)), ""), 230025},
		"body over the 1 MiB cap":     {"chat_id", sendBody("oc_1", "image", fmt.Sprintf(`{"image_key":%q}`, strings.Repeat("a", 1<<20)), ""), 230025},
		"text of 31 KB is not a card": {"chat_id", sendBody("oc_1", "text", big(31<<10), ""), 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e.emu.Reset()
			path := "/open-apis/im/v1/messages"
			if tc.query != "" {
				path += "?receive_id_type=" + tc.query
			}
			r := e.do(t, "POST", path, auth, tc.body)
			if r.code() != tc.code {
				t.Fatalf("body %.300s, want code %d", r.raw, tc.code)
			}
			wantStatus, wantRecorded := 200, 1
			if tc.code != 0 {
				wantStatus, wantRecorded = 400, 0
			}
			if r.status != wantStatus {
				t.Fatalf("HTTP %d, want %d", r.status, wantStatus)
			}
			if got := len(e.emu.Messages()); got != wantRecorded {
				t.Fatalf("%d messages recorded, want %d", got, wantRecorded)
			}
		})
	}
}

func TestSendResponseShape(t *testing.T) {
	e := newAppEnv(t)
	auth := "Bearer " + e.token(t)
	content := textBody("hello")
	r := e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", auth, sendBody("oc_chat", "text", content, "u-1"))
	if r.status != 200 || r.code() != 0 || r.body["msg"] != "success" || !strings.HasPrefix(r.contentType, "application/json") {
		t.Fatalf("HTTP %d %s", r.status, r.raw)
	}
	d := r.data()
	id, _ := d["message_id"].(string)
	if !strings.HasPrefix(id, "om_") || d["chat_id"] != "oc_chat" || d["msg_type"] != "text" ||
		d["deleted"] != false || d["updated"] != false {
		t.Fatalf("data %v", d)
	}
	if ct, _ := d["create_time"].(string); ct != fmt.Sprint(e.clock.Now().UnixMilli()) {
		t.Fatalf("create_time %q, want ms string %d", ct, e.clock.Now().UnixMilli())
	}
	sender, _ := d["sender"].(map[string]any)
	if sender["id"] != appID || sender["id_type"] != "app_id" || sender["sender_type"] != "app" || sender["tenant_key"] == "" {
		t.Fatalf("sender %v", sender)
	}
	if body, _ := d["body"].(map[string]any); body["content"] != content {
		t.Fatalf("body %v, want content %q", body, content)
	}
	if _, has := d["parent_id"]; has {
		t.Fatalf("a send has parent_id: %v", d)
	}

	// A p2p send lands in a stable chat derived from the user.
	p1 := e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=open_id", auth, sendBody("ou_a", "text", content, "")).data()["chat_id"]
	p2 := e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=open_id", auth, sendBody("ou_a", "text", content, "")).data()["chat_id"]
	p3 := e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=open_id", auth, sendBody("ou_b", "text", content, "")).data()["chat_id"]
	if s, _ := p1.(string); !strings.HasPrefix(s, "oc_") || p1 != p2 || p1 == p3 {
		t.Fatalf("p2p chat IDs %v %v %v", p1, p2, p3)
	}
}

func TestReplyChains(t *testing.T) {
	e := newAppEnv(t)
	auth := "Bearer " + e.token(t)
	reply := func(parent string, inThread bool) map[string]any {
		t.Helper()
		r := e.do(t, "POST", "/open-apis/im/v1/messages/"+parent+"/reply", auth, replyBody("text", textBody("r"), "", inThread))
		if r.code() != 0 {
			t.Fatalf("reply to %s: %s", parent, r.raw)
		}
		return r.data()
	}

	// Replies to a message the emulator has not seen.
	r1 := reply("om_inbound", false)
	if r1["parent_id"] != "om_inbound" || r1["root_id"] != "om_inbound" || r1["thread_id"] != nil {
		t.Fatalf("reply to unknown message: %v", r1)
	}
	if again := reply("om_inbound", false); again["chat_id"] != r1["chat_id"] {
		t.Fatalf("replies to one message landed in chats %v and %v", r1["chat_id"], again["chat_id"])
	}
	// A reply to a reply keeps the chat and the root.
	r2 := reply(r1["message_id"].(string), false)
	if r2["parent_id"] != r1["message_id"] || r2["root_id"] != "om_inbound" || r2["chat_id"] != r1["chat_id"] {
		t.Fatalf("reply to reply: %v (first %v)", r2, r1)
	}
	// A reply to a sent message inherits its chat.
	sent := e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", auth, sendBody("oc_group", "text", textBody("q"), "")).data()
	r3 := reply(sent["message_id"].(string), true)
	if r3["chat_id"] != "oc_group" || r3["root_id"] != sent["message_id"] {
		t.Fatalf("reply to sent: %v", r3)
	}
	thread, _ := r3["thread_id"].(string)
	if !strings.HasPrefix(thread, "omt_") {
		t.Fatalf("reply in thread has thread_id %q", thread)
	}
	// Replies in that thread stay in it.
	if r4 := reply(r3["message_id"].(string), false); r4["thread_id"] != thread {
		t.Fatalf("reply in thread: %v, want thread %s", r4, thread)
	}

	// Not a message ID.
	if r := e.do(t, "POST", "/open-apis/im/v1/messages/oc_group/reply", auth, replyBody("text", textBody("r"), "", false)); r.code() != 230001 || r.status != 400 {
		t.Fatalf("reply to oc_ id: HTTP %d %s, want 400 230001", r.status, r.raw)
	}
	// Oversized reply.
	if r := e.do(t, "POST", "/open-apis/im/v1/messages/om_x/reply", auth, replyBody("interactive", fmt.Sprintf(`{"elements":[{"tag":"markdown","content":%q}]}`, strings.Repeat("a", 30<<10)), "", false)); r.code() != 230025 {
		t.Fatalf("oversized card reply: %s, want 230025", r.raw)
	}
}

func TestUUIDIdempotency(t *testing.T) {
	e := newAppEnv(t)
	auth := "Bearer " + e.token(t)
	send := func(uuid, text string) string {
		t.Helper()
		r := e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", auth, sendBody("oc_1", "text", textBody(text), uuid))
		if r.code() != 0 {
			t.Fatalf("send: %s", r.raw)
		}
		return r.data()["message_id"].(string)
	}
	reply := func(uuid string) string {
		t.Helper()
		r := e.do(t, "POST", "/open-apis/im/v1/messages/om_p/reply", auth, replyBody("text", textBody("r"), uuid, false))
		if r.code() != 0 {
			t.Fatalf("reply: %s", r.raw)
		}
		return r.data()["message_id"].(string)
	}

	a := send("u-1", "first")
	if b := send("u-1", "second"); b != a {
		t.Fatalf("same uuid gave %s then %s", a, b)
	}
	if got := len(e.emu.Messages()); got != 1 {
		t.Fatalf("%d messages recorded, want 1", got)
	}
	if e.emu.Messages()[0].Content != textBody("first") {
		t.Fatalf("recorded %+v, want the first request's content", e.emu.Messages()[0])
	}
	if send("u-2", "other") == a || send("", "no uuid") == send("", "no uuid") {
		t.Fatalf("distinct or missing uuids were deduplicated")
	}
	r := reply("u-3")
	if reply("u-3") != r {
		t.Fatalf("reply uuid not deduplicated")
	}

	e.clock.Advance(time.Hour - time.Second)
	if send("u-1", "third") != a {
		t.Fatalf("uuid forgotten before an hour")
	}
	e.clock.Advance(time.Second)
	if send("u-1", "fourth") == a {
		t.Fatalf("uuid still deduplicating after an hour")
	}
	if got := len(e.emu.Messages()); got != 6 {
		t.Fatalf("%d messages recorded, want 6", got)
	}

	// uuids are per app.
	e2 := newEnv(t, larkemu.Options{})
	tok := func(app string) string {
		r := e2.do(t, "POST", "/open-apis/auth/v3/tenant_access_token/internal", "", fmt.Sprintf(`{"app_id":%q,"app_secret":"s"}`, app))
		return "Bearer " + r.body["tenant_access_token"].(string)
	}
	x := e2.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", tok("cli_a"), sendBody("oc_1", "text", textBody("x"), "shared")).data()
	y := e2.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", tok("cli_b"), sendBody("oc_1", "text", textBody("x"), "shared")).data()
	if x["message_id"] == y["message_id"] || y["sender"].(map[string]any)["id"] != "cli_b" {
		t.Fatalf("uuid shared across apps: %v %v", x, y)
	}
}

func TestInspectionRoutes(t *testing.T) {
	e := newAppEnv(t)
	auth := "Bearer " + e.token(t)
	e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", auth, sendBody("oc_1", "text", textBody("a"), ""))
	e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", auth, sendBody("oc_2", "text", textBody("b"), ""))
	e.do(t, "POST", "/open-apis/im/v1/messages/om_p/reply", auth, replyBody("text", textBody("c"), "", false))

	list := func(query string) []larkemu.Message {
		t.Helper()
		r := e.do(t, "GET", "/_emu/messages"+query, "", "")
		var ms []larkemu.Message
		if err := json.Unmarshal([]byte(r.raw), &ms); err != nil || r.status != 200 {
			t.Fatalf("GET /_emu/messages%s: HTTP %d %s (%v)", query, r.status, r.raw, err)
		}
		return ms
	}
	tests := map[string]struct {
		query string
		want  []string // contents
	}{
		"all":            {"", []string{textBody("a"), textBody("b"), textBody("c")}},
		"by chat":        {"?chat_id=oc_2", []string{textBody("b")}},
		"by parent":      {"?parent_id=om_p", []string{textBody("c")}},
		"by root":        {"?root_id=om_p", []string{textBody("c")}},
		"no match":       {"?chat_id=oc_none", nil},
		"chat and other": {"?chat_id=oc_1&parent_id=om_p", nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ms := list(tc.query)
			var got []string
			for _, m := range ms {
				got = append(got, m.Content)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("contents %v, want %v", got, tc.want)
			}
		})
	}
	if r := e.do(t, "GET", "/_emu/messages?chat_id=oc_none", "", ""); strings.TrimSpace(r.raw) != "[]" {
		t.Fatalf("empty list encoded as %q, want []", r.raw)
	}
	if r := e.do(t, "POST", "/_emu/reset", "", ""); r.status != 200 {
		t.Fatalf("reset: HTTP %d", r.status)
	}
	if ms := list(""); len(ms) != 0 || e.emu.TokenFetches() != 0 {
		t.Fatalf("after reset: %d messages, %d fetches", len(ms), e.emu.TokenFetches())
	}
	// Tokens survive Reset.
	if r := e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", auth, sendBody("oc_1", "text", textBody("a"), "")); r.code() != 0 {
		t.Fatalf("token rejected after Reset: %s", r.raw)
	}
}

// Routes the emulator does not serve answer 404 with a JSON body and a
// non-zero code, so SDKs report a Lark error rather than a decoding failure
// (TestOfficialSDKErrors checks that end to end).
func TestUnknownRoutesAre404JSON(t *testing.T) {
	e := newAppEnv(t)
	auth := "Bearer " + e.token(t)
	wss := larkemu.NewWSServer(larkemu.WSOptions{})
	ws := httptest.NewServer(wss)
	t.Cleanup(func() {
		wss.Close()
		ws.Close()
	})
	tests := map[string]struct {
		srv                *httptest.Server
		method, path, auth string
	}{
		"unknown path":            {e.srv, "GET", "/open-apis/nonexistent/v1/foo", ""},
		"unknown path with token": {e.srv, "GET", "/open-apis/im/v1/chats", auth},
		"token with GET":          {e.srv, "GET", "/open-apis/auth/v3/tenant_access_token/internal", ""},
		"messages with GET":       {e.srv, "GET", "/open-apis/im/v1/messages", auth},
		"reply with trailing /":   {e.srv, "POST", "/open-apis/im/v1/messages/om_1/reply/", auth},
		"reset with GET":          {e.srv, "GET", "/_emu/reset", ""},
		"an empty segment":        {e.srv, "GET", "/open-apis/im/v1/messages//reactions", auth},
		"a dot segment":           {e.srv, "POST", "/open-apis/im/v1/messages/om_1/../om_1/reply", auth},
		"long connection server":  {ws, "GET", "/open-apis/im/v1/chats/oc_1", ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tc.method, tc.srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := tc.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Code *int   `json:"code"`
				Msg  string `json:"msg"`
			}
			err = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != 404 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || err != nil ||
				body.Code == nil || *body.Code != 404 || body.Msg != "404 page not found" {
				t.Fatalf("HTTP %d %q, code %v msg %q (%v); want 404 JSON {code 404}", resp.StatusCode, resp.Header.Get("Content-Type"), body.Code, body.Msg, err)
			}
		})
	}
	for _, c := range e.emu.Calls() {
		if c.API != larkemu.APITenantToken {
			t.Errorf("unknown route recorded as a call: %+v", c)
		}
	}
}

func TestConcurrentSends(t *testing.T) {
	e := newAppEnv(t)
	auth := "Bearer " + e.token(t)
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// Half share a uuid with another request.
			req, _ := http.NewRequestWithContext(t.Context(), "POST", e.srv.URL+"/open-apis/im/v1/messages?receive_id_type=chat_id",
				bytes.NewReader([]byte(sendBody("oc_1", "text", textBody("x"), fmt.Sprint("u-", i/2)))))
			req.Header.Set("Authorization", auth)
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	wg.Wait()
	if got := len(e.emu.Messages()); got != n/2 {
		t.Fatalf("%d messages recorded, want %d", got, n/2)
	}
}

func TestRunServesUntilCanceled(t *testing.T) {
	emu := larkemu.New(larkemu.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- emu.Serve(ctx, ln) }()

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Post("http://"+ln.Addr().String()+"/open-apis/auth/v3/tenant_access_token/internal", "application/json",
		strings.NewReader(`{"app_id":"cli_a","app_secret":"s"}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || emu.TokenFetches() != 1 {
		t.Fatalf("HTTP %d, %d fetches", resp.StatusCode, emu.TokenFetches())
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve() = %v, want nil after cancel", err)
	}
	if _, err := client.Get("http://" + ln.Addr().String() + "/_emu/messages"); err == nil {
		t.Fatalf("still serving after Serve returned")
	}
}

func TestRunReportsListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = larkemu.New(larkemu.Options{}).Run(t.Context(), ln.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "listening on") {
		t.Fatalf("Run on a busy address = %v, want a listen error", err)
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Fatalf("Run error %v does not wrap *net.OpError", err)
	}
}
