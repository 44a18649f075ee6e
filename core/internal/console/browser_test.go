package console_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
)

// The console in a real browser (Debian's Chromium, headless): a refused
// login, a login, the overview listing the echo plugin, a swap from the
// plugin page through its confirmation, a dead-letter replay whose event
// the echo plugin then answers, the live tail, and a canary started from
// the plugin page with its stats. Screenshots go to
// docs/img/ for the README.
func TestConsoleInBrowser(t *testing.T) {
	s := startStack(t, true)
	ctx := browser(t)

	var msg string
	run(t, ctx, "a refused login",
		chromedp.Navigate(s.consoleURL+"/"),
		chromedp.WaitVisible("#token", chromedp.ByID),
		chromedp.SendKeys("#token", "not-an-admin-token", chromedp.ByID),
		chromedp.Submit("#token", chromedp.ByID),
		chromedp.WaitVisible("#login-error", chromedp.ByID),
		chromedp.Text("#login-error", &msg, chromedp.ByID),
	)
	if !strings.Contains(msg, "Login refused") {
		t.Fatalf("refused login says %q", msg)
	}
	screenshot(t, ctx, "console-login-refused")

	var who, row string
	run(t, ctx, "logging in and seeing the overview",
		chromedp.SendKeys("#token", operatorToken, chromedp.ByID),
		chromedp.Submit("#token", chromedp.ByID),
		chromedp.WaitVisible(`#plugins tr[data-plugin="echo"]`, chromedp.ByQuery),
		chromedp.Text("#who", &who, chromedp.ByID),
		chromedp.Text(`#plugins tr[data-plugin="echo"]`, &row, chromedp.ByQuery),
	)
	if who != "token:ops (operator)" || !strings.Contains(row, "serving") || !strings.Contains(row, "1/1 serving") {
		t.Fatalf("overview: who %q, echo row %q", who, row)
	}
	screenshot(t, ctx, "console-overview")
	// htmx (embedded, allowed by the page's CSP) refreshes the live part in
	// place: a mark on the old element disappears with it.
	run(t, ctx, "seeing the overview refresh",
		chromedp.Evaluate(`document.getElementById("live").dataset.old = "1"`, nil),
		chromedp.WaitNotPresent(`#live[data-old="1"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#plugins tr[data-plugin="echo"]`, chromedp.ByQuery),
	)

	// A swap to a second build of echo, confirmed, and its result.
	path, sha := s.newVersion(t)
	var result string
	run(t, ctx, "opening the plugin page",
		chromedp.Navigate(s.consoleURL+"/plugins/echo"),
		chromedp.WaitVisible("#op-swap", chromedp.ByID),
		chromedp.SetValue("#echo-swap-path", path, chromedp.ByID),
		chromedp.SetValue("#echo-swap-sha256", sha, chromedp.ByID),
	)
	screenshot(t, ctx, "console-plugin")
	run(t, ctx, "swapping",
		chromedp.Click("#op-swap button", chromedp.ByQuery),
		chromedp.WaitVisible("#confirm", chromedp.ByID),
		chromedp.Click("#confirm button", chromedp.ByQuery),
		chromedp.WaitVisible("#result", chromedp.ByID),
		chromedp.Text("#result", &result, chromedp.ByID),
	)
	if result != "Swap of plugin echo: done." {
		t.Fatalf("swap result %q", result)
	}
	screenshot(t, ctx, "console-swap-result")
	if code, body := do(t, client(t), http.MethodGet, s.consoleURL+"/v1/plugins/echo", viewerToken, nil); code != http.StatusOK ||
		!strings.Contains(body, `"path": "`+path+`"`) || !strings.Contains(body, sha) {
		t.Fatalf("after the swap the API shows %d %s", code, body)
	}

	// A dead letter of echo, replayed from the list: echo then answers it.
	s.addDeadLetter(t, "dlq-test-1", "om_dlq_1", "replayed hello")
	run(t, ctx, "listing dead letters",
		chromedp.Navigate(s.consoleURL+"/dlq/echo"),
		chromedp.WaitVisible(`#dlq tr[data-id="dlq-test-1"]`, chromedp.ByQuery),
	)
	screenshot(t, ctx, "console-dlq")
	run(t, ctx, "replaying the dead letter",
		chromedp.Click(`#dlq tr[data-id="dlq-test-1"] button`, chromedp.ByQuery),
		chromedp.WaitVisible("#result", chromedp.ByID),
		chromedp.Text("#result", &result, chromedp.ByID),
	)
	if result != "Replay of 1 dead letter(s) of echo: done." {
		t.Fatalf("replay result %q", result)
	}
	testenv.Eventually(t, 30*time.Second, "echo never answered the replayed event", func() bool {
		return len(replies(s.emu, "om_dlq_1", "echo: replayed hello")) > 0
	})
	if n := s.deadLetters(t); n != 0 {
		t.Fatalf("%d dead letters left after the replay", n)
	}

	// The live tail shows a message and echo's answer as they happen.
	run(t, ctx, "opening the live tail",
		chromedp.Navigate(s.consoleURL+"/tail?chat=oc_playground_group"),
		chromedp.WaitVisible(`//p[@id="tail-status" and starts-with(., "Live")]`, chromedp.BySearch),
	)
	postPlayground(t, s, "hello tail")
	run(t, ctx, "seeing echo's reply in the tail",
		chromedp.WaitVisible(`#tail li.event`, chromedp.ByQuery),
		chromedp.WaitVisible(`#tail li.action`, chromedp.ByQuery),
	)
	screenshot(t, ctx, "console-tail")

	// A canary of the echo variant for the group chat, started from the
	// plugin page; once it answered a message, the page shows its stats.
	variant, variantSHA := s.variant(t)
	run(t, ctx, "starting a canary",
		chromedp.Navigate(s.consoleURL+"/plugins/echo"),
		chromedp.WaitVisible("#op-canary", chromedp.ByID),
		chromedp.SetValue("#echo-canary-path", variant, chromedp.ByID),
		chromedp.SetValue("#echo-canary-sha256", variantSHA, chromedp.ByID),
		chromedp.SetValue("#echo-canary-chats", "oc_playground_group", chromedp.ByID),
		chromedp.SetValue("#echo-canary-promote_after", "1000", chromedp.ByID),
		chromedp.Click("#op-canary button", chromedp.ByQuery),
		chromedp.WaitVisible("#confirm", chromedp.ByID),
		chromedp.Click("#confirm button", chromedp.ByQuery),
		chromedp.WaitVisible("#result", chromedp.ByID),
		chromedp.Text("#result", &result, chromedp.ByID),
	)
	if result != "Start canary of plugin echo: done." {
		t.Fatalf("canary result %q", result)
	}
	testenv.Eventually(t, 60*time.Second, "the canary never ran on the replica", func() bool {
		_, body := do(t, client(t), http.MethodGet, s.consoleURL+"/plugins/echo", viewerToken, nil)
		return candidateRunning(body)
	})
	postPlayground(t, s, "hello canary")
	testenv.Eventually(t, 60*time.Second, "the release view never counted the canary's delivery", func() bool {
		c, _ := releaseTotals(t, s)
		return c == 1
	})
	var deliveries string
	run(t, ctx, "seeing the canary's stats",
		chromedp.Navigate(s.consoleURL+"/plugins/echo"),
		chromedp.WaitVisible("#release-stats", chromedp.ByID),
		chromedp.Text(`#release-stats tr[data-role="canary"] td[data-stat="deliveries"]`, &deliveries, chromedp.ByQuery),
	)
	if deliveries != "1" {
		t.Fatalf("canary deliveries on the page %q, want 1", deliveries)
	}
	if !botSaid(s, "echo2: hello canary") {
		t.Fatal("the canary did not answer the group chat")
	}
	screenshot(t, ctx, "console-canary")
}

