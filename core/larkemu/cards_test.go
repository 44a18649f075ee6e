package larkemu_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/larkemu"
)

const cardV1 = `{"config":{"update_multi":true},"elements":[{"tag":"markdown","content":"v1"}]}`

func (e *env) sendCard(t *testing.T, auth string) string {
	t.Helper()
	r := e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", auth, sendBody("oc_cards", "interactive", cardV1, ""))
	if r.code() != 0 {
		t.Fatalf("sending a card: %s", r.raw)
	}
	return r.data()["message_id"].(string)
}

func patchBody(card string) string {
	b, _ := json.Marshal(map[string]string{"content": card})
	return string(b)
}

// otherApp returns an Authorization header for a second app of e.
func otherApp(t *testing.T, e *env) string {
	t.Helper()
	r := e.do(t, "POST", "/open-apis/auth/v3/tenant_access_token/internal", "", `{"app_id":"cli_other","app_secret":"other"}`)
	return "Bearer " + r.body["tenant_access_token"].(string)
}

func newTwoAppEnv(t *testing.T) *env {
	return newEnv(t, larkemu.Options{Apps: map[string]string{appID: secret, "cli_other": "other"}, Unlimited: true})
}

func TestPatchCard(t *testing.T) {
	e := newTwoAppEnv(t)
	auth := "Bearer " + e.token(t)
	card := e.sendCard(t, auth)
	text := e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", auth, sendBody("oc_1", "text", textBody("t"), "")).data()["message_id"].(string)
	v2 := `{"config":{"update_multi":true},"elements":[{"tag":"markdown","content":"v2"}]}`
	tests := map[string]struct {
		auth, id, body string
		code           int
	}{
		"ok":                   {auth, card, patchBody(v2), 0},
		"unknown message":      {auth, "om_nope", patchBody(v2), 230001},
		"another app's card":   {otherApp(t, e), card, patchBody(v2), 230001},
		"a text message":       {auth, text, patchBody(v2), 230001},
		"content as an object": {auth, card, `{"content":{"elements":[]}}`, 99992402},
		"content not a card":   {auth, card, patchBody(`"x"`), 230001},
		"card over 30 KB":      {auth, card, patchBody(fmt.Sprintf(`{"elements":[{"tag":"markdown","content":%q}]}`, strings.Repeat("a", 30<<10))), 230025},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := e.do(t, "PATCH", "/open-apis/im/v1/messages/"+tc.id, tc.auth, tc.body)
			if r.code() != tc.code {
				t.Fatalf("HTTP %d %.200s, want code %d", r.status, r.raw, tc.code)
			}
			if tc.code == 0 && (r.status != 200 || r.body["msg"] != "success") {
				t.Fatalf("HTTP %d %s", r.status, r.raw)
			}
		})
	}
	if ups := e.emu.Updates(); len(ups) != 1 || ups[0].Card != v2 || ups[0].Kind != "patch" {
		t.Fatalf("updates %+v", ups)
	}
}

func TestDeleteMessage(t *testing.T) {
	e := newTwoAppEnv(t)
	auth := "Bearer " + e.token(t)
	id := e.sendCard(t, auth)
	if r := e.do(t, "DELETE", "/open-apis/im/v1/messages/"+id, otherApp(t, e), ""); r.code() != 230001 {
		t.Fatalf("another app's delete: %s", r.raw)
	}
	if r := e.do(t, "DELETE", "/open-apis/im/v1/messages/"+id, auth, ""); r.code() != 0 {
		t.Fatalf("delete: %s", r.raw)
	}
	for name, r := range map[string]response{
		"delete again": e.do(t, "DELETE", "/open-apis/im/v1/messages/"+id, auth, ""),
		"patch":        e.do(t, "PATCH", "/open-apis/im/v1/messages/"+id, auth, patchBody(cardV1)),
		"reply":        e.do(t, "POST", "/open-apis/im/v1/messages/"+id+"/reply", auth, replyBody("text", textBody("r"), "", false)),
		"react":        e.do(t, "POST", "/open-apis/im/v1/messages/"+id+"/reactions", auth, `{"reaction_type":{"emoji_type":"SMILE"}}`),
	} {
		if r.status != 400 || r.code() != 230011 {
			t.Errorf("%s on a recalled message: HTTP %d %s, want 400 230011", name, r.status, r.raw)
		}
	}
	if ms := e.emu.Messages(); len(ms) != 1 || !ms[0].Deleted {
		t.Fatalf("messages %+v", ms)
	}
}

