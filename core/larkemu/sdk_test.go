package larkemu_test

// These tests drive the emulator with the official oapi-sdk-go, through
// core/internal/lark (the only package that imports the SDK): what works
// against the emulator must work unmodified against Lark.

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/lark"
	"github.com/larkway/larkway/core/larkemu"
)

func newSDKClient(t *testing.T, e *env, appSecret string) *lark.Client {
	t.Helper()
	c, err := lark.New(lark.Config{AppID: appID, AppSecret: appSecret, BaseURL: e.srv.URL, Timeout: 5 * time.Second},
		lark.Deps{Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(t.Context()) })
	return c
}

func TestSDKReplyAndSend(t *testing.T) {
	e := newAppEnv(t)
	c := newSDKClient(t, e, secret)

	reply, err := c.Reply(t.Context(), lark.ReplyRequest{MessageID: "om_inbound", MsgType: "text", Content: textBody("pong"), UUID: "reply-1"})
	if err != nil {
		t.Fatalf("Reply: %v", err)
	}
	sent, err := c.Send(t.Context(), lark.SendRequest{ReceiveIDType: lark.ReceiveIDChatID, ReceiveID: "oc_group", MsgType: "interactive",
		Content: `{"elements":[{"tag":"markdown","content":"**hi**"}]}`, UUID: "send-1"})
	if err != nil {
		t.Fatalf("Send: %v", err)
	}

	msgs := e.emu.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages recorded, want exactly 2: %+v", len(msgs), msgs)
	}
	var replies, sends []larkemu.Message
	for _, m := range msgs {
		if m.ParentID != "" {
			replies = append(replies, m)
		} else {
			sends = append(sends, m)
		}
	}
	if len(replies) != 1 || len(sends) != 1 {
		t.Fatalf("%d replies and %d sends, want one each", len(replies), len(sends))
	}
	if r := replies[0]; r.MessageID != reply.MessageID || r.ChatID != reply.ChatID || r.ParentID != "om_inbound" || r.Content != textBody("pong") || r.UUID != "reply-1" {
		t.Errorf("reply recorded %+v, client got %+v", r, reply)
	}
	if s := sends[0]; s.MessageID != sent.MessageID || s.ChatID != "oc_group" || sent.ChatID != "oc_group" || s.MsgType != "interactive" || s.UUID != "send-1" {
		t.Errorf("send recorded %+v, client got %+v", s, sent)
	}
	if got := e.emu.TokenFetches(); got != 1 {
		t.Errorf("%d token fetches, want 1", got)
	}
}

func TestSDKUUIDRetry(t *testing.T) {
	e := newAppEnv(t)
	c := newSDKClient(t, e, secret)
	req := lark.SendRequest{ReceiveIDType: lark.ReceiveIDOpenID, ReceiveID: "ou_user", MsgType: "text", Content: textBody("once"), UUID: "retry-me"}
	first, err := c.Send(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.Send(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Fatalf("retry returned %+v, first %+v", second, first)
	}
	if got := len(e.emu.Messages()); got != 1 {
		t.Fatalf("%d messages recorded, want 1", got)
	}
}

func TestSDKErrors(t *testing.T) {
	e := newAppEnv(t)
	tests := map[string]struct {
		secret string
		req    lark.SendRequest
		code   int
	}{
		"wrong app secret": {"wrong", lark.SendRequest{ReceiveIDType: lark.ReceiveIDChatID, ReceiveID: "oc_1", MsgType: "text",
			Content: textBody("x")}, 10014},
		"unknown msg_type": {secret, lark.SendRequest{ReceiveIDType: lark.ReceiveIDChatID, ReceiveID: "oc_1", MsgType: "markdown",
			Content: textBody("x")}, 99992402},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := newSDKClient(t, e, tc.secret)
			_, err := c.Send(t.Context(), tc.req)
			var ae *lark.APIError
			if !errors.As(err, &ae) || ae.Code != tc.code {
				t.Fatalf("Send() = %v, want APIError code %d", err, tc.code)
			}
			if lark.IsRetryable(err) {
				t.Fatalf("code %d classed retryable", tc.code)
			}
		})
	}
	// Oversized bodies: the client refuses them before sending; sent anyway
	// through the SDK (a raw call), the emulator answers 230025.
	c := newSDKClient(t, e, secret)
	for _, req := range []lark.SendRequest{
		{ReceiveIDType: lark.ReceiveIDChatID, ReceiveID: "oc_1", MsgType: "text", Content: textBody(strings.Repeat("x", 151<<10))},
		{ReceiveIDType: lark.ReceiveIDChatID, ReceiveID: "oc_1", MsgType: "interactive",
			Content: `{"elements":[{"tag":"markdown","content":"` + strings.Repeat("x", 31<<10) + `"}]}`},
	} {
		if _, err := c.Send(t.Context(), req); !errors.Is(err, lark.ErrContentTooLarge) {
			t.Fatalf("Send(%s) = %v, want ErrContentTooLarge", req.MsgType, err)
		}
		_, err := c.Raw(t.Context(), lark.RawRequest{Method: "POST", Path: "/open-apis/im/v1/messages?receive_id_type=chat_id",
			Body: []byte(sendBody(req.ReceiveID, req.MsgType, req.Content, ""))})
		var ae *lark.APIError
		if !errors.As(err, &ae) || ae.Code != 230025 {
			t.Fatalf("raw oversized %s = %v, want 230025", req.MsgType, err)
		}
	}
	if got := len(e.emu.Messages()); got != 0 {
		t.Fatalf("%d messages recorded, want 0", got)
	}
}

