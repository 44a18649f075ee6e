package dispatch

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/larkway/larkway/core/internal/bus"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Refused actions are logged at most refusalBurst at once and then one per
// refusalEvery, per plugin: a plugin answering every event with forbidden
// actions must not flood the core's log. Every refusal is still counted
// (larkway_action_executions_total) and reported to the plugin; a logged
// line says how many were left out before it.
const (
	refusalBurst = 20
	refusalEvery = time.Second
)

// refusalLog bounds one plugin's refusal lines.
type refusalLog struct {
	mu         sync.Mutex
	lim        *rate.Limiter
	suppressed int
}

func newRefusalLog() *refusalLog {
	return &refusalLog{lim: rate.NewLimiter(rate.Every(refusalEvery), refusalBurst)}
}

// allow reports whether a refusal at now is logged and, if so, how many
// were not since the last one that was.
func (r *refusalLog) allow(now time.Time) (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.lim.AllowN(now, 1) {
		r.suppressed++
		return false, 0
	}
	n := r.suppressed
	r.suppressed = 0
	return true, n
}

// logRefused logs each refused action of a result at warn: its index in the
// actions performed, its kind and the reason the plugin is told.
func (s *Session) logRefused(del *bus.Delivery, ev *pluginv1.Event, id string, actions []*pluginv1.Action, refused []*pluginv1.RefusedAction) {
	now := time.Now()
	for _, r := range refused {
		ok, suppressed := s.r.refusals.allow(now)
		if !ok {
			continue
		}
		kind := "unknown"
		if i := int(r.GetIndex()); i < len(actions) {
			kind = actionKind(actions[i])
		}
		attrs := []any{"delivery_id", id, "event_id", ev.GetEventId(), "index", r.GetIndex(), "kind", kind, "reason", r.GetReason()}
		if suppressed > 0 {
			attrs = append(attrs, "suppressed", suppressed)
		}
		s.logFor(del).Warn("action refused", attrs...)
	}
}

// actionKind names an action by its field in Action's oneof (reply,
// raw_call, …), as larkway_action_executions_total's kind label does.
func actionKind(a *pluginv1.Action) string {
	m := a.ProtoReflect()
	if f := m.WhichOneof(m.Descriptor().Oneofs().ByName("kind")); f != nil {
		return string(f.Name())
	}
	return "unknown"
}
