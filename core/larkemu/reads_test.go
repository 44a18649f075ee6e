package larkemu_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/larkway/larkway/core/larkemu"
)

// item returns data.items[i] of r.
func (r response) item(t *testing.T, i int) map[string]any {
	t.Helper()
	items, _ := r.data()["items"].([]any)
	if i >= len(items) {
		t.Fatalf("no items[%d] in %s", i, r.raw)
	}
	return items[i].(map[string]any)
}

func (r response) items() []any {
	items, _ := r.data()["items"].([]any)
	return items
}

func putBody(msgType, content string) string {
	b, _ := json.Marshal(map[string]string{"msg_type": msgType, "content": content})
	return string(b)
}

func TestGetMessage(t *testing.T) {
	e := newTwoAppEnv(t)
	auth := "Bearer " + e.token(t)
	sent := e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", auth, sendBody("oc_read", "text", textBody("hello"), "")).data()["message_id"].(string)
	reply := e.do(t, "POST", "/open-apis/im/v1/messages/"+sent+"/reply", auth, replyBody("text", textBody("again"), "", true)).data()["message_id"].(string)
	e.emu.RegisterInboundMessage(larkemu.InboundMessage{MessageID: "om_user", ChatID: "oc_read", SenderOpenID: "ou_alice", Content: textBody("hi bot")})
	e.emu.RegisterInbound("om_bare", "oc_read")
	e.emu.RegisterInbound("om_gone", "oc_gone")
	e.emu.SetBotInChat("oc_gone", false)
	recalled := e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", auth, sendBody("oc_read", "text", textBody("oops"), "")).data()["message_id"].(string)
	if r := e.do(t, "DELETE", "/open-apis/im/v1/messages/"+recalled, auth, ""); r.code() != 0 {
		t.Fatalf("recall: %s", r.raw)
	}

	tests := map[string]struct {
		id, query, auth string
		code            int
		want            map[string]any // fields of items[0]; sender.* and body.content by path
	}{
		"sent by the bot": {sent, "", auth, 0, map[string]any{"message_id": sent, "chat_id": "oc_read", "msg_type": "text",
			"body.content": textBody("hello"), "sender.id": appID, "sender.id_type": "app_id", "sender.sender_type": "app", "deleted": false, "updated": false}},
		"a reply in a thread": {reply, "", auth, 0, map[string]any{"parent_id": sent, "root_id": sent, "chat_id": "oc_read"}},
		"read by another app": {sent, "", otherApp(t, e), 0, map[string]any{"message_id": sent, "sender.id": appID}},
		"a user's message": {"om_user", "", auth, 0, map[string]any{"chat_id": "oc_read", "msg_type": "text", "body.content": textBody("hi bot"),
			"sender.id": "ou_alice", "sender.id_type": "open_id", "sender.sender_type": "user"}},
		"sender as union_id":     {"om_user", "?user_id_type=union_id", auth, 0, map[string]any{"sender.id_type": "union_id"}},
		"registered bare":        {"om_bare", "", auth, 0, map[string]any{"msg_type": "text", "body.content": `{"text":""}`, "sender.sender_type": "user"}},
		"recalled":               {recalled, "", auth, 0, map[string]any{"deleted": true, "body.content": "This message was recalled"}},
		"unknown message":        {"om_nobody", "", auth, 230001, nil},
		"bot left the chat":      {"om_gone", "", auth, 230002, nil},
		"unknown user_id_type":   {sent, "?user_id_type=email", auth, 99992402, nil},
		"without a tenant token": {sent, "", "", 99991661, nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := e.do(t, "GET", "/open-apis/im/v1/messages/"+tc.id+tc.query, tc.auth, "")
			if r.code() != tc.code {
				t.Fatalf("HTTP %d %s, want code %d", r.status, r.raw, tc.code)
			}
			if tc.code != 0 {
				if r.status != 400 {
					t.Fatalf("HTTP %d, want 400", r.status)
				}
				return
			}
			if n := len(r.items()); n != 1 {
				t.Fatalf("%d items in %s, want 1", n, r.raw)
			}
			it := r.item(t, 0)
			for path, want := range tc.want {
				if got := field(it, path); got != want {
					t.Errorf("%s = %v, want %v (%s)", path, got, want, r.raw)
				}
			}
		})
	}
	// A union_id is derived from the open_id: the same every time, not the open_id.
	u1 := field(e.do(t, "GET", "/open-apis/im/v1/messages/om_user?user_id_type=union_id", auth, "").item(t, 0), "sender.id")
	u2 := field(e.do(t, "GET", "/open-apis/im/v1/messages/om_user?user_id_type=union_id", auth, "").item(t, 0), "sender.id")
	if s, _ := u1.(string); u1 != u2 || !strings.HasPrefix(s, "on_") {
		t.Fatalf("union_ids %v, %v: want one stable on_ ID", u1, u2)
	}
}

