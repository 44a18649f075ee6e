package dispatch

import (
	"context"
	"hash/fnv"
	"slices"
	"sync/atomic"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
)

// Mode is what a route's candidate session does with deliveries.
type Mode string

// Candidate modes.
const (
	// ModeCanary: the candidate takes the deliveries of the chats its
	// Split selects; the stable session takes the rest. Each chat is on
	// exactly one version at a time, so its order holds.
	ModeCanary Mode = "canary"
	// ModeShadow: the candidate gets a copy of each selected delivery after
	// the stable session handled it; its outcome settles nothing and its
	// actions are recorded, never performed.
	ModeShadow Mode = "shadow"
)

// RoleStable labels the stable session's series in the per-version
// metrics, RoleBaseline a replay's instance of the stable version; a
// candidate's role is its Mode.
const (
	RoleStable   = "stable"
	RoleBaseline = "baseline"
)

// Buckets is the resolution of a Split's percentage: a chat's bucket is
// one of Buckets, and a Percent of p selects buckets below p*Buckets/100.
const Buckets = 10000

// Split selects chats (bus keys: the chat id, see envelope.PartitionKey) for
// a candidate: those listed in Chats, and those whose bucket falls below
// Percent. The bucket is a hash of the chat id alone, so every replica
// selects the same chats, and a chat selected at 5 % stays selected at 10 %.
type Split struct {
	Percent float64  `json:"percent,omitempty"`
	Chats   []string `json:"chats,omitempty"`
}

// ChatBucket is chat's bucket in [0, Buckets): FNV-1a, which is the same
// in every process, version and architecture (unlike Go's map hash).
func ChatBucket(chat string) int {
	h := fnv.New64a()
	_, _ = h.Write([]byte(chat))
	return int(h.Sum64() % Buckets)
}

// Has reports whether the split selects chat.
func (s Split) Has(chat string) bool {
	if float64(ChatBucket(chat)) < s.Percent*Buckets/100 {
		return true
	}
	return slices.Contains(s.Chats, chat)
}

// VersionStats count one session's deliveries; a canary's promotion and
// rollback are decided on them (summed over replicas).
type VersionStats struct {
	// Deliveries settled, whatever their outcome.
	Deliveries int64 `json:"deliveries"`
	// Errors are deliveries that did not end done (retries and dead
	// letters included).
	Errors int64 `json:"errors"`
	// Retries are deliveries redelivered (retry, timeout, stream error,
	// action retry).
	Retries     int64 `json:"retries"`
	DeadLetters int64 `json:"dead_letters"`
	// LatencyMS is the total time from delivery to result, in ms.
	LatencyMS int64 `json:"latency_ms"`
}

// ErrorRate is Errors / Deliveries (0 without deliveries).
func (v VersionStats) ErrorRate() float64 {
	if v.Deliveries == 0 {
		return 0
	}
	return float64(v.Errors) / float64(v.Deliveries)
}

// Add sums two stats.
func (v VersionStats) Add(o VersionStats) VersionStats {
	return VersionStats{Deliveries: v.Deliveries + o.Deliveries, Errors: v.Errors + o.Errors, Retries: v.Retries + o.Retries,
		DeadLetters: v.DeadLetters + o.DeadLetters, LatencyMS: v.LatencyMS + o.LatencyMS}
}

type versionCounters struct {
	deliveries, errors, retries, dead, latencyMS atomic.Int64
}

func (c *versionCounters) snapshot() VersionStats {
	return VersionStats{Deliveries: c.deliveries.Load(), Errors: c.errors.Load(), Retries: c.retries.Load(),
		DeadLetters: c.dead.Load(), LatencyMS: c.latencyMS.Load()}
}

// Stats are the session's delivery counts since it was attached.
func (s *Session) Stats() VersionStats { return s.stats.snapshot() }

// Version is the instance's manifest version.
func (s *Session) Version() string { return s.plugin.Manifest().GetVersion() }

// observe counts a settled delivery in the session's stats and its
// version's series.
func (s *Session) observe(out Outcome, latency time.Duration) {
	s.stats.deliveries.Add(1)
	s.stats.latencyMS.Add(latency.Milliseconds())
	vm := s.vm.Load()
	vm.outcomes[out].Inc()
	vm.latency.Observe(latency.Seconds())
	if out == OutcomeDone {
		return
	}
	s.stats.errors.Add(1)
	if out != OutcomeFailed {
		s.stats.retries.Add(1)
	}
}

// AttachCandidate opens p's Handle stream beside the stable session as the
// route's candidate in mode, for the chats split selects. A candidate
// already attached is detached and returned; the caller drains and stops
// it.
func (r *Route) AttachCandidate(ctx context.Context, p Plugin, mode Mode, split Split) (*Session, *Session, error) {
	s, err := r.openAs(ctx, p, string(mode))
	if err != nil {
		return nil, nil, err
	}
	r.mu.Lock()
	prev := r.cand
	r.cand, r.mode, r.split = s, mode, split
	r.changedLocked()
	r.mu.Unlock()
	if prev != nil {
		prev.st.Detach()
	}
	return s, prev, nil
}

// SetSplit changes which chats the candidate gets. A chat that moves does
// so between two of its deliveries (the keyed queue hands a chat's next
// delivery only after the last is done), so its order holds.
func (r *Route) SetSplit(split Split) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.split = split
	r.changedLocked()
}

// Candidate is the candidate session, its mode and split (nil if none).
func (r *Route) Candidate() (*Session, Mode, Split) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cand, r.mode, r.split
}

// DetachCandidate removes the candidate: its chats go back to the stable
// session from their next delivery on. Its in-flight deliveries finish
// (see Session.Drain); those it fails are redelivered, to stable. It
// returns the candidate, or nil.
func (r *Route) DetachCandidate() *Session {
	r.mu.Lock()
	c := r.cand
	r.cand, r.mode, r.split = nil, "", Split{}
	r.changedLocked()
	r.mu.Unlock()
	if c != nil {
		c.st.Detach()
	}
	return c
}

// Promote makes the canary candidate the stable session for every chat and
// returns the previous stable session (nil if none), which the caller
// drains and stops; false if there is no canary.
func (r *Route) Promote() (*Session, bool) {
	r.mu.Lock()
	c := r.cand
	if c == nil || r.mode != ModeCanary {
		r.mu.Unlock()
		return nil, false
	}
	prev := r.cur
	r.cur, r.cand, r.mode, r.split = c, nil, "", Split{}
	c.vm.Store(r.d.metrics.forVersion(r.name, c.Version(), RoleStable))
	r.changedLocked()
	r.mu.Unlock()
	if prev != nil {
		prev.st.Detach()
	}
	return prev, true
}

// changedLocked wakes deliveries waiting for a session; r.mu is held.
func (r *Route) changedLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// pick is the session a delivery goes to: the canary for the chats its
// split selects, else the stable one (either may be nil); and the shadow
// candidate that gets a copy, if any.
func (r *Route) pick(del *bus.Delivery) (s, shadow *Session, changed chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s = r.cur
	if r.cand != nil && r.split.Has(del.Key) {
		if r.mode == ModeCanary {
			s = r.cand
		} else {
			shadow = r.cand
		}
	}
	return s, shadow, r.changed
}