func TestReactions(t *testing.T) {
	e := newTwoAppEnv(t)
	auth := "Bearer " + e.token(t)
	r := e.do(t, "POST", "/open-apis/im/v1/messages/om_user/reactions", auth, `{"reaction_type":{"emoji_type":"THUMBSUP"}}`)
	d := r.data()
	rid, _ := d["reaction_id"].(string)
	op, _ := d["operator"].(map[string]any)
	if r.code() != 0 || rid == "" || op["operator_id"] != appID || op["operator_type"] != "app" ||
		d["reaction_type"].(map[string]any)["emoji_type"] != "THUMBSUP" || d["action_time"] == "" {
		t.Fatalf("add: %s", r.raw)
	}
	tests := map[string]struct {
		method, path, auth, body string
		code                     int
	}{
		"add without emoji":      {"POST", "/open-apis/im/v1/messages/om_user/reactions", auth, `{"reaction_type":{}}`, 99992402},
		"add to a non-message":   {"POST", "/open-apis/im/v1/messages/oc_1/reactions", auth, `{"reaction_type":{"emoji_type":"SMILE"}}`, 230001},
		"remove another's":       {"DELETE", "/open-apis/im/v1/messages/om_user/reactions/" + rid, otherApp(t, e), "", 230001},
		"remove on other msg":    {"DELETE", "/open-apis/im/v1/messages/om_other/reactions/" + rid, auth, "", 230001},
		"remove unknown":         {"DELETE", "/open-apis/im/v1/messages/om_user/reactions/nope", auth, "", 230001},
		"remove ok":              {"DELETE", "/open-apis/im/v1/messages/om_user/reactions/" + rid, auth, "", 0},
		"remove an already gone": {"DELETE", "/open-apis/im/v1/messages/om_user/reactions/" + rid, auth, "", 230001},
	}
	for _, name := range []string{"add without emoji", "add to a non-message", "remove another's", "remove on other msg", "remove unknown", "remove ok", "remove an already gone"} {
		tc := tests[name]
		if r := e.do(t, tc.method, tc.path, tc.auth, tc.body); r.code() != tc.code {
			t.Errorf("%s: %s, want code %d", name, r.raw, tc.code)
		}
	}
	if rs := e.emu.Reactions(); len(rs) != 1 || !rs[0].Removed || rs[0].EmojiType != "THUMBSUP" {
		t.Fatalf("reactions %+v", rs)
	}
}

func TestDelayedCardUpdate(t *testing.T) {
	e := newTwoAppEnv(t)
	auth := "Bearer " + e.token(t)
	card := e.sendCard(t, auth)
	update := func(auth, tok, cardJSON string) response {
		return e.do(t, "POST", "/open-apis/interactive/v1/card/update", auth, fmt.Sprintf(`{"token":%q,"card":%s}`, tok, cardJSON))
	}
	tok := e.emu.IssueCardToken(card)
	withIDs := `{"elements":[{"tag":"markdown","content":"done"}],"open_ids":["ou_1"]}`
	if r := update(otherApp(t, e), tok, withIDs); r.code() != 230001 || !strings.Contains(r.raw, "not sent by this app") {
		t.Fatalf("another app's card: %s", r.raw)
	}
	for i := range 2 {
		if r := update(auth, tok, withIDs); r.code() != 0 {
			t.Fatalf("use %d: %s", i+1, r.raw)
		}
	}
	if r := update(auth, tok, withIDs); r.code() != 230001 || !strings.Contains(r.raw, "used up") {
		t.Fatalf("third use: %s", r.raw)
	}
	ups := e.emu.Updates()
	if len(ups) != 2 || ups[0].Kind != "delayed" || ups[0].MessageID != card || fmt.Sprint(ups[0].OpenIDs) != "[ou_1]" ||
		strings.Contains(ups[0].Card, "open_ids") || ups[0].Token != tok {
		t.Fatalf("updates %+v", ups)
	}

	expiring := e.emu.IssueCardToken(card)
	e.clock.Advance(30*time.Minute - time.Second)
	if r := update(auth, expiring, withIDs); r.code() != 0 {
		t.Fatalf("29:59 after the click: %s", r.raw)
	}
	e.clock.Advance(time.Second)
	if r := update(auth, expiring, withIDs); r.code() != 230001 || !strings.Contains(r.raw, "expired") {
		t.Fatalf("30 min after the click: %s", r.raw)
	}

	for name, tc := range map[string]struct {
		body string
		code int
	}{
		"unknown token":   {`{"token":"c-nope","card":{"elements":[]}}`, 230001},
		"missing token":   {`{"card":{"elements":[]}}`, 99992402},
		"missing card":    {`{"token":"c-1"}`, 99992402},
		"open_ids object": {`{"token":"c-1","card":{"open_ids":{}}}`, 99992402},
		"card over 30 KB": {fmt.Sprintf(`{"token":"c-1","card":{"x":%q}}`, strings.Repeat("a", 30<<10)), 230025},
	} {
		if r := e.do(t, "POST", "/open-apis/interactive/v1/card/update", auth, tc.body); r.code() != tc.code {
			t.Errorf("%s: %.200s, want %d", name, r.raw, tc.code)
		}
	}
}

