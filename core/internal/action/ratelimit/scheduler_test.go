package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/larkway/larkway/core/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// gateStore grants a slot only when the test releases one, refuses the
// scopes in full (as known full, for an hour), and records every scope
// list it was asked about.
type gateStore struct {
	mu    sync.Mutex
	slots int
	full  map[string]bool
	asked [][]string
	// availableAt is when released slots may be taken: a window boundary
	// well after the release, so they go to the first waiter of a retry
	// round (the highest priority), not to whichever waiter the pump happens
	// to be asking for when the release lands mid-round.
	availableAt time.Time
}

func (g *gateStore) acquire(_ context.Context, scopes []scope) (bool, int, time.Duration, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	keys := make([]string, len(scopes))
	for i, s := range scopes {
		keys[i] = s.key
	}
	g.asked = append(g.asked, keys)
	for i, s := range scopes {
		if g.full[s.key] {
			return false, i, time.Hour, nil
		}
	}
	if now := time.Now(); g.slots == 0 || now.Before(g.availableAt) {
		// Poll for released slots. Like the real store, whose answer comes
		// from state shared by every caller, every refusal in one window
		// names the same moment, so the waiters retry together, in priority
		// order. (A fixed delay from each refusal would keep them in the
		// order they first arrived.)
		return false, 0, now.Truncate(gatePoll).Add(gatePoll).Sub(now), nil
	}
	g.slots--
	return true, 0, 0, nil
}

const gatePoll = 20 * time.Millisecond

func (g *gateStore) block(context.Context, string, time.Time) error { return nil }

func (g *gateStore) release(s *Scheduler, app string, n int) {
	g.mu.Lock()
	g.slots += n
	g.availableAt = time.Now().Add(gatePoll / 2).Truncate(gatePoll).Add(gatePoll)
	g.mu.Unlock()
	s.mu.Lock()
	q := s.queues[app]
	s.mu.Unlock()
	signal(q.wake)
}

func (g *gateStore) askedFor(target string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, keys := range g.asked {
		if slices.Contains(keys, target) {
			n++
		}
	}
	return n
}

func newTestScheduler(t *testing.T, store rateStore) *Scheduler {
	s := newScheduler(store, DefaultLimits(), slog.New(slog.DiscardHandler), newMetrics(prometheus.NewRegistry()))
	t.Cleanup(s.Close)
	return s
}

func queued(s *Scheduler, app string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q := s.queues[app]; q != nil {
		return q.n
	}
	return 0
}

// TestSchedulerPriority: with one slot free at a time, a reply to a person
// goes before an earlier reaction and broadcasts, and equal priorities go
// in order.
func TestSchedulerPriority(t *testing.T) {
	g := &gateStore{}
	s := newTestScheduler(t, g)
	order := make(chan string, 4)
	var wg sync.WaitGroup
	enqueue := func(name string, p Priority, n int) {
		wg.Go(func() {
			if err := s.Wait(t.Context(), Ticket{App: "a", API: "reply", Target: "chat:" + name, Priority: p}); err != nil {
				t.Error(err)
			}
			order <- name
		})
		testenv.Eventually(t, 5*time.Second, "waiter not queued", func() bool { return queued(s, "a") == n })
	}
	enqueue("broadcast1", PriorityLow, 1)
	enqueue("broadcast2", PriorityLow, 2)
	enqueue("reaction", PriorityNormal, 3)
	enqueue("reply", PriorityHigh, 4)
	var got []string
	for range 4 {
		g.release(s, "a", 1)
		got = append(got, <-order)
	}
	wg.Wait()
	if want := []string{"reply", "reaction", "broadcast1", "broadcast2"}; !slices.Equal(got, want) {
		t.Fatalf("granted in order %v, want %v", got, want)
	}
}

// TestSchedulerHotChat: a full chat does not hold up calls to other chats,
// but later calls into the full chat do not overtake its first waiter.
func TestSchedulerHotChat(t *testing.T) {
	g := &gateStore{slots: 100, full: map[string]bool{"chat:hot": true}}
	s := newTestScheduler(t, g)
	errs := make(chan error, 3)
	hotCtx, cancelHot := context.WithCancel(t.Context())
	defer cancelHot()
	go func() {
		errs <- s.Wait(hotCtx, Ticket{App: "a", API: "reply", Target: "chat:hot", Priority: PriorityHigh})
	}()
	testenv.Eventually(t, 5*time.Second, "hot waiter not tried", func() bool { return g.askedFor("chat:hot") == 1 })
	go func() {
		errs <- s.Wait(hotCtx, Ticket{App: "a", API: "send", Target: "chat:hot", Priority: PriorityLow})
	}()
	testenv.Eventually(t, 5*time.Second, "second hot waiter not queued", func() bool { return queued(s, "a") == 2 })
	if err := s.Wait(t.Context(), Ticket{App: "a", API: "reply", Target: "chat:cold", Priority: PriorityLow}); err != nil {
		t.Fatalf("a call to another chat waited behind the hot chat: %v", err)
	}
	if got := g.askedFor("chat:hot"); got != 1 {
		t.Fatalf("the store was asked about the hot chat %d times, want 1 (its later waiter must not overtake)", got)
	}
	cancelHot()
	for range 2 {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled waiter: %v", err)
		}
	}
	if n := queued(s, "a"); n != 0 {
		t.Fatalf("%d waiters left after cancellation", n)
	}
}

func TestSchedulerClose(t *testing.T) {
	g := &gateStore{}
	s := newScheduler(g, DefaultLimits(), slog.New(slog.DiscardHandler), newMetrics(nil))
	errs := make(chan error, 1)
	go func() { errs <- s.Wait(context.Background(), Ticket{App: "a", API: "reply"}) }()
	testenv.Eventually(t, 5*time.Second, "waiter not queued", func() bool { return queued(s, "a") == 1 })
	s.Close()
	s.Close() // idempotent
	if err := <-errs; !errors.Is(err, ErrClosed) {
		t.Fatalf("waiter after close: %v", err)
	}
	if err := s.Wait(context.Background(), Ticket{App: "a", API: "reply"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("wait after close: %v", err)
	}
}

// TestSchedulerStoreDown: while the store fails, calls keep waiting rather
// than go through unlimited; a wait that runs out says why.
func TestSchedulerStoreDown(t *testing.T) {
	s := newTestScheduler(t, failingStore{})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err := s.Wait(ctx, Ticket{App: "a", API: "reply"})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("wait = %v, want DeadlineExceeded and ErrUnavailable", err)
	}
}

type failingStore struct{}

func (failingStore) acquire(context.Context, []scope) (bool, int, time.Duration, error) {
	return false, 0, 0, errors.New("connection refused")
}
func (failingStore) block(context.Context, string, time.Time) error { return nil }