func TestSDKTokenExpiryRefetchesOnce(t *testing.T) {
	// Short TTL; the emulator's clock moves past it while the client (on real
	// time) still believes its token valid: Lark answers 99991663 and the
	// client refetches exactly once.
	e := newEnv(t, larkemu.Options{Apps: map[string]string{appID: secret}, TokenTTL: time.Minute})
	c := newSDKClient(t, e, secret)
	send := func() {
		t.Helper()
		if _, err := c.Send(t.Context(), lark.SendRequest{ReceiveIDType: lark.ReceiveIDChatID, ReceiveID: "oc_1", MsgType: "text", Content: textBody("x")}); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	send()
	if got := e.emu.TokenFetches(); got != 1 {
		t.Fatalf("%d token fetches, want 1", got)
	}
	e.clock.Advance(time.Minute)
	send()
	if got := e.emu.TokenFetches(); got != 2 {
		t.Fatalf("%d token fetches after expiry, want 2", got)
	}
	send()
	if got := e.emu.TokenFetches(); got != 2 {
		t.Fatalf("%d token fetches with a fresh token, want 2", got)
	}
	if got := len(e.emu.Messages()); got != 3 {
		t.Fatalf("%d messages recorded, want 3", got)
	}
}

// TestSDKSeesRateLimits: through the SDK, the emulator's limits arrive as
// Lark's — a 429 with x-ogw-ratelimit-reset for the app, 230020 for a chat.
func TestSDKSeesRateLimits(t *testing.T) {
	e := newEnv(t, larkemu.Options{Apps: map[string]string{appID: secret}})
	c := newSDKClient(t, e, secret)
	send := func(chat string) error {
		_, err := c.Send(t.Context(), lark.SendRequest{ReceiveIDType: lark.ReceiveIDChatID, ReceiveID: chat, MsgType: "text", Content: textBody("x")})
		return err
	}
	for i := range 5 {
		if err := send("oc_busy"); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	var ae *lark.APIError
	if err := send("oc_busy"); !errors.As(err, &ae) || !ae.ChatRateLimited() || !ae.RateLimited() || ae.HTTPStatus != 400 {
		t.Fatalf("6th send to a chat = %v, want 230020", err)
	}
	for i := range 44 {
		if err := send(fmt.Sprint("oc_", i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	err := send("oc_last")
	if !errors.As(err, &ae) || ae.Code != lark.CodeRateLimited || ae.HTTPStatus != 429 || ae.RetryAfter != time.Second || ae.ChatRateLimited() {
		t.Fatalf("51st send = %v, want 429 99991400 retry after 1s", err)
	}
}