// field reads a dotted path from a decoded JSON object.
func field(m map[string]any, path string) any {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = obj[k]
	}
	return v
}

func TestEditMessage(t *testing.T) {
	e := newTwoAppEnv(t)
	auth := "Bearer " + e.token(t)
	send := func(chat, msgType, content string) string {
		t.Helper()
		r := e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", auth, sendBody(chat, msgType, content, ""))
		if r.code() != 0 {
			t.Fatalf("send: %s", r.raw)
		}
		return r.data()["message_id"].(string)
	}
	text := send("oc_edit", "text", textBody("v0"))
	card := send("oc_edit", "interactive", cardV1)
	gone := send("oc_edit", "text", textBody("x"))
	e.do(t, "DELETE", "/open-apis/im/v1/messages/"+gone, auth, "")
	left := send("oc_left", "text", textBody("x"))
	e.emu.SetBotInChat("oc_left", false)
	post := `{"zh_cn":{"title":"t","content":[[{"tag":"text","text":"p"}]]}}`

	r := e.do(t, "PUT", "/open-apis/im/v1/messages/"+text, auth, putBody("text", textBody("v1")))
	if d := r.data(); r.code() != 0 || d["message_id"] != text || d["updated"] != true || field(d, "body.content") != textBody("v1") {
		t.Fatalf("edit: %s", r.raw)
	}
	tests := map[string]struct {
		id, auth, body string
		code           int
	}{
		"to a post":                {text, auth, putBody("post", post), 0},
		"msg_type interactive":     {text, auth, putBody("interactive", cardV1), 99992402},
		"no msg_type":              {text, auth, `{"content":"{\"text\":\"x\"}"}`, 99992402},
		"content as an object":     {text, auth, `{"msg_type":"text","content":{"text":"x"}}`, 99992402},
		"text content without key": {text, auth, putBody("text", `{"title":"x"}`), 230001},
		"text over 150 KB":         {text, auth, putBody("text", textBody(strings.Repeat("x", 151<<10))), 230025},
		"post over 30 KB":          {text, auth, putBody("post", `{"zh_cn":{"title":"`+strings.Repeat("x", 31<<10)+`"}}`), 230025},
		"a card":                   {card, auth, putBody("text", textBody("x")), 230001},
		"another app's message":    {text, otherApp(t, e), putBody("text", textBody("x")), 230001},
		"unknown message":          {"om_nobody", auth, putBody("text", textBody("x")), 230001},
		"recalled":                 {gone, auth, putBody("text", textBody("x")), 230011},
		"bot left the chat":        {left, auth, putBody("text", textBody("x")), 230002},
		"without a tenant token":   {text, "", putBody("text", textBody("x")), 99991661},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if r := e.do(t, "PUT", "/open-apis/im/v1/messages/"+tc.id, tc.auth, tc.body); r.code() != tc.code {
				t.Fatalf("HTTP %d %s, want code %d", r.status, r.raw, tc.code)
			}
		})
	}
	// Edits so far: v1 and the post. Lark allows 20.
	for i := 3; i <= larkemu.MaxEdits; i++ {
		if r := e.do(t, "PUT", "/open-apis/im/v1/messages/"+text, auth, putBody("text", textBody(fmt.Sprint("v", i)))); r.code() != 0 {
			t.Fatalf("edit %d: %s", i, r.raw)
		}
	}
	if r := e.do(t, "PUT", "/open-apis/im/v1/messages/"+text, auth, putBody("text", textBody("one too many"))); r.code() != 230001 {
		t.Fatalf("edit %d: %s, want 230001", larkemu.MaxEdits+1, r.raw)
	}
	for _, m := range e.emu.Messages() {
		if m.MessageID == text && (m.Edits != larkemu.MaxEdits || m.Content != textBody(fmt.Sprint("v", larkemu.MaxEdits)) || m.MsgType != "text" || m.UpdateTime.IsZero()) {
			t.Fatalf("edited message recorded as %+v", m)
		}
	}
}

