package larkway

import (
	"context"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Status classes an outcome as the core sees it.
type Status string

// Outcome statuses.
const (
	StatusDone   Status = "done"
	StatusRetry  Status = "retry"
	StatusFailed Status = "failed"
)

// Outcome is what handling one event produced.
type Outcome struct {
	Status  Status
	Actions []Action
	Card    *CardResponse
	// Err is the handler's error text for retry and failed.
	Err string
}

// HandleEvent routes ev to its handler in-process, exactly as a delivery
// from the core would be, and returns the outcome. It is what test kits use;
// the core reaches the same code through the Handle stream.
func (p *Plugin) HandleEvent(ctx context.Context, ev *Event) Outcome {
	res := p.handle(ctx, ev)
	out := Outcome{Err: res.GetError()}
	switch res.GetOutcome() {
	case pluginv1.Outcome_OUTCOME_DONE:
		out.Status = StatusDone
	case pluginv1.Outcome_OUTCOME_RETRY:
		out.Status = StatusRetry
	default:
		out.Status = StatusFailed
	}
	for _, a := range res.GetActions() {
		out.Actions = append(out.Actions, Action{a})
	}
	if cr := res.GetCardResponse(); cr != nil {
		c := &CardResponse{CardJSON: cr.GetCardJson()}
		if t := cr.GetToast(); t != nil {
			c.Toast = t.GetContent()
			switch t.GetType() {
			case pluginv1.ToastType_TOAST_TYPE_SUCCESS:
				c.ToastType = "success"
			case pluginv1.ToastType_TOAST_TYPE_WARNING:
				c.ToastType = "warning"
			case pluginv1.ToastType_TOAST_TYPE_ERROR:
				c.ToastType = "error"
			default:
				c.ToastType = "info"
			}
		}
		out.Card = c
	}
	return out
}
