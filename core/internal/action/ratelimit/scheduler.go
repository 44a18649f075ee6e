package ratelimit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Priority orders actions waiting for the same rate limits.
type Priority int

const (
	// PriorityHigh: replies to a person and card follow-ups.
	PriorityHigh Priority = iota
	// PriorityNormal: reactions and raw calls.
	PriorityNormal
	// PriorityLow: broadcasts — sends to chats and users other than the
	// event's.
	PriorityLow
)

func (p Priority) String() string {
	switch p {
	case PriorityHigh:
		return "high"
	case PriorityNormal:
		return "normal"
	}
	return "low"
}

// ErrUnavailable classes a failure of the rate limiter's store (Redis
// down); it comes with the context error of a wait that ran out while the
// store failed. Retryable: the call was not made.
var ErrUnavailable = errors.New("rate limiter unavailable")

// ErrClosed is returned by Wait after Close, and to the calls waiting when
// it is called.
var ErrClosed = errors.New("rate limiter closed")

// Ticket is what a call needs from the limiter.
type Ticket struct {
	// App is the Lark app ID, API the endpoint (lark.API*).
	App, API string
	// Target is the chat, user or card scope (ChatScope, UserScope,
	// CardScope), or empty.
	Target   string
	Priority Priority
}

// ChatScope is the target scope of messages into a chat, or "" for no
// chat.
func ChatScope(chatID string) string {
	if chatID == "" {
		return ""
	}
	return "chat:" + chatID
}

// UserScope is the target scope of messages to a user, by receive ID type
// (open_id, user_id, union_id).
func UserScope(idType, id string) string { return "user:" + idType + ":" + id }

// CardScope is the target scope of updates to a card message.
func CardScope(messageID string) string { return "message:" + messageID }

// APIScope is the scope of an app's API — both its windows — for Block.
func APIScope(app, api string) string { return "app:" + app + ":" + api }

