package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/larkway/larkway/sdk/go/larkway"
	"github.com/larkway/larkway/sdk/go/larkwaytest"
)

// setup returns the plugin on a fresh in-memory state store.
func setup(t *testing.T) (*larkway.Plugin, *larkwaytest.MemoryState) {
	t.Helper()
	p := newPlugin()
	st := larkwaytest.NewMemoryState()
	p.SetStateBackend(st)
	return p, st
}

// cardDoc is the part of a card the tests look at.
type cardDoc struct {
	Config struct {
		UpdateMulti bool `json:"update_multi"`
	} `json:"config"`
	Header struct {
		Template string `json:"template"`
		Title    struct {
			Content string `json:"content"`
		} `json:"title"`
	} `json:"header"`
	Elements []struct {
		Tag  string `json:"tag"`
		Text struct {
			Tag     string `json:"tag"`
			Content string `json:"content"`
		} `json:"text"`
		Actions []struct {
			Tag  string `json:"tag"`
			Text struct {
				Content string `json:"content"`
			} `json:"text"`
			Value buttonValue `json:"value"`
		} `json:"actions"`
	} `json:"elements"`
}

func parseCard(t *testing.T, s string) cardDoc {
	t.Helper()
	var c cardDoc
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		t.Fatalf("card is not JSON: %v\n%s", err, s)
	}
	if !c.Config.UpdateMulti {
		t.Fatalf("card lacks config.update_multi: %s", s)
	}
	return c
}

// buttons returns the card's buttons by label.
func (c cardDoc) buttons() map[string]buttonValue {
	out := map[string]buttonValue{}
	for _, e := range c.Elements {
		for _, a := range e.Actions {
			if a.Tag == "button" {
				out[a.Text.Content] = a.Value
			}
		}
	}
	return out
}

func (c cardDoc) text() string {
	var b strings.Builder
	for _, e := range c.Elements {
		b.WriteString(e.Text.Content + "\n")
	}
	return b.String()
}

// post sends /approve-request and returns the card's button values.
func post(t *testing.T, p *larkway.Plugin, text string) map[string]buttonValue {
	t.Helper()
	out := larkwaytest.Run(t, p, larkwaytest.Message(text, larkwaytest.From("ou_requester")))
	larkwaytest.RequireDone(t, out)
	s := larkwaytest.Summaries(out)
	if len(s) != 1 || s[0].Kind != "reply" || s[0].MsgType != "interactive" {
		t.Fatalf("actions %+v, want one interactive reply", s)
	}
	c := parseCard(t, s[0].ContentJSON)
	b := c.buttons()
	if len(b) != 2 || b["Approve"].Decision != "approve" || b["Reject"].Decision != "reject" || b["Approve"].Request == "" || b["Approve"].Request != b["Reject"].Request {
		t.Fatalf("buttons %+v", b)
	}
	if c.Header.Template != "blue" || !strings.Contains(c.text(), "buy a laptop") || !strings.Contains(c.text(), "<at id=ou_requester></at>") {
		t.Fatalf("pending card %+v", c)
	}
	return b
}

// click clicks a button carrying v on card message om_card as openID.
func click(t *testing.T, p *larkway.Plugin, v any, openID string) larkway.Outcome {
	t.Helper()
	return larkwaytest.Run(t, p, larkwaytest.CardAction("om_card", v, larkwaytest.From(openID)))
}

