package lark

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scriptedFetcher hands out t-1, t-2, … with the given TTL, or fails while
// err is set. Each fetch blocks until gate (if non-nil) is closed.
type scriptedFetcher struct {
	ttl     time.Duration
	calls   atomic.Int32
	started chan struct{} // receives once per fetch, if non-nil
	gate    chan struct{}
	mu      sync.Mutex
	err     error
}

func (f *scriptedFetcher) fetch(ctx context.Context) (string, time.Duration, error) {
	n := f.calls.Add(1)
	if f.started != nil {
		f.started <- struct{}{}
	}
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return "", 0, f.err
	}
	return fmt.Sprintf("t-%d", n), f.ttl, nil
}

func (f *scriptedFetcher) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func newTestSource(f *scriptedFetcher, clock *fakeClock) *tokenSource {
	cache := NewMemoryTokenCache()
	cache.now = clock.Now
	s := newTokenSource("cli_test", f.fetch, cache, 10*time.Second, slog.New(slog.DiscardHandler))
	s.now = clock.Now
	return s
}

func mustToken(t *testing.T, s *tokenSource) string {
	t.Helper()
	tok, err := s.Token(t.Context())
	if err != nil {
		t.Fatalf("Token() error: %v", err)
	}
	return tok
}

func TestRefreshWindow(t *testing.T) {
	tests := map[time.Duration]time.Duration{
		2 * time.Hour:    30 * time.Minute,
		time.Hour:        15 * time.Minute,
		40 * time.Minute: 10 * time.Minute,
		10 * time.Second: 2500 * time.Millisecond,
	}
	for ttl, want := range tests {
		if got := refreshWindow(ttl); got != want {
			t.Errorf("refreshWindow(%s) = %s, want %s", ttl, got, want)
		}
	}
}

func TestTokenSourceCachesAndRefreshesInLast30Minutes(t *testing.T) {
	clock := newFakeClock()
	f := &scriptedFetcher{ttl: 2 * time.Hour}
	s := newTestSource(f, clock)

	steps := []struct {
		advance time.Duration
		want    string
		calls   int32
	}{
		{0, "t-1", 1},
		{89 * time.Minute, "t-1", 1},                 // 31 min left: cached
		{time.Minute, "t-2", 2},                      // 30 min left: refreshed
		{90*time.Minute - time.Nanosecond, "t-2", 2}, // just before t-2's window
		{time.Nanosecond, "t-3", 3},
	}
	for i, st := range steps {
		clock.Advance(st.advance)
		if got := mustToken(t, s); got != st.want {
			t.Fatalf("step %d: Token() = %q, want %q", i, got, st.want)
		}
		if got := f.calls.Load(); got != st.calls {
			t.Fatalf("step %d: %d fetches, want %d", i, got, st.calls)
		}
	}
}

func TestTokenSourceSingleFlight(t *testing.T) {
	clock := newFakeClock()
	f := &scriptedFetcher{ttl: 2 * time.Hour, started: make(chan struct{}, 1), gate: make(chan struct{})}
	s := newTestSource(f, clock)

	const callers = 16
	var wg sync.WaitGroup
	toks := make(chan string, callers)
	for range callers {
		wg.Go(func() {
			tok, err := s.Token(context.Background())
			if err != nil {
				t.Errorf("Token() error: %v", err)
			}
			toks <- tok
		})
	}
	<-f.started // one fetch is in flight; everyone else waits on it or finds the cache
	close(f.gate)
	wg.Wait()
	close(toks)
	for tok := range toks {
		if tok != "t-1" {
			t.Errorf("got token %q, want t-1", tok)
		}
	}
	if got := f.calls.Load(); got != 1 {
		t.Fatalf("%d fetches, want 1", got)
	}
}

func TestTokenSourceWaiterHonoursItsContext(t *testing.T) {
	clock := newFakeClock()
	f := &scriptedFetcher{ttl: 2 * time.Hour, started: make(chan struct{}, 1), gate: make(chan struct{})}
	s := newTestSource(f, clock)

	leader := make(chan error, 1)
	go func() {
		_, err := s.Token(context.Background())
		leader <- err
	}()
	<-f.started

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Token(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("waiter Token() = %v, want context.Canceled", err)
	}
	close(f.gate)
	if err := <-leader; err != nil {
		t.Fatalf("leader Token() = %v", err)
	}
}

func TestTokenSourceFailedRefreshKeepsValidToken(t *testing.T) {
	clock := newFakeClock()
	f := &scriptedFetcher{ttl: 2 * time.Hour}
	s := newTestSource(f, clock)
	mustToken(t, s)

	boom := errors.New("token endpoint down")
	f.fail(boom)
	clock.Advance(100 * time.Minute) // 20 min left: in the window
	if got := mustToken(t, s); got != "t-1" {
		t.Fatalf("Token() after failed refresh = %q, want the still valid t-1", got)
	}
	if got := f.calls.Load(); got != 2 {
		t.Fatalf("%d fetches, want 2", got)
	}
	// The failed refresh backs off instead of refetching on every call.
	mustToken(t, s)
	if got := f.calls.Load(); got != 2 {
		t.Fatalf("%d fetches right after a failed refresh, want 2", got)
	}
	clock.Advance(time.Minute)
	mustToken(t, s)
	if got := f.calls.Load(); got != 3 {
		t.Fatalf("%d fetches a minute later, want 3", got)
	}
	// Once expired, the failure surfaces.
	clock.Advance(20 * time.Minute)
	if _, err := s.Token(t.Context()); !errors.Is(err, boom) {
		t.Fatalf("Token() after expiry = %v, want %v", err, boom)
	}
	f.fail(nil)
	if got := mustToken(t, s); got != "t-5" {
		t.Fatalf("Token() after recovery = %q, want t-5", got)
	}
}

func TestTokenSourceInvalidate(t *testing.T) {
	clock := newFakeClock()
	f := &scriptedFetcher{ttl: 2 * time.Hour}
	s := newTestSource(f, clock)
	mustToken(t, s)

	s.Invalidate(t.Context(), "t-other") // not the cached token: no effect
	if got := mustToken(t, s); got != "t-1" {
		t.Fatalf("Token() = %q, want t-1", got)
	}
	s.Invalidate(t.Context(), "t-1")
	if got := mustToken(t, s); got != "t-2" {
		t.Fatalf("Token() after Invalidate = %q, want t-2", got)
	}
}

func TestTokenSourceCanceledContext(t *testing.T) {
	f := &scriptedFetcher{ttl: 2 * time.Hour}
	s := newTestSource(f, newFakeClock())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Token(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Token() = %v, want context.Canceled", err)
	}
	if got := f.calls.Load(); got != 0 {
		t.Fatalf("%d fetches with a canceled context, want 0", got)
	}
}
