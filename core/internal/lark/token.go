package lark

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// tokenSource supplies tenant_access_tokens to the Client.
//
// Token returns a token valid now, fetching one if needed; it is safe for
// concurrent use and concurrent callers share one fetch. Invalidate drops
// stale if it is still the cached token, so the next Token fetches anew; it
// is called when Lark rejects stale with a token-invalid code.
//
// This is the seam for a shared (Redis-backed) cache across replicas: an
// implementation can read the shared entry first and fall back to fetch.
type tokenSource interface {
	Token(ctx context.Context) (string, error)
	Invalidate(ctx context.Context, stale string)
}

// tokenFetchFunc calls the token endpoint once and returns the token and its
// remaining validity as reported by Lark ("expire", seconds).
type tokenFetchFunc func(ctx context.Context) (token string, ttl time.Duration, err error)

// refreshWindow is how long before expiry a token is refreshed: Lark hands
// out a new token once less than 30 minutes remain (and the same one before
// that), lark-platform.md §4.1. Short-lived tokens (tests) refresh in their
// last quarter.
func refreshWindow(ttl time.Duration) time.Duration {
	return min(30*time.Minute, ttl/4)
}

// memoryTokenSource caches one app's token in process. Refreshes are
// single-flighted: while a fetch is in progress, callers holding a still
// valid token keep using it and others wait for the fetch.
type memoryTokenSource struct {
	fetch tokenFetchFunc
	log   *slog.Logger
	now   func() time.Time

	mu       sync.Mutex
	cur      cachedToken
	inflight *tokenFlight
}

type cachedToken struct {
	value     string
	expiresAt time.Time
	refreshAt time.Time
}

type tokenFlight struct {
	done chan struct{}
	tok  cachedToken
	err  error
}

var _ tokenSource = (*memoryTokenSource)(nil)

func newMemoryTokenSource(fetch tokenFetchFunc, log *slog.Logger) *memoryTokenSource {
	return &memoryTokenSource{fetch: fetch, log: log, now: time.Now}
}

// Token returns the cached token while it is outside its refresh window.
// Inside the window the first caller refreshes and the rest keep using the
// still valid token; once it has expired, everyone waits for the one fetch.
// The fetch is not cancelled by the caller's context (other callers share
// it); the HTTP client's timeout bounds it.
func (s *memoryTokenSource) Token(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	s.mu.Lock()
	now := s.now()
	cur := s.cur
	valid := cur.value != "" && now.Before(cur.expiresAt)
	if valid && now.Before(cur.refreshAt) {
		s.mu.Unlock()
		return cur.value, nil
	}
	f := s.inflight
	if f == nil {
		f = &tokenFlight{done: make(chan struct{})}
		s.inflight = f
		s.mu.Unlock()
		s.refresh(ctx, f)
	} else {
		s.mu.Unlock()
		if valid {
			return cur.value, nil
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if f.err != nil {
		return "", f.err
	}
	return f.tok.value, nil
}

func (s *memoryTokenSource) refresh(ctx context.Context, f *tokenFlight) {
	start := s.now()
	tok, ttl, err := s.fetch(context.WithoutCancel(ctx))

	s.mu.Lock()
	if err == nil {
		s.cur = cachedToken{
			value:     tok,
			expiresAt: start.Add(ttl),
			refreshAt: start.Add(ttl - refreshWindow(ttl)),
		}
		f.tok = s.cur
		s.log.Debug("fetched tenant access token", "expire", ttl)
	} else if now := s.now(); s.cur.value != "" && now.Before(s.cur.expiresAt) {
		// Refresh failed inside the window: keep serving the valid token and
		// try again after a quarter of what remains (at most a minute).
		s.cur.refreshAt = now.Add(min(time.Minute, s.cur.expiresAt.Sub(now)/4))
		f.tok = s.cur
		s.log.Warn("refreshing tenant access token failed; using the current one until it expires",
			"error", err, "expires_in", s.cur.expiresAt.Sub(now))
	} else {
		f.err = err
	}
	s.inflight = nil
	s.mu.Unlock()
	close(f.done)
}

// Invalidate forgets stale if it is still the cached token.
func (s *memoryTokenSource) Invalidate(_ context.Context, stale string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur.value == stale {
		s.cur = cachedToken{}
	}
}
