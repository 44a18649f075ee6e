package lark

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/larkway/larkway/core/larkemu"
)

const (
	testAppID  = "cli_test"
	testSecret = "test-secret"
)

type harness struct {
	emu      *larkemu.Emulator
	url      string
	emuClock *fakeClock
	cliClock *fakeClock
}

// newHarness serves an emulator that knows the test app, on a loopback
// httptest server, with its own fake clock.
func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{emuClock: newFakeClock(), cliClock: newFakeClock()}
	h.emu = larkemu.New(larkemu.Options{
		Apps:      map[string]string{testAppID: testSecret},
		Now:       h.emuClock.Now,
		Logger:    testLogger(t),
		Unlimited: true, // these tests are about the client; limits have their own
	})
	srv := httptest.NewServer(h.emu.Handler())
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newTestClient builds a Client for baseURL whose token cache runs on clock
// (nil: real time), closed at cleanup.
func newTestClient(t *testing.T, baseURL, secret string, clock *fakeClock) *Client {
	t.Helper()
	cache := NewMemoryTokenCache()
	if clock != nil {
		cache.now = clock.Now
	}
	c, err := New(Config{AppID: testAppID, AppSecret: secret, BaseURL: baseURL, Timeout: 5 * time.Second}, Deps{Logger: testLogger(t), Tokens: cache})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if clock != nil {
		c.tokens.now = clock.Now
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func (h *harness) client(t *testing.T) *Client {
	return newTestClient(t, h.url, testSecret, h.cliClock)
}

func text(s string) string { return fmt.Sprintf(`{"text":%q}`, s) }

func TestNewDoesNoIO(t *testing.T) {
	h := newHarness(t)
	h.client(t)
	if got := h.emu.TokenFetches(); got != 0 {
		t.Fatalf("New fetched %d tokens, want 0", got)
	}
}

func TestClientReplyAndSend(t *testing.T) {
	h := newHarness(t)
	c := h.client(t)
	ctx := t.Context()

	reply, err := c.Reply(ctx, ReplyRequest{MessageID: "om_parent", MsgType: "text", Content: text("pong"), ReplyInThread: true, UUID: "r-1"})
	if err != nil {
		t.Fatalf("Reply: %v", err)
	}
	sent, err := c.Send(ctx, SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_chat", MsgType: "text", Content: text("hello"), UUID: "s-1"})
	if err != nil {
		t.Fatalf("Send: %v", err)
	}

	msgs := h.emu.Messages()
	if len(msgs) != 2 {
		t.Fatalf("emulator recorded %d messages, want 2: %+v", len(msgs), msgs)
	}
	r, s := msgs[0], msgs[1]
	if r.MessageID != reply.MessageID || r.ChatID != reply.ChatID || r.ParentID != "om_parent" || r.RootID != "om_parent" ||
		!r.ReplyInThread || r.ThreadID == "" || r.Content != text("pong") || r.MsgType != "text" || r.UUID != "r-1" || r.AppID != testAppID {
		t.Errorf("reply recorded as %+v, returned %+v", r, reply)
	}
	if s.MessageID != sent.MessageID || sent.ChatID != "oc_chat" || s.ChatID != "oc_chat" || s.ParentID != "" ||
		s.ReceiveIDType != "chat_id" || s.Content != text("hello") || s.UUID != "s-1" {
		t.Errorf("send recorded as %+v, returned %+v", s, sent)
	}
	if !strings.HasPrefix(reply.MessageID, "om_") || !strings.HasPrefix(sent.MessageID, "om_") || reply.MessageID == sent.MessageID {
		t.Errorf("message IDs %q, %q", reply.MessageID, sent.MessageID)
	}
	if got := h.emu.TokenFetches(); got != 1 {
		t.Errorf("%d token fetches, want 1 (token reused)", got)
	}
}

func TestClientUUIDRetryIsIdempotent(t *testing.T) {
	h := newHarness(t)
	c := h.client(t)
	ctx := t.Context()
	calls := map[string]func() (Sent, error){
		"send": func() (Sent, error) {
			return c.Send(ctx, SendRequest{ReceiveIDType: ReceiveIDOpenID, ReceiveID: "ou_user", MsgType: "text", Content: text("once"), UUID: "same-send"})
		},
		"reply": func() (Sent, error) {
			return c.Reply(ctx, ReplyRequest{MessageID: "om_root", MsgType: "text", Content: text("once"), UUID: "same-reply"})
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			h.emu.Reset()
			first, err := call()
			if err != nil {
				t.Fatal(err)
			}
			second, err := call()
			if err != nil {
				t.Fatal(err)
			}
			if first != second {
				t.Fatalf("retry with the same uuid returned %+v, first %+v", second, first)
			}
			if got := len(h.emu.Messages()); got != 1 {
				t.Fatalf("emulator recorded %d messages, want 1", got)
			}
		})
	}
}

func TestClientRetriesOnceWithFreshTokenWhenRejected(t *testing.T) {
	tests := map[string]func(h *harness){
		"token expired at Lark":   func(h *harness) { h.emuClock.Advance(2*time.Hour + time.Second) },
		"token revoked at Lark":   func(h *harness) { h.emu.ExpireTokens() },
		"both clocks past expiry": func(h *harness) { h.emuClock.Advance(3 * time.Hour); h.cliClock.Advance(3 * time.Hour) },
	}
	for name, expire := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			c := h.client(t)
			send := func() {
				t.Helper()
				if _, err := c.Send(t.Context(), SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_chat", MsgType: "text", Content: text("x")}); err != nil {
					t.Fatalf("Send: %v", err)
				}
			}
			send()
			expire(h)
			send()
			if got := h.emu.TokenFetches(); got != 2 {
				t.Fatalf("%d token fetches, want 2", got)
			}
			if got := len(h.emu.Messages()); got != 2 {
				t.Fatalf("%d messages recorded, want 2", got)
			}
		})
	}
}

