package conformance_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
)

// The approval plugin end to end, through a real core: the request posts a
// shared card; the first click gets its toast back in the callback's HTTP
// response and updates the card for everyone (PATCH); a second click cannot
// flip the decision. Each step produces exactly one message or update.
func TestApprovalEndToEnd(t *testing.T) {
	t.Parallel()
	bin := testenv.BuildPlugin(t, "./plugins/approval", t.TempDir())
	s := startStack(t, fmt.Sprintf("  - {name: approval, path: %q}", bin), "")
	const chat = "oc_approval"

	// 1. The request: exactly one message, an interactive shared card.
	s.send(t, "om_req", chat, "/approve-request buy a laptop for Ada")
	card := s.awaitReply(t, "om_req")
	if card.MsgType != "interactive" {
		t.Fatalf("reply %s %s, want a card", card.MsgType, card.Content)
	}
	var doc struct {
		Config struct {
			UpdateMulti bool `json:"update_multi"`
		} `json:"config"`
	}
	if err := json.Unmarshal([]byte(card.Content), &doc); err != nil || !doc.Config.UpdateMulti {
		t.Fatalf("card is not shared (config.update_multi): %s", card.Content)
	}
	buttons := map[string]json.RawMessage{}
	for _, v := range buttonValues(t, card.Content) {
		var val struct {
			Decision string `json:"decision"`
			Plugin   string `json:"_larkway_plugin"`
		}
		_ = json.Unmarshal(v, &val)
		if val.Plugin != "approval" {
			t.Fatalf("button value %s is not tagged for the approval plugin", v)
		}
		buttons[val.Decision] = v
	}
	if len(buttons) != 2 || buttons["approve"] == nil || buttons["reject"] == nil {
		t.Fatalf("card buttons %v, want approve and reject", buttons)
	}
	if m, u := len(s.emu.Messages()), len(s.emu.Updates()); m != 1 || u != 0 {
		t.Fatalf("after the request: %d messages, %d updates; want 1 and 0", m, u)
	}

	// 2. The first click: the toast comes back in the HTTP response, within
	// the card budget, and the card is PATCHed once.
	click := func(eventID, decision, operator string) (string, time.Duration) {
		t.Helper()
		token := s.emu.IssueCardToken(card.MessageID)
		code, body, took := s.post(t, cardEvent(s.appID, eventID, token, card.MessageID, chat, operator, buttons[decision]))
		if code != http.StatusOK {
			t.Fatalf("callback answered %d %s", code, body)
		}
		// A toast in body (checked by the caller) proves the answer came
		// within ingest.card_budget: past it the answer is {}. The time
		// itself depends on the machine and is not gated.
		return body, took
	}
	body, took := click("ev_click_1", "approve", "ou_boss")
	if want := `{"toast":{"content":"Approved.","type":"success"}}`; body != want {
		t.Fatalf("first click answered %s after %s, want %s", body, took, want)
	}
	testenv.Eventually(t, 30*time.Second, "the card was never updated", func() bool { return len(s.emu.Updates()) > 0 })
	upd := s.emu.Updates()[0]
	if c := plainJSON(t, upd.Card); upd.Kind != "patch" || upd.MessageID != card.MessageID || !strings.Contains(c, "Approved by <at id=ou_boss></at>") ||
		len(buttonValues(t, c)) != 0 || !strings.Contains(c, `"update_multi":true`) {
		t.Fatalf("update %+v, want a PATCH of the card saying approved, without buttons", upd)
	}

	// 3. A second click cannot flip it: a toast saying so, nothing else.
	body, _ = click("ev_click_2", "reject", "ou_other")
	var resp struct {
		Toast struct{ Type, Content string } `json:"toast"`
		Card  json.RawMessage                `json:"card"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil || resp.Toast.Type != "warning" ||
		!strings.Contains(resp.Toast.Content, "Already approved") || resp.Card != nil {
		t.Fatalf("second click answered %s", body)
	}
	// The chat's events are handled in order: once a later request's card
	// is there, the second click's actions (none) are done too.
	s.send(t, "om_req_2", chat, "/approve-request a second one")
	s.awaitReply(t, "om_req_2")
	if err := s.stop(); err != nil {
		t.Fatalf("core stopped with %v", err)
	}
	if m, u := s.emu.Messages(), s.emu.Updates(); len(m) != 2 || len(u) != 1 {
		t.Fatalf("%d messages and %d updates in all, want 2 and 1: %+v %+v", len(m), len(u), m, u)
	}
	for _, c := range s.emu.Calls() {
		if c.API == larkemu.APIPatch && c.Status != http.StatusOK {
			t.Errorf("PATCH answered %d (code %d)", c.Status, c.Code)
		}
	}
}

// plainJSON re-encodes a JSON document without HTML escaping, so tests can
// look for "<at id=…>" however the card was encoded.
func plainJSON(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, s)
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return b.String()
}