func TestListReactions(t *testing.T) {
	e := newAppEnv(t)
	auth := "Bearer " + e.token(t)
	add := func(id, emoji string) string {
		t.Helper()
		r := e.do(t, "POST", "/open-apis/im/v1/messages/"+id+"/reactions", auth, fmt.Sprintf(`{"reaction_type":{"emoji_type":%q}}`, emoji))
		if r.code() != 0 {
			t.Fatalf("add: %s", r.raw)
		}
		return r.data()["reaction_id"].(string)
	}
	var ids []string
	for _, emoji := range []string{"SMILE", "THUMBSUP", "SMILE", "OK"} {
		ids = append(ids, add("om_r", emoji))
	}
	e.do(t, "DELETE", "/open-apis/im/v1/messages/om_r/reactions/"+ids[3], auth, "")
	add("om_other", "SMILE")
	sent := e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", auth, sendBody("oc_1", "text", textBody("x"), "")).data()["message_id"].(string)
	add(sent, "SMILE")
	e.do(t, "DELETE", "/open-apis/im/v1/messages/"+sent, auth, "")
	e.emu.RegisterInbound("om_gone", "oc_gone")
	e.emu.SetBotInChat("oc_gone", false)

	list := func(id, query string) response {
		t.Helper()
		return e.do(t, "GET", "/open-apis/im/v1/messages/"+id+"/reactions"+query, auth, "")
	}
	reactionIDs := func(r response) []string {
		var out []string
		for _, it := range r.items() {
			out = append(out, it.(map[string]any)["reaction_id"].(string))
		}
		return out
	}
	tests := map[string]struct {
		id, query string
		code      int
		want      []string
		hasMore   bool
	}{
		"all, in order":          {"om_r", "", 0, ids[:3], false},
		"one emoji type":         {"om_r", "?reaction_type=SMILE", 0, []string{ids[0], ids[2]}, false},
		"first page":             {"om_r", "?page_size=2", 0, ids[:2], true},
		"no reactions":           {"om_none", "", 0, nil, false},
		"page_size 0":            {"om_r", "?page_size=0", 99992402, nil, false},
		"page_size 51":           {"om_r", "?page_size=51", 99992402, nil, false},
		"page_size not a number": {"om_r", "?page_size=x", 99992402, nil, false},
		"forged page_token":      {"om_r", "?page_token=abc", 231012, nil, false},
		"unknown user_id_type":   {"om_r", "?user_id_type=email", 231014, nil, false},
		"not a message ID":       {"oc_1", "", 231003, nil, false},
		"recalled message":       {sent, "", 231003, nil, false},
		"bot left the chat":      {"om_gone", "", 231008, nil, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := list(tc.id, tc.query)
			if r.code() != tc.code {
				t.Fatalf("HTTP %d %s, want code %d", r.status, r.raw, tc.code)
			}
			if tc.code != 0 {
				return
			}
			if got := reactionIDs(r); fmt.Sprint(got) != fmt.Sprint(tc.want) || r.data()["has_more"] != tc.hasMore {
				t.Fatalf("reactions %v has_more %v, want %v %v (%s)", got, r.data()["has_more"], tc.want, tc.hasMore, r.raw)
			}
			if _, tok := r.data()["page_token"]; tok != tc.hasMore {
				t.Fatalf("page_token present %v with has_more %v", tok, tc.hasMore)
			}
			if items, ok := r.data()["items"].([]any); !ok || len(items) != len(tc.want) {
				t.Fatalf("items %s: want a list of %d", r.raw, len(tc.want))
			}
		})
	}
	first := list("om_r", "?page_size=2")
	second := list("om_r", "?page_size=2&page_token="+url.QueryEscape(first.data()["page_token"].(string)))
	if got := reactionIDs(second); second.code() != 0 || fmt.Sprint(got) != fmt.Sprint(ids[2:3]) || second.data()["has_more"] != false {
		t.Fatalf("second page %s, want %v and no more", second.raw, ids[2:3])
	}
	it := first.item(t, 0)
	if field(it, "operator.operator_id") != appID || field(it, "operator.operator_type") != "app" || field(it, "reaction_type.emoji_type") != "SMILE" || it["action_time"] == "" {
		t.Fatalf("reaction item %v", it)
	}
}