func TestClientRefreshesTokenInLast30Minutes(t *testing.T) {
	h := newHarness(t)
	c := h.client(t)
	send := func() {
		t.Helper()
		if _, err := c.Send(t.Context(), SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_chat", MsgType: "text", Content: text("x")}); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	advance := func(d time.Duration) { h.emuClock.Advance(d); h.cliClock.Advance(d) }

	send()
	advance(89 * time.Minute) // 31 min left
	send()
	if got := h.emu.TokenFetches(); got != 1 {
		t.Fatalf("%d token fetches with 31 min left, want 1", got)
	}
	advance(2 * time.Minute) // 29 min left: Lark now issues a new token
	send()
	if got := h.emu.TokenFetches(); got != 2 {
		t.Fatalf("%d token fetches with 29 min left, want 2", got)
	}
	advance(80 * time.Minute) // the first token has expired; the new one has 40 min left
	send()
	if got := h.emu.TokenFetches(); got != 2 {
		t.Fatalf("%d token fetches, want 2", got)
	}
}

func TestClientSharesOneTokenFetch(t *testing.T) {
	h := newHarness(t)
	c := h.client(t)
	const n = 32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, err := c.Send(t.Context(), SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_chat", MsgType: "text", Content: text("x"), UUID: fmt.Sprint("u-", i)})
			if err != nil {
				t.Errorf("Send: %v", err)
			}
		})
	}
	wg.Wait()
	if got := h.emu.TokenFetches(); got != 1 {
		t.Errorf("%d token fetches for %d concurrent sends, want 1", got, n)
	}
	if got := len(h.emu.Messages()); got != n {
		t.Errorf("%d messages recorded, want %d", got, n)
	}
}

func TestClientEmulatorErrors(t *testing.T) {
	h := newHarness(t)
	tests := map[string]struct {
		secret    string
		req       SendRequest
		code      int
		status    int
		retryable bool
	}{
		"wrong app secret": {
			secret: "wrong", req: SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_chat", MsgType: "text", Content: text("x")},
			code: CodeAppSecretInvalid, status: 200,
		},
		"text content without text key": {
			secret: testSecret, req: SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_chat", MsgType: "text", Content: `{"title":"x"}`},
			code: CodeBadParam, status: 400,
		},
		"open_id that is a chat id": {
			secret: testSecret, req: SendRequest{ReceiveIDType: ReceiveIDOpenID, ReceiveID: "oc_chat", MsgType: "text", Content: text("x")},
			code: CodeBadParam, status: 400,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h.emu.Reset()
			c := newTestClient(t, h.url, tc.secret, nil)
			_, err := c.Send(t.Context(), tc.req)
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("Send() = %v, want *APIError", err)
			}
			if ae.Code != tc.code || ae.HTTPStatus != tc.status || ae.LogID == "" {
				t.Fatalf("APIError = %+v, want code %d, HTTP %d and a log ID", ae, tc.code, tc.status)
			}
			if IsRetryable(err) != tc.retryable {
				t.Fatalf("IsRetryable() = %v, want %v", IsRetryable(err), tc.retryable)
			}
			if got := len(h.emu.Messages()); got != 0 {
				t.Fatalf("%d messages recorded, want 0", got)
			}
		})
	}
}

