package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/apptest"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/console"
	"github.com/larkway/larkway/core/internal/testenv"
)

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// loginSession logs c in with token and returns the session's CSRF token,
// read from a page's form.
func loginSession(t *testing.T, c *http.Client, s *stack, token string) string {
	t.Helper()
	if code, body := do(t, c, http.MethodPost, s.consoleURL+"/login", "", url.Values{"token": {token}}); code != http.StatusSeeOther {
		t.Fatalf("login answered %d: %s", code, body)
	}
	code, body := do(t, c, http.MethodGet, s.consoleURL+"/plugins/echo", "", nil)
	m := csrfRE.FindStringSubmatch(body)
	if code != http.StatusOK || m == nil {
		t.Fatalf("plugin page answered %d without a CSRF token: %s", code, body)
	}
	return m[1]
}

// A viewer reads every page, and every change is refused with 403 whether
// it comes with a bearer token or with a session and its CSRF token; the
// plugin is untouched. An operator's change goes through a confirmation.
func TestViewerReadsEverythingAndChangesNothing(t *testing.T) {
	s := startStack(t, false)
	_, sha := s.newVersion(t)
	for _, page := range []string{"/", "/plugins/echo", "/plugins/approval", "/dlq", "/dlq/echo", "/tail"} {
		if code, body := do(t, client(t), http.MethodGet, s.consoleURL+page, viewerToken, nil); code != http.StatusOK {
			t.Errorf("viewer GET %s: %d\n%s", page, code, body)
		}
	}
	session := client(t)
	csrf := loginSession(t, session, s, viewerToken)
	changes := []struct {
		path string
		form url.Values
	}{
		{"/plugins/echo/swap", url.Values{"path": {s.echoPath}, "sha256": {sha}}},
		{"/plugins/echo/rollback", nil},
		{"/plugins/echo/drain", nil},
		{"/plugins/echo/disable", nil},
		{"/plugins/echo/enable", nil},
		{"/plugins/echo/canary", url.Values{"path": {s.echoPath}, "sha256": {sha}, "percent": {"10"}, "promote_after": {"5"}}},
		{"/plugins/echo/shadow", url.Values{"path": {s.echoPath}, "sha256": {sha}, "chats": {"oc_a, oc_b"}}},
		{"/plugins/echo/promote", nil},
		{"/plugins/echo/abort", nil},
		{"/dlq/echo/replay", url.Values{"all": {"yes"}}},
		{"/dlq/echo/purge", url.Values{"all": {"yes"}}},
	}
	for _, ch := range changes {
		for _, confirm := range []string{"", "yes"} {
			form := url.Values{"confirm": {confirm}}
			for k, v := range ch.form {
				form[k] = v
			}
			if code, body := do(t, client(t), http.MethodPost, s.consoleURL+ch.path, viewerToken, form); code != http.StatusForbidden {
				t.Errorf("viewer bearer POST %s (confirm %q): %d, want 403\n%s", ch.path, confirm, code, body)
			}
			form.Set("csrf", csrf)
			if code, body := do(t, session, http.MethodPost, s.consoleURL+ch.path, "", form); code != http.StatusForbidden ||
				!strings.Contains(body, "may only read") {
				t.Errorf("viewer session POST %s (confirm %q): %d, want 403\n%s", ch.path, confirm, code, body)
			}
		}
	}
	code, body := do(t, client(t), http.MethodGet, s.consoleURL+"/v1/plugins/echo", viewerToken, nil)
	var d struct {
		Plugin struct {
			Desired *struct{ Enabled bool } `json:"desired"`
		} `json:"plugin"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &d) != nil || (d.Plugin.Desired != nil && !d.Plugin.Desired.Enabled) ||
		!strings.Contains(body, `"state": "serving"`) {
		t.Fatalf("after the viewer's attempts echo is not serving as before: %d %s", code, body)
	}
	if code, body := do(t, client(t), http.MethodGet, s.consoleURL+"/v1/plugins/echo/release", viewerToken, nil); code != http.StatusOK ||
		strings.Contains(body, `"release"`) || strings.Contains(body, `"last"`) {
		t.Fatalf("after the viewer's attempts echo has a release: %d %s", code, body)
	}

	// The operator is asked first, and only the confirmed form acts.
	op := client(t)
	code, body = do(t, op, http.MethodPost, s.consoleURL+"/plugins/echo/disable", operatorToken, url.Values{})
	if code != http.StatusOK || !strings.Contains(body, `id="confirm"`) || !strings.Contains(body, "Disable plugin echo?") {
		t.Fatalf("operator disable without confirmation: %d, want the confirmation page\n%s", code, body)
	}
	code, body = do(t, op, http.MethodPost, s.consoleURL+"/plugins/echo/disable", operatorToken, url.Values{"confirm": {"yes"}})
	if code != http.StatusOK || !strings.Contains(body, "Disable of plugin echo: done.") {
		t.Fatalf("operator disable: %d\n%s", code, body)
	}
	code, body = do(t, op, http.MethodPost, s.consoleURL+"/plugins/echo/enable", operatorToken, url.Values{"confirm": {"yes"}})
	if code != http.StatusOK || !strings.Contains(body, "Enable of plugin echo: done.") {
		t.Fatalf("operator enable: %d\n%s", code, body)
	}
	// The API's refusals reach the page with their status: a swap from
	// outside the plugin directory.
	code, body = do(t, op, http.MethodPost, s.consoleURL+"/plugins/echo/swap", operatorToken,
		url.Values{"confirm": {"yes"}, "path": {"/bin/sh"}, "sha256": {sha}})
	if code != http.StatusForbidden || !strings.Contains(body, "Swap of plugin echo failed") || !strings.Contains(body, "not inside the plugin directory") {
		t.Fatalf("swap from outside the plugin directory: %d\n%s", code, body)
	}
}

// Logging in sets a session cookie (HttpOnly, SameSite=Strict) and keeps
// the token on the server; a refused login sets none; a change needs the
// session's CSRF token and a same-site origin; logging out ends the
// session. Bearer requests need no login.
func TestLoginSessionAndCSRF(t *testing.T) {
	s := startStack(t, false)
	c := client(t)
	req, _ := http.NewRequest(http.MethodGet, s.consoleURL+"/plugins/echo", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/login?next=%2Fplugins%2Fecho" {
		t.Fatalf("anonymous GET: %d to %q, want 303 to the login page", resp.StatusCode, loc)
	}

	post := func(c *http.Client, path string, form url.Values, hdr map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, s.consoleURL+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := post(c, "/login", url.Values{"token": {"not-a-token-at-all"}}, nil); r.StatusCode != http.StatusUnauthorized || len(r.Cookies()) != 0 {
		t.Fatalf("wrong token: %d with cookies %v, want 401 and none", r.StatusCode, r.Cookies())
	}
	r := post(c, "/login", url.Values{"token": {operatorToken}, "next": {"/plugins/echo"}}, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/plugins/echo" {
		t.Fatalf("login: %d to %q", r.StatusCode, r.Header.Get("Location"))
	}
	set := r.Header.Get("Set-Cookie")
	if !strings.Contains(set, console.CookieName+"=") || !strings.Contains(set, "HttpOnly") || !strings.Contains(set, "SameSite=Strict") ||
		strings.Contains(set, operatorToken) {
		t.Fatalf("session cookie %q: want HttpOnly, SameSite=Strict, and not the token", set)
	}
	if r := post(c, "/login", url.Values{"token": {operatorToken}, "next": {"//evil.example/"}}, nil); r.Header.Get("Location") != "/" {
		t.Fatalf("login with an off-site next redirected to %q", r.Header.Get("Location"))
	}
	csrf := loginSession(t, c, s, operatorToken)

	for _, tc := range []struct {
		name string
		form url.Values
		hdr  map[string]string
		want int
	}{
		{"no CSRF token", url.Values{}, nil, http.StatusForbidden},
		{"wrong CSRF token", url.Values{"csrf": {"forged"}}, nil, http.StatusForbidden},
		{"cross-site origin", url.Values{"csrf": {csrf}}, map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"cross-site fetch", url.Values{"csrf": {csrf}}, map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"valid", url.Values{"csrf": {csrf}}, nil, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := post(c, "/plugins/echo/drain", tc.form, tc.hdr); r.StatusCode != tc.want {
				t.Fatalf("POST: %d, want %d", r.StatusCode, tc.want)
			}
		})
	}

	if code, body := do(t, client(t), http.MethodGet, s.consoleURL+"/", operatorToken, nil); code != http.StatusOK || !strings.Contains(body, `data-plugin="echo"`) {
		t.Fatalf("bearer GET /: %d\n%s", code, body)
	}
	if code, _ := do(t, client(t), http.MethodGet, s.consoleURL+"/", "wrong-token-0123456789", nil); code != http.StatusUnauthorized {
		t.Fatalf("wrong bearer GET /: %d, want 401", code)
	}

	if r := post(c, "/logout", url.Values{"csrf": {csrf}}, nil); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.StatusCode)
	}
	if code, _ := do(t, c, http.MethodGet, s.consoleURL+"/", "", nil); code != http.StatusSeeOther {
		t.Fatalf("after logout GET /: %d, want 303 to the login page", code)
	}
}

// The live tail streams events and actions as server-sent events,
// filtered: by chat it shows the event and the actions, by plugin only that
// plugin's actions.
func TestLiveTailStreamsFilteredEventsAndActions(t *testing.T) {
	s := startStack(t, false)
	type stream struct{ items chan console.Item }
	open := func(query string) stream {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.consoleURL+"/tail/stream?"+query, nil)
		req.Header.Set("Authorization", "Bearer "+viewerToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("tail stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		st := stream{items: make(chan console.Item, 100)}
		opened := make(chan struct{})
		go func() {
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				line := sc.Text()
				if strings.HasPrefix(line, ": tail open") {
					close(opened)
				}
				if d, ok := strings.CutPrefix(line, "data: "); ok {
					var it console.Item
					if json.Unmarshal([]byte(d), &it) == nil {
						st.items <- it
					}
				}
			}
		}()
		<-opened
		return st
	}
	byChat := open("chat=oc_playground_group")
	byPlugin := open("plugin=approval")
	send := func(text string) { postPlayground(t, s, text) }
	send("/approve-request tail me")
	next := func(st stream) console.Item {
		t.Helper()
		select {
		case it := <-st.items:
			return it
		case <-time.After(30 * time.Second):
			t.Fatal("no tail item within 30s")
			return console.Item{}
		}
	}
	if it := next(byChat); it.Kind != "event" || it.Type != "im.message.receive_v1" || it.App != appID || it.Detail != "/approve-request tail me" {
		t.Fatalf("first item by chat %+v, want the message event", it)
	}
	seen := map[string]bool{}
	for len(seen) < 2 {
		it := next(byChat)
		if it.Kind != "action" || it.Chat != "oc_playground_group" {
			t.Fatalf("item by chat %+v, want an action in the chat", it)
		}
		seen[it.Plugin] = true
	}
	if !seen["echo"] || !seen["approval"] {
		t.Fatalf("actions by chat from %v, want echo and approval", seen)
	}
	if it := next(byPlugin); it.Kind != "action" || it.Plugin != "approval" || it.Type != "reply" {
		t.Fatalf("first item by plugin %+v, want approval's reply", it)
	}
}

// Dead letters through the console: listed, shown with the event and the
// reason, purged only once confirmed, replayed by id or all at once.
func TestDeadLetterPages(t *testing.T) {
	s := startStack(t, true)
	s.addDeadLetter(t, "dl-1", "om_dl_1", "first dead")
	s.addDeadLetter(t, "dl-2", "om_dl_2", "second dead")
	c := client(t)
	code, body := do(t, c, http.MethodGet, s.consoleURL+"/dlq/echo", viewerToken, nil)
	if code != http.StatusOK || !strings.Contains(body, "2 dead letter(s).") || !strings.Contains(body, `data-id="dl-1"`) {
		t.Fatalf("list: %d\n%s", code, body)
	}
	code, body = do(t, c, http.MethodGet, s.consoleURL+"/dlq/echo/dl-1", viewerToken, nil)
	if code != http.StatusOK || !strings.Contains(body, "handler failed 5 times: test failure") || !strings.Contains(body, "first dead") ||
		!strings.Contains(body, "om_dl_1") {
		t.Fatalf("show: %d\n%s", code, body)
	}
	if code, _ := do(t, c, http.MethodGet, s.consoleURL+"/dlq/echo/nope", viewerToken, nil); code != http.StatusNotFound {
		t.Fatalf("show of an unknown id: %d, want 404", code)
	}
	code, body = do(t, c, http.MethodPost, s.consoleURL+"/dlq/echo/purge", operatorToken, url.Values{"id": {"dl-1"}})
	if code != http.StatusOK || !strings.Contains(body, `id="confirm"`) || s.deadLetters(t) != 2 {
		t.Fatalf("unconfirmed purge: %d, %d left\n%s", code, s.deadLetters(t), body)
	}
	code, body = do(t, c, http.MethodPost, s.consoleURL+"/dlq/echo/purge", operatorToken, url.Values{"id": {"dl-1"}, "confirm": {"yes"}})
	if code != http.StatusOK || !strings.Contains(body, "Purge of 1 dead letter(s) of echo: done.") || s.deadLetters(t) != 1 {
		t.Fatalf("purge: %d, %d left\n%s", code, s.deadLetters(t), body)
	}
	code, body = do(t, c, http.MethodPost, s.consoleURL+"/dlq/echo/replay", operatorToken, url.Values{"all": {"yes"}})
	if code != http.StatusOK || !strings.Contains(body, "Replay of every dead letter of echo: done.") || s.deadLetters(t) != 0 {
		t.Fatalf("replay all: %d, %d left\n%s", code, s.deadLetters(t), body)
	}
	testenv.Eventually(t, 30*time.Second, "echo never answered the replayed dead letter", func() bool {
		return len(replies(s.emu, "om_dl_2", "echo: second dead")) == 1
	})
	if len(replies(s.emu, "om_dl_1", "echo: first dead")) != 0 {
		t.Fatal("the purged dead letter was answered")
	}
	// The overview's live part alone, as htmx asks for it.
	req, _ := http.NewRequest(http.MethodGet, s.consoleURL+"/", nil)
	req.Header.Set("Authorization", "Bearer "+viewerToken)
	req.Header.Set("HX-Request", "true")
	req.Header.Set("HX-Target", "live")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if frag := strings.TrimSpace(string(b)); !strings.HasPrefix(frag, `<div id="live"`) || strings.Contains(frag, "<html") ||
		!strings.Contains(frag, `data-plugin="echo"`) {
		t.Fatalf("overview fragment:\n%s", frag)
	}
}

// admin.console.disabled leaves the admin listener to the API alone.
func TestConsoleDisabled(t *testing.T) {
	cfg, err := config.Parse(strings.NewReader(fmt.Sprintf(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
apps:
  - {id: %s, secret: s, verification_token: %s}
admin:
  listen: 127.0.0.1:0
  tokens: [{name: ops, token: %s, role: operator}]
  console: {disabled: true}
`, appID, verifyToken, operatorToken)))
	if err != nil {
		t.Fatal(err)
	}
	core := apptest.Start(t, cfg, nil)
	base := "http://" + core.AdminAddr()
	if code, body := do(t, client(t), http.MethodGet, base+"/", operatorToken, nil); code != http.StatusNotFound || !strings.Contains(body, "no such admin endpoint") {
		t.Fatalf("GET / with the console off: %d %s, want the API's 404", code, body)
	}
	if code, _ := do(t, client(t), http.MethodGet, base+"/v1/plugins", operatorToken, nil); code != http.StatusOK {
		t.Fatalf("GET /v1/plugins with the console off: %d", code)
	}
}