// Deps are a Scheduler's collaborators.
type Deps struct {
	// Redis shares the limits and blocks with every replica; nil keeps them
	// in the process (one replica only).
	Redis redis.UniversalClient
	// KeyPrefix prefixes the Redis keys: <prefix>{rl}:<scope> and
	// <prefix>{rl}:block:<scope>.
	KeyPrefix string
	// Logger (nil: discarded).
	Logger *slog.Logger
	// Registerer gets the larkway_action_ratelimit_wait_seconds and
	// larkway_action_ratelimit_queue_depth metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Scheduler makes calls wait, in priority order, until every rate limit
// they are under admits them. Each app has one queue, served by one pump
// goroutine that asks the rateStore for slots.
//
// Waiters for the same API and target form a lane, in priority order then
// oldest first: they need the same slots, so only a lane's head is ever
// considered. The pump walks the lane heads from the highest priority down,
// oldest first. A head whose scope is known to be full (the store said when
// it frees) is skipped, so a hot chat does not hold up the others; but the
// chat, user or card of a skipped head is reserved for it, so a
// lower-priority call of another API cannot overtake it there. When nothing
// can go, the pump sleeps until the earliest scope frees or a new waiter
// arrives.
//
// Across replicas, priority works through the shared limits themselves:
// an app's API limits hold back a few burst slots (appHeadroom) that only
// more urgent calls may use — higher priority, or a target that is its own
// bottleneck — so when the app is saturated those calls get the next slot
// whichever replica they wait in. A target's limit (5/s) is too small to
// hold anything back; there, replicas compete as equals.
//
// When the store fails, calls keep waiting (their contexts bound the wait)
// and the pump retries with backoff: limits are never skipped.
type Scheduler struct {
	store   rateStore
	limits  Limits
	log     *slog.Logger
	metrics *metrics
	ctx     context.Context // cancelled by Close: ends the pumps' store calls
	cancel  context.CancelFunc

	mu     sync.Mutex
	queues map[string]*appQueue
	seq    uint64
	closed bool
	wg     sync.WaitGroup
}

type appQueue struct {
	app   string
	lanes map[string]*lane // by api and target; guarded by Scheduler.mu
	n     int              // waiters in all lanes
	wake  chan struct{}
	// storeErr is the store's last failure, when it happened within
	// storeErrFresh; guarded by Scheduler.mu.
	storeErr   error
	storeErrAt time.Time
}

// storeErrFresh is how long a store failure explains a wait that ran out.
const storeErrFresh = 10 * time.Second

type lane struct {
	waiters []*waiter // sorted by (priority, seq)
}

type waiter struct {
	priority Priority
	seq      uint64
	lane     string
	scopes   []scope
	urgent   []scope    // scopes when the target is the bottleneck
	target   string     // the target scope's key, or ""
	done     chan error // buffered; written once, under Scheduler.mu

	// appInterval and targetInterval are the emission intervals of the
	// tightest app scope and of the target scope.
	appInterval, targetInterval time.Duration
}

// New returns a scheduler under limits (zero fields take DefaultLimits'
// values; the caller validates them with Limits.Validate). It does no I/O
// and starts no goroutines: each app's queue starts with its first call.
func New(limits Limits, deps Deps) *Scheduler {
	var store rateStore = newMemoryRateStore()
	if deps.Redis != nil {
		store = newRedisRateStore(deps.Redis, deps.KeyPrefix)
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return newScheduler(store, limits.WithDefaults(), logger, newMetrics(deps.Registerer))
}

func newScheduler(store rateStore, limits Limits, log *slog.Logger, m *metrics) *Scheduler {
	ctx, cancel := context.WithCancel(context.Background())
	return &Scheduler{store: store, limits: limits, log: log, metrics: m, ctx: ctx, cancel: cancel, queues: make(map[string]*appQueue)}
}

// appHeadroom is how many burst slots of an app's API limits are held back
// for urgent calls (see gcra): up to 2 for priority, 1 for a call whose
// chat, user or card is the bottleneck.
const appHeadroom = 3

func urgency(p Priority) int {
	switch p {
	case PriorityHigh:
		return 2
	case PriorityNormal:
		return 1
	}
	return 0
}

// scopes lists the limits a call is under: its app's API per second and per
// minute, then its target's. bottleneck adds to a call's urgency when its
// target, not the app, limits it: that target's slots come seldom and are
// lost when not used on time, so such a call should win the next app slot
// — in any replica, since urgency works through the shared GCRA state.
func (s *Scheduler) scopes(t Ticket, bottleneck bool) []scope {
	u := urgency(t.Priority)
	if bottleneck {
		u++
	}
	api := APIScope(t.App, t.API)
	out := []scope{
		newScope(api+":s", api, gcra(s.limits.AppPerSecond, s.limits.Margin, appHeadroom, u)),
		newScope(api+":m", api, gcra(s.limits.AppPerMinute, s.limits.Margin, appHeadroom, u)),
	}
	if t.Target != "" {
		var l Limit
		switch {
		case hasPrefix(t.Target, "chat:"):
			l = s.limits.PerChat
		case hasPrefix(t.Target, "user:"):
			l = s.limits.PerUser
		default:
			l = s.limits.PerMessageUpdate
		}
		// Targets allow a handful a second: no headroom to spare.
		out = append(out, newScope(t.Target, t.Target, gcra(l, s.limits.Margin, 0, 0)))
	}
	return out
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// Wait blocks until t may be sent, ctx ends (its error, with
// ErrUnavailable if the store was failing) or the scheduler closes
// (ErrClosed).
func (s *Scheduler) Wait(ctx context.Context, t Ticket) error {
	if s.limits.Disabled {
		return nil
	}
	w := &waiter{priority: t.Priority, lane: t.API + "|" + t.Target, scopes: s.scopes(t, false), target: t.Target, done: make(chan error, 1)}
	for _, sc := range w.scopes[:2] {
		w.appInterval = max(w.appInterval, sc.interval())
	}
	if t.Target != "" {
		w.urgent = s.scopes(t, true)
		w.targetInterval = w.scopes[2].interval()
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	q := s.queues[t.App]
	if q == nil {
		q = &appQueue{app: t.App, lanes: make(map[string]*lane), wake: make(chan struct{}, 1)}
		s.queues[t.App] = q
		s.wg.Add(1)
		go s.pump(q)
	}
	s.seq++
	w.seq = s.seq
	l := q.lanes[w.lane]
	if l == nil {
		l = &lane{}
		q.lanes[w.lane] = l
	}
	i, _ := slices.BinarySearchFunc(l.waiters, w, compareWaiters)
	l.waiters = slices.Insert(l.waiters, i, w)
	q.n++
	s.metrics.queueDepth.WithLabelValues(t.App).Set(float64(q.n))
	s.mu.Unlock()
	signal(q.wake)

	start := time.Now()
	defer func() { s.metrics.rateWait.WithLabelValues(t.App, t.API).Observe(time.Since(start).Seconds()) }()
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		s.mu.Lock()
		removed := s.removeLocked(q, w)
		storeErr := q.storeErr
		if time.Since(q.storeErrAt) > storeErrFresh {
			storeErr = nil
		}
		s.mu.Unlock()
		if !removed {
			<-w.done // granted meanwhile: the slot goes unused
		}
		if storeErr != nil {
			return fmt.Errorf("%w (%w: %w)", ctx.Err(), ErrUnavailable, storeErr)
		}
		return ctx.Err()
	}
}

func compareWaiters(a, b *waiter) int {
	if c := cmp.Compare(a.priority, b.priority); c != 0 {
		return c
	}
	return cmp.Compare(a.seq, b.seq)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// removeLocked takes w off q, reporting whether it was there.
func (s *Scheduler) removeLocked(q *appQueue, w *waiter) bool {
	l := q.lanes[w.lane]
	if l == nil {
		return false
	}
	i, found := slices.BinarySearchFunc(l.waiters, w, compareWaiters)
	if !found {
		return false
	}
	l.waiters = slices.Delete(l.waiters, i, i+1)
	if len(l.waiters) == 0 {
		delete(q.lanes, w.lane)
	}
	q.n--
	s.metrics.queueDepth.WithLabelValues(q.app).Set(float64(q.n))
	return true
}

// finish hands err to w if it is still waiting.
func (s *Scheduler) finish(q *appQueue, w *waiter, err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.removeLocked(q, w) {
		return false
	}
	w.done <- err
	return true
}

// storeTimeout bounds one rateStore call.
const storeTimeout = 2 * time.Second

func (s *Scheduler) pump(q *appQueue) {
	defer s.wg.Done()
	notBefore := make(map[string]time.Time) // scope.nb -> when the store said it frees
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	reserved := make(map[string]bool)
	var heads []head
	storeBackoff := time.Duration(0) // grows while the store fails
	for {
		heads = heads[:0]
		s.mu.Lock()
		total := q.n
		for _, l := range q.lanes {
			w := l.waiters[0]
			// A lane is the bottleneck when, at its target's pace, it takes
			// longer to drain than the whole queue at the app's.
			bottleneck := w.target != "" && time.Duration(len(l.waiters))*w.targetInterval >= time.Duration(total)*w.appInterval
			heads = append(heads, head{w, bottleneck})
		}
		s.mu.Unlock()
		slices.SortFunc(heads, func(a, b head) int { return compareWaiters(a.w, b.w) })

		var next time.Time // earliest moment a skipped waiter may go
		progressed := false
		clear(reserved)
		now := time.Now()
		for _, h := range heads {
			w := h.w
			if w.target != "" && reserved[w.target] {
				continue
			}
			scopes := w.scopes
			if h.bottleneck {
				scopes = w.urgent
			}
			if until := blockedUntil(scopes, notBefore, now); !until.IsZero() {
				next = earliest(next, until)
				reserved[w.target] = true
				continue
			}
			ctx, cancel := context.WithTimeout(s.ctx, storeTimeout)
			ok, refused, retryAfter, err := s.store.acquire(ctx, scopes)
			cancel()
			now = time.Now()
			if err != nil {
				if s.ctx.Err() != nil {
					break
				}
				// The store is down or slow: everyone keeps waiting (their
				// contexts bound it) and the pump tries again later.
				storeBackoff = min(max(2*storeBackoff, 50*time.Millisecond), 2*time.Second)
				s.log.Warn("rate limiter store failed; calls keep waiting", "app_id", q.app, "retry_in", storeBackoff, "error", err)
				s.setStoreErr(q, err)
				next = now.Add(storeBackoff)
				break
			}
			storeBackoff = 0
			if ok {
				s.finish(q, w, nil) // false if the caller left: the slot goes unused
				progressed = true
				break // start again from the top: priorities first
			}
			until := now.Add(retryAfter)
			notBefore[scopes[refused].nb] = until
			next = earliest(next, until)
			reserved[w.target] = true
		}
		if len(notBefore) > 4096 { // forget scopes that freed a while ago
			for k, t := range notBefore {
				if t.Before(now.Add(-time.Minute)) {
					delete(notBefore, k)
				}
			}
		}
		if progressed {
			continue
		}
		var tc <-chan time.Time
		if !next.IsZero() {
			timer.Reset(max(time.Until(next), 0))
			tc = timer.C
		}
		select {
		case <-s.ctx.Done():
			s.failAll(q)
			return
		case <-q.wake:
		case <-tc:
		}
		if tc != nil && !timer.Stop() {
			select { // drain a fired timer not yet received
			case <-timer.C:
			default:
			}
		}
	}
}

// setStoreErr remembers the store's last failure, for callers whose wait
// ends while it fails.
func (s *Scheduler) setStoreErr(q *appQueue, err error) {
	s.mu.Lock()
	q.storeErr = err
	q.storeErrAt = time.Now()
	s.mu.Unlock()
}

// head is a lane's first waiter, and whether the lane is the bottleneck.
type head struct {
	w          *waiter
	bottleneck bool
}

// blockedUntil is when the latest of the known-full scopes frees, or zero
// if none is known full.
func blockedUntil(scopes []scope, notBefore map[string]time.Time, now time.Time) time.Time {
	var until time.Time
	for _, sc := range scopes {
		if t, ok := notBefore[sc.nb]; ok && t.After(now) && t.After(until) {
			until = t
		}
	}
	return until
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

func (s *Scheduler) failAll(q *appQueue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range q.lanes {
		for _, w := range l.waiters {
			w.done <- ErrClosed
		}
	}
	clear(q.lanes)
	q.n = 0
	s.metrics.queueDepth.WithLabelValues(q.app).Set(0)
}

// Block slows scope — APIScope(app, api) or a Ticket's Target — for every
// replica until until: Wait admits no call under it before then. The store
// call is bounded by ctx and storeTimeout; a failure is logged.
func (s *Scheduler) Block(ctx context.Context, scope string, until time.Time) {
	if s.limits.Disabled {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if err := s.store.block(ctx, scope, until); err != nil {
		s.log.Warn("recording a rate-limit block failed", "scope", scope, "error", err)
	}
}

// Close stops the pumps; waiting calls get ErrClosed. It is idempotent and
// waits for the pumps' goroutines.
func (s *Scheduler) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}
