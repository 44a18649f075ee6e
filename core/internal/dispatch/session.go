package dispatch

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/larkway/larkway/core/internal/dispatch/match"
	"github.com/larkway/larkway/core/internal/dispatch/stream"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Session is one plugin instance attached to a route: its stream, and
// what the route's pipeline needs to know of the instance.
type Session struct {
	d       *Dispatcher
	r       *Route
	plugin  Plugin
	name    string
	matcher *match.Matcher
	st      transport
	// vm are the version's series (role stable, canary or shadow; a
	// promoted canary's become stable), stats what decides a canary.
	vm    atomic.Pointer[versionMetrics]
	stats versionCounters
}

// open opens the instance's Handle stream. The stream lives until Drain or
// Close, independent of ctx, so in-flight deliveries can finish on
// shutdown.
func (r *Route) open(ctx context.Context, p Plugin) (*Session, error) {
	return r.openAs(ctx, p, RoleStable)
}

// openAs opens a session in role (stable, canary, shadow).
func (r *Route) openAs(ctx context.Context, p Plugin, role string) (*Session, error) {
	if got := p.Manifest().GetName(); got != r.name {
		return nil, fmt.Errorf("attaching to route %s: plugin describes itself as %q", r.name, got)
	}
	m := p.Manifest()
	mt, err := match.New(m)
	if err != nil {
		return nil, fmt.Errorf("opening session for %s: %w", m.GetName(), err)
	}
	sm := r.m.stream
	if role == string(ModeShadow) || role == RoleBaseline {
		// Copies, not the plugin's deliveries: counted per version only.
		sm = stream.Metrics{}
	}
	st, err := r.openTransport(ctx, p, stream.Options{Name: m.GetName(), Deadline: r.d.cfg.Deadline,
		MaxInFlight: maxInFlight(m, r.d.cfg.MaxInFlight), Batches: m.GetAcceptsDeliveryBatches(), Metrics: sm})
	if err != nil {
		return nil, err
	}
	s := &Session{d: r.d, r: r, plugin: p, name: m.GetName(), matcher: mt, st: st}
	s.vm.Store(r.d.metrics.forVersion(r.name, m.GetVersion(), role))
	return s, nil
}

// maxInFlight is the manifest's max_in_flight, else the core default (at
// least 1).
func maxInFlight(m *pluginv1.Manifest, core int) int {
	if n := int(m.GetMaxInFlight()); n > 0 {
		return n
	}
	return max(core, 1)
}

// Plugin is the instance behind the session.
func (s *Session) Plugin() Plugin { return s.plugin }

// Broken is closed when the stream fails (the process died or hung up).
func (s *Session) Broken() <-chan struct{} { return s.st.Broken() }

// Err is why the stream broke.
func (s *Session) Err() error { return s.st.Err() }

// Active is the number of deliveries in flight on this session.
func (s *Session) Active() int { return s.st.Active() }

// Drain waits (bounded by ctx) until a detached session's in-flight
// deliveries are finished, then closes the stream. It returns ctx's error if
// deliveries were still in flight; those are nacked by their workers when the
// stream closes, so nothing is lost.
func (s *Session) Drain(ctx context.Context) error { return s.st.Drain(ctx) }

// Close ends the stream at once; deliveries still waiting are nacked.
// It is idempotent.
func (s *Session) Close() { s.st.Close() }
