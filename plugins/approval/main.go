// Command approval is a larkway plugin for one-click approvals:
// "/approve-request <text>" posts a card with Approve and Reject buttons; the
// first click decides. The decision is recorded in the plugin's state store
// with compare-and-swap, so two clicks racing (on any replica) cannot both
// win and a later click cannot flip it. The clicker gets a toast, and the
// card is updated for everyone in the chat (a shared card, update_multi).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/larkway/larkway/sdk/go/larkway"
)

const (
	// keyPrefix prefixes a request's key in the state store.
	keyPrefix = "request:"
	// requestTTL is how long a request and its decision are kept.
	requestTTL = 30 * 24 * time.Hour
	// maxTextRunes bounds the request text shown on the card (Lark cards are
	// at most 30 KB).
	maxTextRunes = 1000
	// casAttempts bounds the read-modify-write loop on the state store.
	casAttempts = 5
)

// Request statuses.
const (
	statusPending  = "pending"
	statusApproved = "approved"
	statusRejected = "rejected"
)

// request is what the state store keeps per approval request.
type request struct {
	ID        string `json:"id"`
	Text      string `json:"text"`
	Requester string `json:"requester,omitempty"` // open_id
	Status    string `json:"status"`
	DecidedBy string `json:"decided_by,omitempty"` // open_id
}

// buttonValue is what each button carries back in its click.
type buttonValue struct {
	Request  string `json:"request"`
	Decision string `json:"decision"` // "approve" or "reject"
}

// errContended means every compare-and-swap attempt lost to another writer;
// the click is retried.
var errContended = errors.New("approval: state store contended")

func newPlugin() *larkway.Plugin {
	p := larkway.New("approval", "1.0.0",
		larkway.WithDescription("approval cards: /approve-request <text>, decided by the first click"),
		larkway.WithActions(larkway.ActionReply, larkway.ActionUpdateCard))
	p.OnCommand("/approve-request", func(ctx context.Context, ev *larkway.Event, cmd larkway.Command) ([]larkway.Action, error) {
		return postRequest(ctx, p.State(), ev, cmd)
	})
	p.OnCardAction(func(ctx context.Context, ev *larkway.Event) (*larkway.CardResponse, []larkway.Action, error) {
		return decide(ctx, p.State(), ev)
	})
	return p
}

// postRequest records a pending request and replies with its card.
func postRequest(ctx context.Context, st *larkway.State, ev *larkway.Event, cmd larkway.Command) ([]larkway.Action, error) {
	text := strings.TrimSpace(cmd.Rest)
	if text == "" {
		return []larkway.Action{larkway.ReplyText("Usage: /approve-request <what needs approving>, e.g. /approve-request buy a laptop for Ada")}, nil
	}
	if r := []rune(text); len(r) > maxTextRunes {
		text = string(r[:maxTextRunes]) + "…"
	}
	// The id derives from the message, so a redelivery of this event posts
	// the same request rather than a second one.
	req := request{ID: "r-" + ev.Message.ID, Text: text, Requester: ev.Sender.OpenID, Status: statusPending}
	b, _ := json.Marshal(req)
	created, _, err := st.CompareAndSwap(ctx, keyPrefix+req.ID, 0, b, requestTTL)
	if err != nil {
		return nil, fmt.Errorf("recording request %s: %w", req.ID, err)
	}
	if !created {
		// Redelivered: show what is stored.
		e, found, err := st.Get(ctx, keyPrefix+req.ID)
		if err != nil {
			return nil, fmt.Errorf("reading request %s: %w", req.ID, err)
		}
		if found {
			_ = json.Unmarshal(e.Value, &req)
		}
	}
	return []larkway.Action{larkway.Reply("interactive", card(req))}, nil
}