func TestClientRejectsInvalidRequestsLocally(t *testing.T) {
	h := newHarness(t)
	c := h.client(t)
	ok := SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_chat", MsgType: "text", Content: text("x")}
	tests := map[string]func() (Sent, error){
		"unknown receive_id_type": func() (Sent, error) { r := ok; r.ReceiveIDType = "thread_id"; return c.Send(t.Context(), r) },
		"empty receive_id_type":   func() (Sent, error) { r := ok; r.ReceiveIDType = ""; return c.Send(t.Context(), r) },
		"empty receive_id":        func() (Sent, error) { r := ok; r.ReceiveID = ""; return c.Send(t.Context(), r) },
		"empty msg_type":          func() (Sent, error) { r := ok; r.MsgType = ""; return c.Send(t.Context(), r) },
		"content not JSON":        func() (Sent, error) { r := ok; r.Content = "hi"; return c.Send(t.Context(), r) },
		"uuid of 51 characters":   func() (Sent, error) { r := ok; r.UUID = strings.Repeat("u", 51); return c.Send(t.Context(), r) },
		"text over 150 KB": func() (Sent, error) {
			r := ok
			r.Content = text(strings.Repeat("a", 150<<10))
			return c.Send(t.Context(), r)
		},
		"card over 30 KB": func() (Sent, error) {
			r := ok
			r.MsgType, r.Content = "interactive", fmt.Sprintf(`{"elements":[{"tag":"markdown","content":%q}]}`, strings.Repeat("a", 30<<10))
			return c.Send(t.Context(), r)
		},
		"reply without message_id": func() (Sent, error) {
			return c.Reply(t.Context(), ReplyRequest{MsgType: "text", Content: text("x")})
		},
	}
	for name, call := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := call()
			if !errors.Is(err, ErrInvalidRequest) || IsRetryable(err) {
				t.Fatalf("error = %v, want terminal ErrInvalidRequest", err)
			}
		})
	}
	if got := h.emu.TokenFetches(); got != 0 {
		t.Fatalf("%d token fetches for locally rejected requests, want 0", got)
	}
}

// stubMessages serves tokens from a real emulator and answers message calls
// with respond, counting them.
func stubMessages(t *testing.T, respond http.HandlerFunc) (url string, emu *larkemu.Emulator, calls *atomic.Int32) {
	t.Helper()
	emu = larkemu.New(larkemu.Options{Apps: map[string]string{testAppID: testSecret}, Unlimited: true})
	calls = new(atomic.Int32)
	mux := http.NewServeMux()
	mux.Handle("/open-apis/auth/", emu.Handler())
	mux.HandleFunc("/open-apis/im/", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		respond(w, r)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, emu, calls
}

func respondWith(status int, contentType, body string, headers ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func TestClientClassifiesResponses(t *testing.T) {
	const jsonCT = "application/json; charset=utf-8"
	tests := map[string]struct {
		respond     http.HandlerFunc
		code        int
		status      int
		retryAfter  time.Duration
		retryable   bool
		rateLimited bool
	}{
		"gateway 429 with reset header": {
			respond: respondWith(429, jsonCT, `{"code":99991400,"msg":"request trigger frequency limit"}`, "x-ogw-ratelimit-limit", "100", "x-ogw-ratelimit-reset", "52"),
			code:    CodeRateLimited, status: 429, retryAfter: 52 * time.Second, retryable: true, rateLimited: true,
		},
		"gateway limit on HTTP 400": {
			respond: respondWith(400, jsonCT, `{"code":99991400,"msg":"request trigger frequency limit"}`, "x-ogw-ratelimit-reset", "7"),
			code:    CodeRateLimited, status: 400, retryAfter: 7 * time.Second, retryable: true, rateLimited: true,
		},
		"chat rate limit 230020": {
			respond: respondWith(400, jsonCT, `{"code":230020,"msg":"This operation triggers the frequency limit."}`),
			code:    CodeMessageRateLimited, status: 400, retryable: true, rateLimited: true,
		},
		"bot not in chat 230002": {
			respond: respondWith(400, jsonCT, `{"code":230002,"msg":"Bot/User can NOT be out of the chat."}`),
			code:    CodeBotNotInChat, status: 400,
		},
		"permission 230027": {
			respond: respondWith(400, jsonCT, `{"code":230027,"msg":"Lack of necessary permissions."}`),
			code:    CodeNoPermission, status: 400,
		},
		"business code on HTTP 200": {
			respond: respondWith(200, jsonCT, `{"code":230002,"msg":"Bot/User can NOT be out of the chat."}`),
			code:    CodeBotNotInChat, status: 200,
		},
		"JSON 500": {
			respond: respondWith(500, jsonCT, `{"code":1500,"msg":"internal error"}`),
			code:    1500, status: 500, retryable: true,
		},
		"HTML 502 from a proxy": {
			respond: respondWith(502, "text/html", `<html>bad gateway</html>`),
			code:    0, status: 502, retryable: true,
		},
		"504 gateway timeout": {
			respond: respondWith(504, jsonCT, `{}`),
			code:    0, status: 504, retryable: true,
		},
		// What Lark has been seen to answer for a route it does not serve
		// (docs/lark-facts.md#unknown-routes); the emulator answers JSON.
		"plain-text 404 for an unknown route": {
			respond: respondWith(404, "text/plain; charset=utf-8", "404 page not found"),
			code:    0, status: 404,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			url, _, calls := stubMessages(t, tc.respond)
			c := newTestClient(t, url, testSecret, nil)
			_, err := c.Reply(t.Context(), ReplyRequest{MessageID: "om_1", MsgType: "text", Content: text("x")})
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("Reply() = %v, want *APIError", err)
			}
			if ae.Code != tc.code || ae.HTTPStatus != tc.status || ae.RetryAfter != tc.retryAfter {
				t.Errorf("APIError = %+v, want code %d, HTTP %d, retry after %s", ae, tc.code, tc.status, tc.retryAfter)
			}
			if ae.Retryable() != tc.retryable || IsRetryable(err) != tc.retryable || ae.RateLimited() != tc.rateLimited {
				t.Errorf("Retryable %v, IsRetryable %v, RateLimited %v; want %v, %v, %v",
					ae.Retryable(), IsRetryable(err), ae.RateLimited(), tc.retryable, tc.retryable, tc.rateLimited)
			}
			if got := calls.Load(); got != 1 {
				t.Errorf("%d message calls, want 1 (no retry inside the client)", got)
			}
		})
	}
}