func TestGetChat(t *testing.T) {
	e := newAppEnv(t)
	auth := "Bearer " + e.token(t)
	e.emu.SetChat(larkemu.Chat{ChatID: "oc_team", Name: "Team", Description: "the team", OwnerOpenID: "ou_owner", Mode: "topic",
		Members: []larkemu.Member{{OpenID: "ou_owner", Name: "Owner"}, {OpenID: "ou_b", Name: "B"}}})
	e.emu.SetChat(larkemu.Chat{ChatID: "oc_gone", Name: "Gone", Description: "secret"})
	e.emu.SetBotInChat("oc_gone", false)

	absent := "<absent>"
	tests := map[string]struct {
		id, query, auth string
		code            int
		want            map[string]any
	}{
		"described": {"oc_team", "", auth, 0, map[string]any{"name": "Team", "description": "the team", "owner_id": "ou_owner", "owner_id_type": "open_id",
			"chat_mode": "topic", "group_message_type": "thread", "user_count": "2", "bot_count": "1", "external": false, "tenant_key": "emu-tenant-key"}},
		"owner as union_id": {"oc_team", "?user_id_type=union_id", auth, 0, map[string]any{"owner_id_type": "union_id"}},
		"not described":     {"oc_any", "", auth, 0, map[string]any{"name": "oc_any", "chat_mode": "group", "user_count": "0", "owner_id": absent}},
		"bot not in chat": {"oc_gone", "", auth, 0, map[string]any{"name": "Gone", "description": absent, "chat_mode": absent, "user_count": absent,
			"external": absent}},
		"not a chat ID":          {"om_1", "", auth, 232006, nil},
		"unknown user_id_type":   {"oc_team", "?user_id_type=email", auth, 232015, nil},
		"without a tenant token": {"oc_team", "", "", 99991661, nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := e.do(t, "GET", "/open-apis/im/v1/chats/"+tc.id+tc.query, tc.auth, "")
			if r.code() != tc.code {
				t.Fatalf("HTTP %d %s, want code %d", r.status, r.raw, tc.code)
			}
			if tc.code != 0 {
				return
			}
			d := r.data()
			if a, _ := d["avatar"].(string); a == "" {
				t.Errorf("no avatar in %s", r.raw)
			}
			for k, want := range tc.want {
				got, ok := d[k]
				if !ok {
					got = absent
				}
				if got != want {
					t.Errorf("%s = %v, want %v (%s)", k, got, want, r.raw)
				}
			}
		})
	}
	if r := e.do(t, "GET", "/open-apis/im/v1/chats/oc_team?user_id_type=union_id", auth, ""); !strings.HasPrefix(r.data()["owner_id"].(string), "on_") {
		t.Fatalf("owner as union_id: %s", r.raw)
	}
	var apis []string
	for _, c := range e.emu.Calls() {
		apis = append(apis, c.API)
	}
	if !strings.Contains(strings.Join(apis, " "), larkemu.APIGetChat) {
		t.Fatalf("calls %v: chat.get not recorded as %s", apis, larkemu.APIGetChat)
	}
}