// decide records the first decision on a request with compare-and-swap and
// updates the card; any later click only gets a toast saying so.
func decide(ctx context.Context, st *larkway.State, ev *larkway.Event) (*larkway.CardResponse, []larkway.Action, error) {
	var v buttonValue
	_ = json.Unmarshal([]byte(ev.CardAction.ValueJSON), &v)
	if v.Request == "" || (v.Decision != "approve" && v.Decision != "reject") {
		return &larkway.CardResponse{ToastType: "error", Toast: "This is not an approval button."}, nil, nil
	}
	key := keyPrefix + v.Request
	clicker := ev.CardAction.Operator.OpenID
	for range casAttempts {
		e, found, err := st.Get(ctx, key)
		if err != nil {
			return nil, nil, fmt.Errorf("reading request %s: %w", v.Request, err)
		}
		req := request{ID: v.Request, Text: "(the request's text is no longer available)", Status: statusPending}
		if found {
			if err := json.Unmarshal(e.Value, &req); err != nil {
				return nil, nil, larkway.Permanent(fmt.Errorf("decoding request %s: %w", v.Request, err))
			}
		}
		if req.Status != statusPending {
			return &larkway.CardResponse{ToastType: "warning", Toast: alreadyDecided(req)}, nil, nil
		}
		req.Status, req.DecidedBy = statusRejected, clicker
		if v.Decision == "approve" {
			req.Status = statusApproved
		}
		b, _ := json.Marshal(req)
		// Revision 0 (not found) means "must not exist": a request whose
		// record expired is still decided only once.
		swapped, _, err := st.CompareAndSwap(ctx, key, e.Revision, b, requestTTL)
		if err != nil {
			return nil, nil, fmt.Errorf("recording the decision on %s: %w", v.Request, err)
		}
		if !swapped {
			continue // someone decided (or wrote) in between: look again
		}
		toast := &larkway.CardResponse{ToastType: "success", Toast: "Approved."}
		if req.Status == statusRejected {
			toast = &larkway.CardResponse{ToastType: "info", Toast: "Rejected."}
		}
		update := larkway.UpdateCard(ev.CardAction.MessageID, card(req))
		if ev.CardAction.MessageID == "" {
			update = larkway.DelayedCardUpdate("", card(req))
		}
		return toast, []larkway.Action{update}, nil
	}
	return nil, nil, errContended
}

func alreadyDecided(req request) string {
	return fmt.Sprintf("Already %s — this request was decided before your click.", req.Status)
}

// card renders a request as a shared interactive card: with Approve and
// Reject buttons while pending, with the decision afterwards. The request
// text is plain text (never markdown), so it cannot mention anyone.
func card(req request) string {
	title, template := "Approval request", "blue"
	switch req.Status {
	case statusApproved:
		title, template = "Approval request — approved", "green"
	case statusRejected:
		title, template = "Approval request — rejected", "red"
	}
	elements := []any{
		map[string]any{"tag": "div", "text": map[string]any{"tag": "plain_text", "content": req.Text}},
	}
	if req.Requester != "" {
		elements = append(elements, map[string]any{"tag": "div", "text": map[string]any{"tag": "lark_md",
			"content": "Requested by " + mention(req.Requester)}})
	}
	if req.Status == statusPending {
		button := func(label, kind, decision string) map[string]any {
			return map[string]any{"tag": "button", "type": kind,
				"text":  map[string]any{"tag": "plain_text", "content": label},
				"value": buttonValue{Request: req.ID, Decision: decision}}
		}
		elements = append(elements, map[string]any{"tag": "action", "actions": []any{
			button("Approve", "primary", "approve"), button("Reject", "danger", "reject")}})
	} else {
		who := "someone"
		if req.DecidedBy != "" {
			who = mention(req.DecidedBy)
		}
		verb := "Approved"
		if req.Status == statusRejected {
			verb = "Rejected"
		}
		elements = append(elements, map[string]any{"tag": "div", "text": map[string]any{"tag": "lark_md",
			"content": verb + " by " + who}})
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // keep <at id=…></at> readable; the JSON is the same
	_ = enc.Encode(map[string]any{
		// update_multi: a shared card, so an update (PATCH) shows for everyone.
		"config":   map[string]any{"update_multi": true, "wide_screen_mode": true},
		"header":   map[string]any{"template": template, "title": map[string]any{"tag": "plain_text", "content": title}},
		"elements": elements,
	})
	return strings.TrimSuffix(b.String(), "\n")
}

// mention renders an open_id as a card mention. Open ids are Lark's
// (ou_ followed by letters and digits); anything else is shown as text.
func mention(openID string) string {
	for _, r := range openID {
		if !(r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return "a user"
		}
	}
	return "<at id=" + openID + "></at>"
}

func main() { newPlugin().Main() }
