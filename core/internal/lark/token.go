package lark

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// tokenFetchFunc calls the token endpoint once and returns the token and its
// remaining validity as reported by Lark ("expire", seconds).
type tokenFetchFunc func(ctx context.Context) (token string, ttl time.Duration, err error)

// refreshWindow is how long before expiry a token is refreshed: Lark hands
// out a new token once less than 30 minutes remain (and the same one before
// that), docs/lark-facts.md#tenant-access-token. Short-lived tokens (tests)
// refresh in their last quarter.
func refreshWindow(ttl time.Duration) time.Duration {
	return min(30*time.Minute, ttl/4)
}

// tokenEntry is one app's token as stored in the TokenCache (JSON).
type tokenEntry struct {
	Token     string `json:"token"`
	ExpiresAt int64  `json:"expires_at"` // unix ms
	RefreshAt int64  `json:"refresh_at"` // unix ms
}

// cachedToken is the process's copy of a token.
type cachedToken struct {
	value     string
	expiresAt time.Time
	refreshAt time.Time
	raw       string // the entry as stored in the cache, for DeleteIf
}

func (t cachedToken) validAt(now time.Time) bool { return t.value != "" && now.Before(t.expiresAt) }
func (t cachedToken) freshAt(now time.Time) bool { return t.validAt(now) && now.Before(t.refreshAt) }

type tokenFlight struct {
	done chan struct{}
	tok  cachedToken
	err  error
}

// tokenSource supplies one app's tenant_access_token. It is safe for
// concurrent use.
//
// Inside the process, refreshes are single-flighted: while a fetch is in
// progress, callers holding a still valid token keep using it and others
// wait for the one fetch (x/sync/singleflight would make everyone wait).
// Across replicas, the token lives in the TokenCache: a replica whose copy
// needs refreshing first adopts a fresher token another replica stored; only
// the holder of the cache's lock calls Lark, and the others wait for its
// result. A token is refreshed once less than refreshWindow remains.
type tokenSource struct {
	appID   string
	fetch   tokenFetchFunc
	cache   TokenCache
	log     *slog.Logger
	now     func() time.Time
	lockTTL time.Duration // bounds one fetch; a dead holder's lock expires
	poll    time.Duration // how often a waiting replica re-reads the cache

	mu       sync.Mutex
	cur      cachedToken
	stale    string // the last token Lark rejected: never adopt it again
	inflight *tokenFlight
}

func newTokenSource(appID string, fetch tokenFetchFunc, cache TokenCache, lockTTL time.Duration, log *slog.Logger) *tokenSource {
	return &tokenSource{appID: appID, fetch: fetch, cache: cache, log: log, now: time.Now, lockTTL: lockTTL, poll: 20 * time.Millisecond}
}

func (s *tokenSource) key() string     { return "token:" + s.appID }
func (s *tokenSource) lockKey() string { return "token-lock:" + s.appID }

