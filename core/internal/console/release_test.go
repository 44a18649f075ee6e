package console_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/testenv"
)

// variant builds the echovariant test plugin (echo 2.0.0, replying
// "echo2: …") into the stack's plugin directory; its path and sha256.
func (s *stack) variant(t *testing.T) (string, string) {
	t.Helper()
	p := testenv.BuildPlugin(t, "./core/internal/app/testdata/echovariant", s.pluginDir)
	return p, fileSHA256(t, p)
}

func fileSHA256(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// sendTo sends text as the playground's user in chat.
func sendTo(t *testing.T, s *stack, chat, text string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.emuURL+"/playground/send",
		strings.NewReader(url.Values{"chat": {chat}, "text": {text}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("HX-Request", "true")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("playground send: %d", resp.StatusCode)
	}
}

// botSaid reports whether the bot sent a message saying text.
func botSaid(s *stack, text string) bool {
	for _, m := range s.emu.Messages() {
		var c struct{ Text string }
		if json.Unmarshal([]byte(m.Content), &c) == nil && c.Text == text {
			return true
		}
	}
	return false
}

// statCell reads a cell of the release stats table: the row of role, the
// column stat.
func statCell(page, role, stat string) string {
	row := regexp.MustCompile(`(?s)<tr data-role="` + role + `">.*?</tr>`).FindString(page)
	m := regexp.MustCompile(`data-stat="` + stat + `">([^<]*)<`).FindStringSubmatch(row)
	if m == nil {
		return ""
	}
	return m[1]
}

var runningRE = regexp.MustCompile(`id="release-states">[^<]* running`)

// candidateRunning reports whether the page shows the release's candidate
// running on a replica.
func candidateRunning(page string) bool { return runningRE.MatchString(page) }

// releaseTotals reads the release's candidate and stable deliveries from
// the API.
func releaseTotals(t *testing.T, s *stack) (candidate, stable int64) {
	t.Helper()
	code, body := do(t, client(t), http.MethodGet, s.consoleURL+"/v1/plugins/echo/release", viewerToken, nil)
	var v struct {
		Total       struct{ Deliveries int64 } `json:"total"`
		StableTotal struct{ Deliveries int64 } `json:"stable_total"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &v) != nil {
		t.Fatalf("release view: %d %s", code, body)
	}
	return v.Total.Deliveries, v.StableTotal.Deliveries
}

// A canary and then a shadow of echo, started, promoted and stopped from
// the console, with real deliveries: the plugin page shows the canary's
// kind, version, split and each version's stats as the API counts them,
// the overview marks the plugin; after the promotion the last release's
// result; the shadow's records with their differences marked. A viewer
// sees the same page with the forms disabled. Last, a failing canary
// rolled back by its error budget.
func TestReleasesOnPluginPage(t *testing.T) {
	s := startStack(t, false)
	variant, variantSHA := s.variant(t)
	op := client(t)
	post := func(path string, form url.Values) (int, string) {
		t.Helper()
		return do(t, op, http.MethodPost, s.consoleURL+path, operatorToken, form)
	}
	page := func(token string) string {
		t.Helper()
		code, body := do(t, client(t), http.MethodGet, s.consoleURL+"/plugins/echo", token, nil)
		if code != http.StatusOK {
			t.Fatalf("plugin page: %d\n%s", code, body)
		}
		return body
	}

	// No release yet: none shown, promote and abort not offered.
	if p := page(operatorToken); !strings.Contains(p, `id="release-none"`) || strings.Contains(p, `id="op-promote"`) ||
		!strings.Contains(p, `id="op-canary"`) || !strings.Contains(p, `id="op-shadow"`) {
		t.Fatalf("plugin page without a release:\n%s", p)
	}
	// A mistyped form is refused before anything is asked of the API.
	if code, body := post("/plugins/echo/canary", url.Values{"path": {variant}, "sha256": {variantSHA}, "percent": {"lots"}}); code != http.StatusBadRequest ||
		!strings.Contains(body, "percent of chats &#34;lots&#34; is not a number") {
		t.Fatalf("canary with a bad percentage: %d\n%s", code, body)
	}

	canary := url.Values{"path": {variant}, "sha256": {variantSHA}, "chats": {"oc_playground_group"}, "max_error_rate": {"0.5"},
		"promote_after": {"1000"}}
	code, body := post("/plugins/echo/canary", canary)
	if code != http.StatusOK || !strings.Contains(body, `id="confirm"`) || !strings.Contains(body, "Start canary plugin echo?") ||
		!strings.Contains(body, `name="chats" value="oc_playground_group"`) {
		t.Fatalf("canary without confirmation: %d, want the confirmation page\n%s", code, body)
	}
	canary.Set("confirm", "yes")
	if code, body := post("/plugins/echo/canary", canary); code != http.StatusOK || !strings.Contains(body, "Start canary of plugin echo: done.") {
		t.Fatalf("canary: %d\n%s", code, body)
	}
	// The replica applies the desired release by itself, soon after.
	testenv.Eventually(t, 60*time.Second, "the canary never ran on the replica", func() bool { return candidateRunning(page(viewerToken)) })

	// Three messages in the canary's chat, two in another: each version
	// answers its own.
	for i := range 3 {
		sendTo(t, s, "oc_playground_group", fmt.Sprintf("canary %d", i))
	}
	for i := range 2 {
		sendTo(t, s, "oc_playground_p2p", fmt.Sprintf("stable %d", i))
	}
	testenv.Eventually(t, 60*time.Second, "not every message was answered by its version", func() bool {
		return botSaid(s, "echo2: canary 0") && botSaid(s, "echo2: canary 1") && botSaid(s, "echo2: canary 2") &&
			botSaid(s, "echo: stable 0") && botSaid(s, "echo: stable 1")
	})
	testenv.Eventually(t, 60*time.Second, "the release view never counted 3 canary and 2 stable deliveries", func() bool {
		c, st := releaseTotals(t, s)
		return c == 3 && st == 2
	})
	for _, who := range []string{operatorToken, viewerToken} {
		p := page(who)
		for _, want := range []string{`id="release-kind" data-mode="canary">canary<`, `id="release-version">2.0.0<`,
			`id="release-split">chats oc_playground_group<`, `promoted after 1000 deliveries; rolled back above 50.0 % errors`,
			`id="plugin-release">canary chats oc_playground_group<`} {
			if !strings.Contains(p, want) {
				t.Errorf("canary page lacks %q", want)
			}
		}
		for _, c := range []struct{ role, stat, want string }{
			{"canary", "deliveries", "3"}, {"canary", "errors", "0"}, {"canary", "error-rate", "0.0 %"}, {"canary", "retries", "0"},
			{"canary", "dead-letters", "0"}, {"stable", "deliveries", "2"}, {"stable", "errors", "0"},
		} {
			if got := statCell(p, c.role, c.stat); got != c.want {
				t.Errorf("%s %s = %q, want %q", c.role, c.stat, got, c.want)
			}
		}
		if !regexp.MustCompile(`<tr data-role="canary">.*?data-stat="latency">\d+ ms<`).MatchString(p) {
			t.Errorf("canary latency not shown")
		}
		operator := who == operatorToken
		if !strings.Contains(p, `id="op-promote"`) || !strings.Contains(p, `id="op-abort"`) {
			t.Errorf("promote and abort not offered while the canary runs")
		}
		form := regexp.MustCompile(`(?s)id="op-promote".*?</form>`).FindString(p)
		if disabled := strings.Contains(form, "<fieldset disabled"); disabled == operator {
			t.Errorf("promote form disabled = %v for operator = %v", disabled, operator)
		}
		if t.Failed() {
			t.Fatalf("page as %s:\n%s", who, p)
		}
	}
	if code, body := do(t, client(t), http.MethodGet, s.consoleURL+"/", viewerToken, nil); code != http.StatusOK ||
		!strings.Contains(body, `data-release="canary chats oc_playground_group"`) {
		t.Fatalf("overview does not mark the canary: %d\n%s", code, body)
	}

	if code, body := post("/plugins/echo/promote", url.Values{"confirm": {"yes"}}); code != http.StatusOK || !strings.Contains(body, "Promote of plugin echo: done.") {
		t.Fatalf("promote: %d\n%s", code, body)
	}
	testenv.Eventually(t, 60*time.Second, "the page never showed the promotion", func() bool {
		p := page(viewerToken)
		return strings.Contains(p, `id="release-last-result" class="ok">promoted`) && strings.Contains(p, `id="release-none"`) &&
			strings.Contains(p, `id="plugin-version">2.0.0<`)
	})
	if code, body := do(t, client(t), http.MethodGet, s.consoleURL+"/", viewerToken, nil); code != http.StatusOK || strings.Contains(body, "data-release=") {
		t.Fatalf("overview still marks a release: %d\n%s", code, body)
	}

	// A shadow of the old echo beside the promoted one: its replies differ.
	shadowForm := url.Values{"path": {s.echoPath}, "sha256": {fileSHA256(t, s.echoPath)}, "confirm": {"yes"}}
	if code, body := post("/plugins/echo/shadow", shadowForm); code != http.StatusOK || !strings.Contains(body, "Start shadow of plugin echo: done.") {
		t.Fatalf("shadow: %d\n%s", code, body)
	}
	testenv.Eventually(t, 60*time.Second, "the shadow never ran on the replica", func() bool { return candidateRunning(page(viewerToken)) })
	sendTo(t, s, "oc_playground_group", "shadowed hello")
	var p string
	testenv.Eventually(t, 60*time.Second, "the page never showed the shadow's record", func() bool {
		p = page(viewerToken)
		return strings.Contains(p, `data-differs="true"`)
	})
	for _, want := range []string{`id="release-kind" data-mode="shadow">shadow<`, `id="release-version">`, `1 event(s) compared, <strong>1</strong> differ`,
		`<li>action 0 (reply) differs</li>`, `echo: shadowed hello`, `echo2: shadowed hello`, `id="plugin-release">shadow 100 % of chats<`} {
		if !strings.Contains(p, want) {
			t.Errorf("shadow page lacks %q", want)
		}
	}
	if t.Failed() {
		t.Fatalf("shadow page:\n%s", p)
	}
	if !botSaid(s, "echo2: shadowed hello") || botSaid(s, "echo: shadowed hello") {
		t.Fatal("the shadow's reply was sent, or the stable one was not")
	}

	if code, body := post("/plugins/echo/abort", url.Values{"confirm": {"yes"}}); code != http.StatusOK || !strings.Contains(body, "Abort of plugin echo: done.") {
		t.Fatalf("abort: %d\n%s", code, body)
	}
	testenv.Eventually(t, 60*time.Second, "the page never showed the stopped shadow", func() bool {
		p = page(viewerToken)
		return strings.Contains(p, `id="release-last-result" class="">aborted`) && strings.Contains(p, `id="release-none"`) &&
			strings.Contains(p, `data-differs="true"`) // the report stays until the next shadow
	})
	if code, body := post("/plugins/echo/abort", url.Values{"confirm": {"yes"}}); code != http.StatusConflict || !strings.Contains(body, "Abort of plugin echo failed") {
		t.Fatalf("abort without a release: %d, want the API's 409\n%s", code, body)
	}

	// A canary failing every delivery (started through the API: the form
	// sets no environment) is rolled back by its error budget; the page
	// says so, why, and what the candidate did.
	b, err := os.ReadFile(variant)
	if err != nil {
		t.Fatal(err)
	}
	failing := filepath.Join(s.pluginDir, "echovariant-failing")
	if err := os.WriteFile(failing, append(b, "\nfailing\n"...), 0o755); err != nil {
		t.Fatal(err)
	}
	if code, body := apiPost(t, s, "/v1/plugins/echo/canary", map[string]any{"path": failing, "sha256": fileSHA256(t, failing),
		"chats": []string{"oc_playground_group"}, "env": []string{"ECHO_FAIL_PERCENT=100"}, "max_error_rate": 0.1, "min_deliveries": 1}); code != http.StatusOK {
		t.Fatalf("failing canary: %d %s", code, body)
	}
	testenv.Eventually(t, 60*time.Second, "the failing canary never ran on the replica", func() bool { return candidateRunning(page(viewerToken)) })
	sendTo(t, s, "oc_playground_group", "doomed hello")
	testenv.Eventually(t, 60*time.Second, "the page never showed the rollback", func() bool {
		p = page(viewerToken)
		return strings.Contains(p, `id="release-last-result" class="err">rolled_back: error rate`) && strings.Contains(p, `id="release-none"`)
	})
	if !regexp.MustCompile(`<dd>\d+ deliveries, [1-9]\d* errors \(100\.0 %\)`).MatchString(p) {
		t.Fatalf("the rolled-back canary's errors are not shown:\n%s", p)
	}
}

// apiPost posts body as JSON to the admin API as the operator.
func apiPost(t *testing.T, s *stack, path string, body any) (int, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, s.consoleURL+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+operatorToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}