func TestGetChatMembers(t *testing.T) {
	e := newAppEnv(t)
	auth := "Bearer " + e.token(t)
	var members []larkemu.Member
	for i := range 5 {
		members = append(members, larkemu.Member{OpenID: fmt.Sprint("ou_", i), Name: fmt.Sprint("user ", i)})
	}
	members[4].TenantKey = "other-tenant"
	e.emu.SetChat(larkemu.Chat{ChatID: "oc_five", Name: "Five", Members: members})
	e.emu.SetBotInChat("oc_gone", false)

	get := func(id, query string) response {
		t.Helper()
		return e.do(t, "GET", "/open-apis/im/v1/chats/"+id+"/members"+query, auth, "")
	}
	// Page through all of them, two at a time.
	var got []string
	tok := ""
	for page := 0; ; page++ {
		q := "?page_size=2"
		if tok != "" {
			q += "&page_token=" + url.QueryEscape(tok)
		}
		r := get("oc_five", q)
		if r.code() != 0 || r.data()["member_total"] != float64(5) || page > 3 {
			t.Fatalf("page %d: %s", page, r.raw)
		}
		for _, it := range r.items() {
			m := it.(map[string]any)
			if m["member_id_type"] != "open_id" || m["tenant_key"] == "" {
				t.Fatalf("member %v", m)
			}
			got = append(got, fmt.Sprint(m["member_id"], "/", m["name"], "/", m["tenant_key"]))
		}
		if r.data()["has_more"] != true {
			if _, ok := r.data()["page_token"]; ok {
				t.Fatalf("page_token on the last page: %s", r.raw)
			}
			break
		}
		tok = r.data()["page_token"].(string)
	}
	want := "[ou_0/user 0/emu-tenant-key ou_1/user 1/emu-tenant-key ou_2/user 2/emu-tenant-key ou_3/user 3/emu-tenant-key ou_4/user 4/other-tenant]"
	if fmt.Sprint(got) != want {
		t.Fatalf("members %v, want %s", got, want)
	}

	tests := map[string]struct {
		id, query string
		code      int
		n         int
	}{
		"default page":          {"oc_five", "", 0, 5},
		"as user_id":            {"oc_five", "?member_id_type=user_id", 0, 5},
		"a chat not described":  {"oc_any", "", 0, 0},
		"unknown id type":       {"oc_five", "?member_id_type=email", 232015, 0},
		"page_size 101":         {"oc_five", "?page_size=101", 232001, 0},
		"forged page_token":     {"oc_five", "?page_token=bm9wZQ", 232001, 0},
		"page_token past total": {"oc_five", "?page_token=bGFya2VtdS1wYWdlOjk", 232001, 0},
		"bot not in chat":       {"oc_gone", "", 232011, 0},
		"not a chat ID":         {"ou_1", "", 232006, 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := get(tc.id, tc.query)
			if r.code() != tc.code {
				t.Fatalf("HTTP %d %s, want code %d", r.status, r.raw, tc.code)
			}
			if tc.code != 0 {
				return
			}
			if items, ok := r.data()["items"].([]any); !ok || len(items) != tc.n || r.data()["member_total"] != float64(tc.n) {
				t.Fatalf("%s: want a list of %d", r.raw, tc.n)
			}
		})
	}
	a, b := get("oc_five", "?member_id_type=user_id").item(t, 0), get("oc_five", "?member_id_type=user_id").item(t, 0)
	if a["member_id"] != b["member_id"] || a["member_id"] == "ou_0" || a["member_id_type"] != "user_id" {
		t.Fatalf("user_id of ou_0: %v then %v, want one stable derived ID", a, b)
	}
}