func TestClientGivesUpAfterOneTokenRetry(t *testing.T) {
	for name, status := range map[string]int{"HTTP 400": 400, "HTTP 200": 200} {
		t.Run(name, func(t *testing.T) {
			url, emu, calls := stubMessages(t, respondWith(status, "application/json", `{"code":99991663,"msg":"Invalid access token for authorization."}`))
			c := newTestClient(t, url, testSecret, nil)
			_, err := c.Send(t.Context(), SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_chat", MsgType: "text", Content: text("x")})
			var ae *APIError
			if !errors.As(err, &ae) || ae.Code != CodeTenantTokenInvalid || !ae.TokenInvalid() || !IsRetryable(err) {
				t.Fatalf("Send() = %v, want retryable 99991663 APIError", err)
			}
			if got := calls.Load(); got != 2 {
				t.Errorf("%d message calls, want 2 (one retry)", got)
			}
			if got := emu.TokenFetches(); got != 2 {
				t.Errorf("%d token fetches, want 2 (the stale token invalidated)", got)
			}
		})
	}
}

func TestClientUnexpectedSuccessResponse(t *testing.T) {
	url, _, _ := stubMessages(t, respondWith(200, "application/json", `{"code":0,"msg":"success","data":{}}`))
	c := newTestClient(t, url, testSecret, nil)
	_, err := c.Send(t.Context(), SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_chat", MsgType: "text", Content: text("x")})
	if !errors.Is(err, ErrUnexpectedResponse) || IsRetryable(err) {
		t.Fatalf("Send() = %v, want terminal ErrUnexpectedResponse", err)
	}
}

func TestClientTransportError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connection refused
	c := newTestClient(t, "http://"+addr, testSecret, nil)
	_, err = c.Send(t.Context(), SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_chat", MsgType: "text", Content: text("x")})
	if !errors.Is(err, ErrTransport) || !IsRetryable(err) {
		t.Fatalf("Send() = %v, want retryable ErrTransport", err)
	}
}

func TestClientTimeoutIsTransportError(t *testing.T) {
	release := make(chan struct{})
	url, _, _ := stubMessages(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	c, err := New(Config{AppID: testAppID, AppSecret: testSecret, BaseURL: url, Timeout: 50 * time.Millisecond}, Deps{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(t.Context())
	_, err = c.Send(t.Context(), SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_chat", MsgType: "text", Content: text("x")})
	if !errors.Is(err, ErrTransport) || !IsRetryable(err) {
		t.Fatalf("Send() = %v, want retryable ErrTransport", err)
	}
}

func TestClientContextCanceled(t *testing.T) {
	h := newHarness(t)
	c := h.client(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := c.Send(ctx, SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_chat", MsgType: "text", Content: text("x")})
	if !errors.Is(err, context.Canceled) || IsRetryable(err) {
		t.Fatalf("Send() = %v, want non-retryable context.Canceled", err)
	}
	if got := h.emu.TokenFetches(); got != 0 {
		t.Fatalf("%d token fetches, want 0", got)
	}
}

func TestClientClose(t *testing.T) {
	h := newHarness(t)
	c := h.client(t)
	for range 2 {
		if err := c.Close(t.Context()); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	_, err := c.Reply(t.Context(), ReplyRequest{MessageID: "om_1", MsgType: "text", Content: text("x")})
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Reply after Close = %v, want ErrClosed", err)
	}
}