// Token returns a token valid now. Outside the refresh window it is the
// process's copy; inside it, the first caller refreshes while the rest keep
// using the still valid copy; once it has expired, everyone waits. The
// refresh is not cancelled by the caller's context (others share it);
// lockTTL bounds it.
func (s *tokenSource) Token(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	s.mu.Lock()
	now := s.now()
	cur := s.cur
	if cur.freshAt(now) {
		s.mu.Unlock()
		return cur.value, nil
	}
	f := s.inflight
	if f == nil {
		f = &tokenFlight{done: make(chan struct{})}
		s.inflight = f
		s.mu.Unlock()
		s.refresh(ctx, f, cur)
	} else {
		s.mu.Unlock()
		if cur.validAt(now) {
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

func (s *tokenSource) refresh(ctx context.Context, f *tokenFlight, have cachedToken) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.lockTTL+s.lockTTL/2)
	defer cancel()
	tok, err := s.obtain(fctx, have)

	s.mu.Lock()
	if err == nil {
		s.cur = tok
		f.tok = tok
	} else {
		f.err = err
	}
	s.inflight = nil
	s.mu.Unlock()
	close(f.done)
}

// obtain returns a token for the process: a fresh one from the cache, or
// one it fetched holding the cache's lock, or — while another replica
// fetches, or when fetching fails — a still valid one it serves until a
// short retry time.
func (s *tokenSource) obtain(ctx context.Context, have cachedToken) (cachedToken, error) {
	for {
		shared, err := s.readShared(ctx)
		if err != nil {
			s.log.Warn("token cache unavailable; fetching the token without it", "error", err)
			return s.fetchAndStore(ctx, have, shared)
		}
		if shared.freshAt(s.now()) {
			return shared, nil
		}
		release, err := s.cache.TryLock(ctx, s.lockKey(), s.lockTTL)
		switch {
		case err == nil:
			// Another replica may have stored a token between the read and the lock.
			if again, rerr := s.readShared(ctx); rerr == nil && again.freshAt(s.now()) {
				s.release(release)
				return again, nil
			}
			tok, ferr := s.fetchAndStore(ctx, have, shared)
			s.release(release)
			return tok, ferr
		case errors.Is(err, ErrLocked):
			// Another replica is fetching: serve a valid token meanwhile, and
			// look again soon; with none, wait for its result.
			now := s.now()
			for _, t := range []cachedToken{shared, have} {
				if t.validAt(now) && t.value != s.staleToken() {
					t.refreshAt = now.Add(s.poll)
					return t, nil
				}
			}
			select {
			case <-ctx.Done():
				return cachedToken{}, fmt.Errorf("waiting for another replica's token fetch: %w", ctx.Err())
			case <-time.After(s.poll):
			}
		default:
			s.log.Warn("token cache lock unavailable; fetching the token without it", "error", err)
			return s.fetchAndStore(ctx, have, shared)
		}
	}
}

func (s *tokenSource) release(release func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := release(ctx); err != nil {
		s.log.Warn("releasing the token lock failed; it will expire", "error", err)
	}
}

// fetchAndStore calls Lark and stores the token in the cache. When the call
// fails while a token is still valid, that token is served and the refresh
// retried after a quarter of what remains (at most a minute).
func (s *tokenSource) fetchAndStore(ctx context.Context, have, shared cachedToken) (cachedToken, error) {
	start := s.now()
	value, ttl, err := s.fetch(ctx)
	if err != nil {
		now := s.now()
		for _, t := range []cachedToken{shared, have} {
			if t.validAt(now) && t.value != s.staleToken() {
				t.refreshAt = now.Add(min(time.Minute, t.expiresAt.Sub(now)/4))
				s.log.Warn("refreshing tenant access token failed; using the current one until it expires",
					"error", err, "expires_in", t.expiresAt.Sub(now))
				return t, nil
			}
		}
		return cachedToken{}, err
	}
	e := tokenEntry{Token: value, ExpiresAt: start.Add(ttl).UnixMilli(), RefreshAt: start.Add(ttl - refreshWindow(ttl)).UnixMilli()}
	raw, _ := json.Marshal(e) // plain struct: cannot fail
	s.mu.Lock()
	if s.stale == value { // Lark handed the same token out again: it is good
		s.stale = ""
	}
	s.mu.Unlock()
	tok := cachedToken{value: value, expiresAt: start.Add(ttl), refreshAt: start.Add(ttl - refreshWindow(ttl)), raw: string(raw)}
	if err := s.cache.Set(ctx, s.key(), tok.raw, ttl); err != nil {
		s.log.Warn("storing the tenant access token in the cache failed", "error", err)
	}
	s.log.Debug("fetched tenant access token", "expire", ttl)
	return tok, nil
}

// readShared returns the cache's token, or a zero token when there is none,
// it cannot be decoded, or it is the token Lark rejected.
func (s *tokenSource) readShared(ctx context.Context) (cachedToken, error) {
	raw, err := s.cache.Get(ctx, s.key())
	if err != nil || raw == "" {
		return cachedToken{}, err
	}
	var e tokenEntry
	if err := json.Unmarshal([]byte(raw), &e); err != nil || e.Token == "" {
		s.log.Warn("ignoring an undecodable token cache entry", "error", err)
		return cachedToken{}, nil
	}
	if e.Token == s.staleToken() {
		return cachedToken{}, nil
	}
	return cachedToken{value: e.Token, expiresAt: time.UnixMilli(e.ExpiresAt), refreshAt: time.UnixMilli(e.RefreshAt), raw: raw}, nil
}

func (s *tokenSource) staleToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stale
}

// Invalidate is called when Lark rejects stale with a token-invalid code. It
// forgets stale in the process and deletes it from the cache if it is still
// there, so the next Token fetches anew — once for all replicas: a replica
// that finds a newer token in the cache adopts it.
func (s *tokenSource) Invalidate(ctx context.Context, stale string) {
	s.mu.Lock()
	s.stale = stale
	raw := ""
	if s.cur.value == stale {
		raw = s.cur.raw
		s.cur = cachedToken{}
	}
	s.mu.Unlock()
	if raw == "" {
		// The process moved on already; the cache may still hold stale.
		got, err := s.cache.Get(ctx, s.key())
		if err != nil {
			return
		}
		var e tokenEntry
		if json.Unmarshal([]byte(got), &e) != nil || e.Token != stale {
			return
		}
		raw = got
	}
	if err := s.cache.DeleteIf(ctx, s.key(), raw); err != nil {
		s.log.Warn("deleting the rejected token from the cache failed", "error", err)
	}
}