func TestBotNotInChat(t *testing.T) {
	e := newAppEnv(t)
	auth := "Bearer " + e.token(t)
	e.emu.RegisterInbound("om_in", "oc_left")
	e.emu.SetBotInChat("oc_left", false)
	if r := e.sendTo(t, auth, "chat_id", "oc_left"); r.status != 400 || r.code() != 230002 {
		t.Fatalf("send: HTTP %d %s", r.status, r.raw)
	}
	if r := e.do(t, "POST", "/open-apis/im/v1/messages/om_in/reply", auth, replyBody("text", textBody("r"), "", false)); r.code() != 230002 {
		t.Fatalf("reply: %s", r.raw)
	}
	e.emu.SetBotInChat("oc_left", true)
	r := e.do(t, "POST", "/open-apis/im/v1/messages/om_in/reply", auth, replyBody("text", textBody("r"), "", false))
	if r.code() != 0 || r.data()["chat_id"] != "oc_left" || r.data()["root_id"] != "om_in" {
		t.Fatalf("reply after rejoining: %s", r.raw)
	}
}

func TestInspectionOfUpdatesAndReactions(t *testing.T) {
	e := newAppEnv(t)
	auth := "Bearer " + e.token(t)
	card := e.sendCard(t, auth)
	e.do(t, "PATCH", "/open-apis/im/v1/messages/"+card, auth, patchBody(cardV1))
	e.do(t, "POST", "/open-apis/im/v1/messages/"+card+"/reactions", auth, `{"reaction_type":{"emoji_type":"OK"}}`)
	var ups []larkemu.Update
	var rs []larkemu.Reaction
	if err := json.Unmarshal([]byte(e.do(t, "GET", "/_emu/updates", "", "").raw), &ups); err != nil || len(ups) != 1 {
		t.Fatalf("updates %v %v", ups, err)
	}
	if err := json.Unmarshal([]byte(e.do(t, "GET", "/_emu/reactions", "", "").raw), &rs); err != nil || len(rs) != 1 {
		t.Fatalf("reactions %v %v", rs, err)
	}
	e.emu.Reset()
	if len(e.emu.Updates())+len(e.emu.Reactions())+len(e.emu.Calls()) != 0 {
		t.Fatal("Reset kept records")
	}
	if r := e.do(t, "GET", "/_emu/updates", "", ""); strings.TrimSpace(r.raw) != "[]" {
		t.Fatalf("empty updates encoded as %q", r.raw)
	}
}

// FuzzMessageBody posts arbitrary bodies to send and reply: the emulator
// never panics, and always answers JSON with a code, 200 only with code 0.
func FuzzMessageBody(f *testing.F) {
	for _, s := range []string{
		sendBody("oc_1", "text", textBody("hi"), "u"),
		replyBody("interactive", `{"elements":[]}`, "", true),
		`{"receive_id":"oc_1","msg_type":"text","content":{"text":"x"}}`,
		`{"content":"\"x\""}`, `[]`, `null`, ``, `{"msg_type":"image","content":"{\"image_key\":\"\"}"}`,
	} {
		f.Add(s)
	}
	emu := larkemu.New(larkemu.Options{Unlimited: true})
	srv := newFuzzServer(f, emu)
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/open-apis/im/v1/messages?receive_id_type=chat_id", "/open-apis/im/v1/messages/om_1/reply"} {
			r := srv.post(t, path, body)
			var env struct {
				Code *int `json:"code"`
			}
			if err := json.Unmarshal(r.body, &env); err != nil || env.Code == nil {
				t.Fatalf("POST %s %q: HTTP %d %q is not a JSON answer with a code", path, body, r.status, r.body)
			}
			if (r.status == 200) != (*env.Code == 0) || (r.status != 200 && r.status != 400) {
				t.Fatalf("POST %s %q: HTTP %d code %d", path, body, r.status, *env.Code)
			}
		}
		emu.Reset()
	})
}

// fuzzServer calls an emulator's handler in process, authenticated.
type fuzzServer struct {
	h    http.Handler
	auth string
}

type fuzzResponse struct {
	status int
	body   []byte
}

func newFuzzServer(f *testing.F, emu *larkemu.Emulator) *fuzzServer {
	f.Helper()
	rec := httptest.NewRecorder()
	emu.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/open-apis/auth/v3/tenant_access_token/internal",
		strings.NewReader(`{"app_id":"cli_fuzz","app_secret":"s"}`)))
	var tok struct {
		Token string `json:"tenant_access_token"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil || tok.Token == "" {
		f.Fatalf("token: %s", rec.Body)
	}
	return &fuzzServer{h: emu.Handler(), auth: "Bearer " + tok.Token}
}

func (s *fuzzServer) post(_ *testing.T, path, body string) fuzzResponse {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", path, strings.NewReader(body))
	req.Header.Set("Authorization", s.auth)
	s.h.ServeHTTP(rec, req)
	return fuzzResponse{rec.Code, rec.Body.Bytes()}
}
