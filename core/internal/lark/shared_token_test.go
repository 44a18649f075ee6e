package lark

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
)

func newRedis(t testing.TB) redis.UniversalClient {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestTokenCaches runs the same table against both TokenCache
// implementations.
func TestTokenCaches(t *testing.T) {
	caches := map[string]func(t *testing.T) TokenCache{
		"memory": func(*testing.T) TokenCache { return NewMemoryTokenCache() },
		"redis": func(t *testing.T) TokenCache {
			return NewRedisTokenCache(newRedis(t), testenv.Name(t, "lw")+":")
		},
	}
	for name, mk := range caches {
		t.Run(name, func(t *testing.T) {
			c, ctx := mk(t), t.Context()
			if v, err := c.Get(ctx, "k"); v != "" || err != nil {
				t.Fatalf("Get on empty = %q, %v", v, err)
			}
			if err := c.Set(ctx, "k", "v1", time.Minute); err != nil {
				t.Fatal(err)
			}
			if v, _ := c.Get(ctx, "k"); v != "v1" {
				t.Fatalf("Get = %q, want v1", v)
			}
			if err := c.DeleteIf(ctx, "k", "other"); err != nil {
				t.Fatal(err)
			}
			if v, _ := c.Get(ctx, "k"); v != "v1" {
				t.Fatalf("DeleteIf with another value deleted: %q", v)
			}
			if err := c.DeleteIf(ctx, "k", "v1"); err != nil {
				t.Fatal(err)
			}
			if v, _ := c.Get(ctx, "k"); v != "" {
				t.Fatalf("DeleteIf with the value kept %q", v)
			}
			release, err := c.TryLock(ctx, "l", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.TryLock(ctx, "l", time.Minute); !errors.Is(err, ErrLocked) {
				t.Fatalf("second TryLock = %v, want ErrLocked", err)
			}
			if err := release(ctx); err != nil {
				t.Fatal(err)
			}
			release2, err := c.TryLock(ctx, "l", time.Minute)
			if err != nil {
				t.Fatalf("TryLock after release = %v", err)
			}
			_ = release(ctx) // a stale release must not free the new holder's lock
			if _, err := c.TryLock(ctx, "l", time.Minute); !errors.Is(err, ErrLocked) {
				t.Fatalf("stale release freed the lock: %v", err)
			}
			_ = release2(ctx)
		})
	}
}

// replicas builds n clients of one app sharing a RedisTokenCache prefix, as
// n replicas would, all on clock (nil: real time).
func replicas(t *testing.T, n int, baseURL string, clock *fakeClock, reg prometheus.Registerer) []*Client {
	t.Helper()
	rdb := newRedis(t)
	prefix := testenv.Name(t, "lw") + ":lark:"
	m := NewMetrics(reg)
	out := make([]*Client, n)
	for i := range out {
		c, err := New(Config{AppID: testAppID, AppSecret: testSecret, BaseURL: baseURL, Timeout: 5 * time.Second},
			Deps{Logger: testLogger(t).With("replica", i), Tokens: NewRedisTokenCache(rdb, prefix), Metrics: m})
		if err != nil {
			t.Fatal(err)
		}
		if clock != nil {
			c.tokens.now = clock.Now
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		out[i] = c
	}
	return out
}

// sendFromAll sends perClient messages concurrently from every client.
func sendFromAll(t *testing.T, clients []*Client, perClient int, tag string) {
	t.Helper()
	var wg sync.WaitGroup
	for i, c := range clients {
		for j := range perClient {
			wg.Go(func() {
				_, err := c.Send(t.Context(), SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_shared", MsgType: "text",
					Content: text("x"), UUID: fmt.Sprintf("%s-%d-%d", tag, i, j)})
				if err != nil {
					t.Errorf("replica %d: %v", i, err)
				}
			})
		}
	}
	wg.Wait()
}

func TestSharedTokenOneFetchForAllReplicas(t *testing.T) {
	h := newHarness(t)
	reg := prometheus.NewRegistry()
	clients := replicas(t, 3, h.url, h.cliClock, reg)

	sendFromAll(t, clients, 10, "a")
	if got := h.emu.TokenFetches(); got != 1 {
		t.Fatalf("%d token fetches for 3 replicas, want 1", got)
	}
	if got := testenv.MetricValue(t, reg, "larkway_lark_token_fetches_total", "app_id", testAppID, "outcome", "ok"); got != 1 {
		t.Fatalf("larkway_lark_token_fetches_total = %v, want 1", got)
	}

	// Lark revokes the token: every replica gets 99991663, and one of them
	// fetches the token all of them then use.
	h.emu.ExpireTokens()
	sendFromAll(t, clients, 10, "b")
	if got := h.emu.TokenFetches(); got != 2 {
		t.Fatalf("%d token fetches after revocation, want 2", got)
	}

	// With 29 minutes left, the first replica to notice refreshes for all.
	h.emuClock.Advance(91 * time.Minute)
	h.cliClock.Advance(91 * time.Minute)
	sendFromAll(t, clients, 10, "c")
	if got := h.emu.TokenFetches(); got != 3 {
		t.Fatalf("%d token fetches after the refresh window opened, want 3", got)
	}
	if got := len(h.emu.Messages()); got != 90 {
		t.Fatalf("%d messages, want 90", got)
	}
}

// TestSharedTokenWaitsForTheLockHolder holds the token endpoint until every
// replica has asked for a token: only one of them calls it.
func TestSharedTokenWaitsForTheLockHolder(t *testing.T) {
	emu := larkemu.New(larkemu.Options{Apps: map[string]string{testAppID: testSecret}, Unlimited: true})
	var fetches atomic.Int32
	started := make(chan struct{}, 8)
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("/", emu.Handler())
	mux.HandleFunc("/open-apis/auth/v3/tenant_access_token/internal", func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		started <- struct{}{}
		<-release
		emu.Handler().ServeHTTP(w, r)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	clients := replicas(t, 3, srv.URL, nil, nil)

	var wg sync.WaitGroup
	toks := make(chan string, len(clients))
	for _, c := range clients {
		wg.Go(func() {
			tok, err := c.tokens.Token(t.Context())
			if err != nil {
				t.Error(err)
			}
			toks <- tok
		})
	}
	<-started // one replica holds the lock and is fetching
	testenv.Eventually(t, 5*time.Second, "the other replicas did not start waiting", func() bool {
		for _, c := range clients {
			c.tokens.mu.Lock()
			waiting := c.tokens.inflight != nil
			c.tokens.mu.Unlock()
			if !waiting {
				return false
			}
		}
		return true
	})
	close(release)
	wg.Wait()
	close(toks)
	var first string
	for tok := range toks {
		if first == "" {
			first = tok
		}
		if tok != first || tok == "" {
			t.Fatalf("replicas got different tokens: %q and %q", first, tok)
		}
	}
	if got := fetches.Load(); got != 1 {
		t.Fatalf("%d token fetches, want 1", got)
	}
}

// TestTokenSourceRedisDown falls back to fetching without the cache.
func TestTokenSourceRedisDown(t *testing.T) {
	h := newHarness(t)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 50 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	c, err := New(Config{AppID: testAppID, AppSecret: testSecret, BaseURL: h.url}, Deps{Logger: testLogger(t), Tokens: NewRedisTokenCache(rdb, "x:")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	if _, err := c.Send(t.Context(), SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_1", MsgType: "text", Content: text("x")}); err != nil {
		t.Fatalf("Send with Redis down: %v", err)
	}
}

func TestMetricsOutcomes(t *testing.T) {
	url, _, _ := stubMessages(t, respondWith(429, "application/json", `{"code":99991400,"msg":"limit"}`, "x-ogw-ratelimit-reset", "1"))
	reg := prometheus.NewRegistry()
	c, err := New(Config{AppID: testAppID, AppSecret: testSecret, BaseURL: url}, Deps{Metrics: NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	_, _ = c.Reply(t.Context(), ReplyRequest{MessageID: "om_1", MsgType: "text", Content: text("x")})
	if got := testenv.MetricValue(t, reg, "larkway_lark_calls_total", "app_id", testAppID, "api", APIReply, "outcome", "rate_limited"); got != 1 {
		t.Fatalf("larkway_lark_calls_total{outcome=rate_limited} = %v", got)
	}
	if got := testenv.MetricValue(t, reg, "larkway_lark_call_duration_seconds", "app_id", testAppID, "api", APIReply); got != 1 {
		t.Fatalf("larkway_lark_call_duration_seconds count = %v, want 1", got)
	}
}

func TestOutcome(t *testing.T) {
	tests := map[string]struct {
		err  error
		want string
	}{
		"nil":        {nil, "ok"},
		"invalid":    {fmt.Errorf("x: %w", ErrInvalidRequest), "invalid_request"},
		"canceled":   {context.Canceled, "canceled"},
		"transport":  {fmt.Errorf("%w: %w", ErrTransport, io.EOF), "transport_error"},
		"429":        {&APIError{Code: CodeRateLimited, HTTPStatus: 429}, "rate_limited"},
		"token":      {&APIError{Code: CodeTenantTokenInvalid, HTTPStatus: 400}, "token_invalid"},
		"502":        {&APIError{HTTPStatus: 502}, "server_error"},
		"bot absent": {&APIError{Code: CodeBotNotInChat, HTTPStatus: 400}, "business_error"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Outcome(tc.err); got != tc.want {
				t.Fatalf("Outcome(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}
