// Command goplugin is the conformance suite's Go test plugin, built only
// against sdk/go. Its Python twin (../pyplugin/main.py) behaves identically;
// the suite runs the same cases against both through a real core.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/larkway/larkway/sdk/go/larkway"
)

func main() {
	p := larkway.New("conf-go", "1.0.0",
		larkway.WithDescription("conformance test plugin (Go)"),
		larkway.WithActions(larkway.ActionReply, larkway.ActionUpdateCard))

	// Event in → actions out (and the large payload): echo the text.
	p.OnMessage(func(_ context.Context, ev *larkway.Event) ([]larkway.Action, error) {
		return []larkway.Action{larkway.ReplyText("echo: " + ev.Message.Text)}, nil
	})

	// Command parsing: reply with what the SDK parsed.
	p.OnCommand("/deploy", func(_ context.Context, _ *larkway.Event, cmd larkway.Command) ([]larkway.Action, error) {
		args := cmd.Args
		if args == nil {
			args = []string{}
		}
		b, err := json.Marshal(map[string]any{"name": cmd.Name, "args": args, "flags": cmd.Flags, "rest": cmd.Rest})
		if err != nil {
			return nil, larkway.Permanent(err)
		}
		return []larkway.Action{larkway.ReplyText(string(b))}, nil
	})

	// Card callback: post a card; a click gets a toast.
	p.OnCommand("/card", func(context.Context, *larkway.Event, larkway.Command) ([]larkway.Action, error) {
		return []larkway.Action{larkway.Reply("interactive", `{"config":{"update_multi":true},"elements":[`+
			`{"tag":"action","actions":[{"tag":"button","text":{"tag":"plain_text","content":"Poke"},"value":{"action":"poke"}}]}]}`)}, nil
	})
	p.OnCardAction(func(_ context.Context, ev *larkway.Event) (*larkway.CardResponse, []larkway.Action, error) {
		var v struct {
			Action string `json:"action"`
		}
		if err := json.Unmarshal([]byte(ev.CardAction.ValueJSON), &v); err != nil || v.Action != "poke" {
			return &larkway.CardResponse{ToastType: "error", Toast: "unexpected value " + ev.CardAction.ValueJSON}, nil, nil
		}
		return &larkway.CardResponse{ToastType: "success", Toast: "poked by " + ev.CardAction.Operator.OpenID}, nil, nil
	})

	// Retry result: attempt 1 asks for a retry, attempt 2 succeeds.
	p.OnCommand("/flaky", func(_ context.Context, ev *larkway.Event, _ larkway.Command) ([]larkway.Action, error) {
		if ev.Attempt < 2 {
			return nil, larkway.RetryAfter(fmt.Errorf("flaky: failing attempt %d", ev.Attempt), 100*time.Millisecond)
		}
		return []larkway.Action{larkway.ReplyText("flaky: ok on attempt " + strconv.Itoa(ev.Attempt))}, nil
	})

	// Deadline exceeded: attempt 1 overruns its deadline, ignoring it (its
	// late result must be dropped); attempt 2 answers at once.
	p.OnCommand("/slow", func(ctx context.Context, ev *larkway.Event, _ larkway.Command) ([]larkway.Action, error) {
		if ev.Attempt < 2 {
			dl, _ := ctx.Deadline()
			time.Sleep(time.Until(dl) + 1500*time.Millisecond)
			p.Logger().Info("slow: late attempt finished", "attempt", ev.Attempt)
			return []larkway.Action{larkway.ReplyText("slow: late attempt " + strconv.Itoa(ev.Attempt))}, nil
		}
		return []larkway.Action{larkway.ReplyText("slow: ok on attempt " + strconv.Itoa(ev.Attempt))}, nil
	})

	// State round trip: a per-chat counter, incremented with compare-and-swap.
	p.OnCommand("/count", func(ctx context.Context, ev *larkway.Event, _ larkway.Command) ([]larkway.Action, error) {
		key := "count:" + ev.ChatID
		for range 10 {
			e, _, err := p.State().Get(ctx, key)
			if err != nil {
				return nil, err
			}
			n, _ := strconv.Atoi(string(e.Value))
			n++
			ok, _, err := p.State().CompareAndSwap(ctx, key, e.Revision, []byte(strconv.Itoa(n)), 0)
			if err != nil {
				return nil, err
			}
			if ok {
				return []larkway.Action{larkway.ReplyText("count: " + strconv.Itoa(n))}, nil
			}
		}
		return nil, errors.New("state store contended")
	})
	p.Main()
}