func (s *fuzzServer) call(method, path, body string) fuzzResponse {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", s.auth)
	s.h.ServeHTTP(rec, req)
	return fuzzResponse{rec.Code, rec.Body.Bytes()}
}

// FuzzReads sends arbitrary IDs, query values and edit bodies to the read
// and edit calls: the emulator never panics and always answers JSON with a
// code — 200 only with code 0, else 400, or 404 for a path it does not
// serve.
func FuzzReads(f *testing.F) {
	validToken := base64.RawURLEncoding.EncodeToString([]byte("larkemu-page:1"))
	for _, seed := range []struct{ id, size, token, idType, body string }{
		{"om_1", "1", validToken, "open_id", putBody("text", textBody("x"))},
		{"oc_1", "2", "", "union_id", putBody("post", `{"zh_cn":{"title":"t"}}`)},
		{"", "0", "bGFya2VtdS1wYWdlOi0x", "email", `{"msg_type":"text","content":{}}`},
		{"om_1/../x", "-1", "%%%", "user_id", `null`},
		{"oc_1?x=1", "99999999999999999999", "bGFya2VtdS1wYWdlOjk5OTk5OTk5OTk5OTk5OTk5OTk5", "", `[]`},
	} {
		f.Add(seed.id, seed.size, seed.token, seed.idType, seed.body)
	}
	emu := larkemu.New(larkemu.Options{Unlimited: true})
	srv := newFuzzServer(f, emu)
	sent := srv.post(nil, "/open-apis/im/v1/messages?receive_id_type=chat_id", sendBody("oc_1", "text", textBody("x"), ""))
	var out struct {
		Data struct {
			MessageID string `json:"message_id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(sent.body, &out); err != nil || out.Data.MessageID == "" {
		f.Fatalf("send: %s", sent.body)
	}
	emu.SetChat(larkemu.Chat{ChatID: "oc_1", Name: "fuzz", Members: []larkemu.Member{{OpenID: "ou_1"}, {OpenID: "ou_2"}, {OpenID: "ou_3"}}})
	for _, emoji := range []string{"SMILE", "OK", "SMILE"} {
		srv.post(nil, "/open-apis/im/v1/messages/om_1/reactions", fmt.Sprintf(`{"reaction_type":{"emoji_type":%q}}`, emoji))
	}
	f.Fuzz(func(t *testing.T, id, size, token, idType, body string) {
		pid := url.PathEscape(id)
		q := url.Values{"page_size": {size}, "page_token": {token}, "user_id_type": {idType}, "member_id_type": {idType}, "reaction_type": {idType}}.Encode()
		for _, c := range []struct{ method, path, body string }{
			{"GET", "/open-apis/im/v1/messages/" + pid + "?" + q, ""},
			{"GET", "/open-apis/im/v1/messages/" + pid + "/reactions?" + q, ""},
			{"GET", "/open-apis/im/v1/chats/" + pid + "?" + q, ""},
			{"GET", "/open-apis/im/v1/chats/" + pid + "/members?" + q, ""},
			{"PUT", "/open-apis/im/v1/messages/" + out.Data.MessageID, body},
			{"PUT", "/open-apis/im/v1/messages/" + pid, body},
		} {
			r := srv.call(c.method, c.path, c.body)
			var env struct {
				Code *int `json:"code"`
			}
			if err := json.Unmarshal(r.body, &env); err != nil || env.Code == nil {
				t.Fatalf("%s %s: HTTP %d %q is not a JSON answer with a code", c.method, c.path, r.status, r.body)
			}
			if (r.status == 200) != (*env.Code == 0) || (r.status != 200 && r.status != 400 && r.status != 404) {
				t.Fatalf("%s %s: HTTP %d code %d", c.method, c.path, r.status, *env.Code)
			}
		}
	})
}