// The playground in a real browser: "hello" in the group chat gets echo's
// reply; "/approve-request" gets the approval card, rendered from its
// JSON, whose Approve button sends a signed card callback through the
// core; the card then shows its approved state in place.
func TestPlaygroundInBrowser(t *testing.T) {
	s := startStack(t, false)
	ctx := browser(t)

	run(t, ctx, "saying hello",
		chromedp.Navigate(s.emuURL+"/playground"),
		chromedp.WaitVisible("#text", chromedp.ByID),
		// By keyboard: Enter sends.
		chromedp.SendKeys("#text", "hello"+kb.Enter, chromedp.ByID),
		chromedp.WaitVisible(`//article[@data-from="bot"]//div[contains(@class, "text") and normalize-space(.)="echo: hello"]`, chromedp.BySearch),
	)
	screenshot(t, ctx, "playground-echo")

	run(t, ctx, "requesting an approval",
		chromedp.SendKeys("#text", "/approve-request buy a laptop for Ada", chromedp.ByID),
		chromedp.Click("#send", chromedp.ByID),
		chromedp.WaitVisible(`//div[@data-card]//button[normalize-space(.)="Approve"]`, chromedp.BySearch),
		// Echo answers too; once its reply is in, the conversation stops
		// changing (a poll then swaps nothing) and the click lands.
		chromedp.WaitVisible(`//article[@data-from="bot"]//div[contains(@class, "text") and normalize-space(.)="echo: /approve-request buy a laptop for Ada"]`, chromedp.BySearch),
	)
	var header string
	run(t, ctx, "reading the card", chromedp.Text(`div[data-card] .card-header`, &header, chromedp.ByQuery))
	if header != "Approval request" {
		t.Fatalf("card header %q", header)
	}
	screenshot(t, ctx, "playground-approval-card")

	run(t, ctx, "approving",
		chromedp.Click(`//div[@data-card]//button[normalize-space(.)="Approve"]`, chromedp.BySearch),
		chromedp.WaitVisible(`//div[@data-card]//div[contains(@class, "card-header") and normalize-space(.)="Approval request — approved"]`, chromedp.BySearch),
		chromedp.WaitVisible(`//div[contains(@class, "toast") and normalize-space(.)="Approved."]`, chromedp.BySearch),
	)
	var buttons int
	run(t, ctx, "counting buttons left", chromedp.Evaluate(`document.querySelectorAll("div[data-card] button").length`, &buttons))
	if buttons != 0 {
		t.Fatalf("%d buttons left on the approved card", buttons)
	}
	screenshot(t, ctx, "playground-approval-approved")
	// The card was updated through the Lark API (a PATCH), not only in the
	// page: the core executed the plugin's update.
	if u := s.emu.Updates(); len(u) != 1 || !strings.Contains(u[0].Card, "approved") {
		t.Fatalf("emulator card updates %+v, want one saying approved", u)
	}
}

// replies are the bot's text replies to parent with text.
func replies(emu *larkemu.Emulator, parent, text string) []larkemu.Message {
	var out []larkemu.Message
	for _, m := range emu.Messages() {
		var c struct{ Text string }
		if m.ParentID == parent && json.Unmarshal([]byte(m.Content), &c) == nil && c.Text == text {
			out = append(out, m)
		}
	}
	return out
}

// postPlayground sends a message as the playground's user in its group chat.
func postPlayground(t *testing.T, s *stack, text string) {
	t.Helper()
	sendTo(t, s, "oc_playground_group", text)
}