func stored(t *testing.T, st *larkwaytest.MemoryState, id string) request {
	t.Helper()
	e, ok, _ := st.Get(context.Background(), keyPrefix+id)
	if !ok {
		t.Fatalf("request %s not stored", id)
	}
	var r request
	if err := json.Unmarshal(e.Value, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRequestPostsASharedCardWithTwoButtons(t *testing.T) {
	p, st := setup(t)
	b := post(t, p, "/approve-request buy a laptop")
	r := stored(t, st, b["Approve"].Request)
	if r.Status != statusPending || r.Text != "buy a laptop" || r.Requester != "ou_requester" {
		t.Fatalf("stored %+v", r)
	}
}

func TestRequestWithoutTextExplainsUsage(t *testing.T) {
	p, _ := setup(t)
	larkwaytest.RequireReplyText(t, larkwaytest.Run(t, p, larkwaytest.Message("/approve-request   ")), "Usage: /approve-request")
}

func TestLongRequestTextIsCut(t *testing.T) {
	p, st := setup(t)
	b := post(t, p, "/approve-request buy a laptop "+strings.Repeat("x", 5000))
	if r := stored(t, st, b["Approve"].Request); len([]rune(r.Text)) != maxTextRunes+1 || !strings.HasSuffix(r.Text, "…") {
		t.Fatalf("stored text of %d runes", len([]rune(r.Text)))
	}
}

func TestFirstClickDecidesAndUpdatesTheCard(t *testing.T) {
	for _, tt := range []struct{ button, status, toast, toastType, template, verb string }{
		{"Approve", statusApproved, "Approved.", "success", "green", "Approved by <at id=ou_boss></at>"},
		{"Reject", statusRejected, "Rejected.", "info", "red", "Rejected by <at id=ou_boss></at>"},
	} {
		t.Run(tt.button, func(t *testing.T) {
			p, st := setup(t)
			b := post(t, p, "/approve-request buy a laptop")
			out := click(t, p, b[tt.button], "ou_boss")
			larkwaytest.RequireDone(t, out)
			if out.Card == nil || out.Card.Toast != tt.toast || out.Card.ToastType != tt.toastType || out.Card.CardJSON != "" {
				t.Fatalf("card response %+v", out.Card)
			}
			s := larkwaytest.Summaries(out)
			if len(s) != 1 || s[0].Kind != "update_card" || s[0].Target != "om_card" {
				t.Fatalf("actions %+v, want one update of om_card", s)
			}
			c := parseCard(t, s[0].ContentJSON)
			if len(c.buttons()) != 0 || c.Header.Template != tt.template || !strings.Contains(c.text(), tt.verb) || !strings.Contains(c.text(), "buy a laptop") {
				t.Fatalf("decided card %s", s[0].ContentJSON)
			}
			if r := stored(t, st, b["Approve"].Request); r.Status != tt.status || r.DecidedBy != "ou_boss" {
				t.Fatalf("stored %+v", r)
			}
		})
	}
}

func TestSecondClickDoesNotFlipTheDecision(t *testing.T) {
	p, st := setup(t)
	b := post(t, p, "/approve-request buy a laptop")
	larkwaytest.RequireDone(t, click(t, p, b["Approve"], "ou_boss"))
	for _, button := range []string{"Reject", "Approve"} {
		out := click(t, p, b[button], "ou_other")
		larkwaytest.RequireDone(t, out)
		if out.Card == nil || out.Card.ToastType != "warning" || !strings.Contains(out.Card.Toast, "Already approved") {
			t.Fatalf("second click's toast %+v", out.Card)
		}
		if len(out.Actions) != 0 {
			t.Fatalf("second click updated the card: %+v", larkwaytest.Summaries(out))
		}
	}
	if r := stored(t, st, b["Approve"].Request); r.Status != statusApproved || r.DecidedBy != "ou_boss" {
		t.Fatalf("stored %+v", r)
	}
}

// Many clicks at once (as from several replicas): exactly one decides.
func TestConcurrentClicksDecideOnce(t *testing.T) {
	p, st := setup(t)
	b := post(t, p, "/approve-request buy a laptop")
	const n = 32
	outs := make([]larkway.Outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		// Not wg.Go: the example plugins build with the SDK's minimum Go (1.24).
		wg.Add(1)
		go func() {
			defer wg.Done()
			button := "Approve"
			if i%2 == 1 {
				button = "Reject"
			}
			outs[i] = click(t, p, b[button], "ou_clicker")
		}()
	}
	wg.Wait()
	updates, already := 0, 0
	for _, out := range outs {
		larkwaytest.RequireDone(t, out)
		updates += len(out.Actions)
		if strings.HasPrefix(out.Card.Toast, "Already") {
			already++
		}
	}
	if updates != 1 || already != n-1 {
		t.Fatalf("%d card updates and %d 'already decided' toasts from %d clicks", updates, already, n)
	}
	if r := stored(t, st, b["Approve"].Request); r.Status == statusPending {
		t.Fatalf("stored %+v", r)
	}
}

// racingState lets another writer decide the request between the click's
// read and its compare-and-swap — a click on another replica.
type racingState struct {
	*larkwaytest.MemoryState
	once sync.Once
}

func (r *racingState) CompareAndSwap(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (bool, uint64, error) {
	r.once.Do(func() {
		e, _, _ := r.MemoryState.Get(ctx, key)
		var req request
		_ = json.Unmarshal(e.Value, &req)
		req.Status, req.DecidedBy = statusRejected, "ou_elsewhere"
		b, _ := json.Marshal(req)
		_, _, _ = r.MemoryState.CompareAndSwap(ctx, key, e.Revision, b, ttl)
	})
	return r.MemoryState.CompareAndSwap(ctx, key, expected, value, ttl)
}

func TestLosingTheRaceReportsTheWinner(t *testing.T) {
	p, mem := setup(t)
	b := post(t, p, "/approve-request buy a laptop")
	p.SetStateBackend(&racingState{MemoryState: mem})
	out := click(t, p, b["Approve"], "ou_boss")
	larkwaytest.RequireDone(t, out)
	if !strings.Contains(out.Card.Toast, "Already rejected") || len(out.Actions) != 0 {
		t.Fatalf("toast %q, actions %+v", out.Card.Toast, larkwaytest.Summaries(out))
	}
	if r := stored(t, mem, b["Approve"].Request); r.Status != statusRejected || r.DecidedBy != "ou_elsewhere" {
		t.Fatalf("stored %+v", r)
	}
}

func TestRedeliveredRequestKeepsItsRecord(t *testing.T) {
	p, st := setup(t)
	ev := larkwaytest.Message("/approve-request buy a laptop", larkwaytest.From("ou_requester"))
	larkwaytest.RequireDone(t, larkwaytest.Run(t, p, ev))
	id := "r-" + ev.Message.ID
	larkwaytest.RequireDone(t, click(t, p, buttonValue{Request: id, Decision: "approve"}, "ou_boss"))
	out := larkwaytest.Run(t, p, ev) // the same event again
	larkwaytest.RequireDone(t, out)
	if r := stored(t, st, id); r.Status != statusApproved {
		t.Fatalf("redelivery reset the request: %+v", r)
	}
	if c := parseCard(t, larkwaytest.Summaries(out)[0].ContentJSON); len(c.buttons()) != 0 {
		t.Fatalf("redelivery posted buttons for a decided request")
	}
}

func TestClickOnAnExpiredRequestStillDecidesOnce(t *testing.T) {
	p, st := setup(t)
	v := buttonValue{Request: "r-gone", Decision: "reject"}
	out := click(t, p, v, "ou_boss")
	if out.Card.Toast != "Rejected." || len(out.Actions) != 1 {
		t.Fatalf("first click %+v %+v", out.Card, larkwaytest.Summaries(out))
	}
	if out := click(t, p, v, "ou_boss"); !strings.Contains(out.Card.Toast, "Already rejected") {
		t.Fatalf("second click %+v", out.Card)
	}
	if r := stored(t, st, "r-gone"); r.Status != statusRejected {
		t.Fatalf("stored %+v", r)
	}
}

func TestForeignButtonsGetAnErrorToast(t *testing.T) {
	p, _ := setup(t)
	for _, v := range []any{map[string]string{"foo": "bar"}, buttonValue{Request: "r-1", Decision: "maybe"}, "not an object"} {
		out := click(t, p, v, "ou_boss")
		larkwaytest.RequireDone(t, out)
		if out.Card == nil || out.Card.ToastType != "error" || len(out.Actions) != 0 {
			t.Fatalf("value %v: %+v", v, out.Card)
		}
	}
}

type brokenState struct{ larkwaytest.MemoryState }

var errDown = errors.New("state store down")

func (*brokenState) Get(context.Context, string) (larkway.Entry, bool, error) {
	return larkway.Entry{}, false, errDown
}

func (*brokenState) CompareAndSwap(context.Context, string, uint64, []byte, time.Duration) (bool, uint64, error) {
	return false, 0, errDown
}

func TestStateStoreFailuresAreRetried(t *testing.T) {
	p := newPlugin()
	p.SetStateBackend(&brokenState{})
	if out := larkwaytest.Run(t, p, larkwaytest.Message("/approve-request x")); out.Status != larkway.StatusRetry {
		t.Fatalf("post: %s", out.Status)
	}
	if out := click(t, p, buttonValue{Request: "r-1", Decision: "approve"}, "ou_boss"); out.Status != larkway.StatusRetry {
		t.Fatalf("click: %s", out.Status)
	}
}

func TestWithoutAStateStoreClicksAreRetried(t *testing.T) {
	out := click(t, newPlugin(), buttonValue{Request: "r-1", Decision: "approve"}, "ou_boss")
	if out.Status != larkway.StatusRetry || !strings.Contains(out.Err, "no state store") {
		t.Fatalf("%s %q", out.Status, out.Err)
	}
}

func TestMentionRefusesOddIDs(t *testing.T) {
	if got := mention("ou_abc123"); got != "<at id=ou_abc123></at>" {
		t.Fatal(got)
	}
	if got := mention("all></at><at id=all"); got != "a user" {
		t.Fatal(got)
	}
}
