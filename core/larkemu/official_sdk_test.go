package larkemu_test

// The official SDK's client (oapi-sdk-go v3.2.2, unmodified) pointed at the
// emulator, as a plugin author would use it: every call the emulator serves
// succeeds through the SDK's typed builders (or its generic Post where
// v3.2.2 has no builder), and failures arrive as the SDK's Lark errors
// (CodeError). sdk_test.go drives the emulator through larkway's own
// client instead. Tests may import the SDK; only core/internal/lark may in
// production code (docs/architecture.md#rules).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"

	larksdk "github.com/larksuite/oapi-sdk-go/v3"
	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
	larkim "github.com/larksuite/oapi-sdk-go/v3/service/im/v1"

	"github.com/larkway/larkway/core/larkemu"
)

// sdkTestLogger sends the SDK's logs to the test log.
type sdkTestLogger struct{ t *testing.T }

func (l sdkTestLogger) log(level string, args []any) {
	l.t.Helper()
	l.t.Log(append([]any{"oapi-sdk-go " + level + ":"}, args...)...)
}
func (l sdkTestLogger) Debug(_ context.Context, args ...any) { l.log("debug", args) }
func (l sdkTestLogger) Info(_ context.Context, args ...any)  { l.log("info", args) }
func (l sdkTestLogger) Warn(_ context.Context, args ...any)  { l.log("warn", args) }
func (l sdkTestLogger) Error(_ context.Context, args ...any) { l.log("error", args) }

var sdkAppSeq atomic.Int64

// newSDKEnv serves an unlimited emulator for n fresh apps (secret secret)
// and returns their IDs. The SDK's token cache is process-wide and keyed by
// app ID alone (docs/lark-facts.md#sdk-pitfalls): a client would use a
// token another emulator issued to the same app ID, so each client gets an
// app ID no other client in the process used.
func newSDKEnv(t *testing.T, n int) (*env, []string) {
	t.Helper()
	apps := map[string]string{}
	var ids []string
	for range n {
		id := fmt.Sprint("cli_sdk_", sdkAppSeq.Add(1))
		apps[id] = secret
		ids = append(ids, id)
	}
	return newEnv(t, larkemu.Options{Apps: apps, Unlimited: true}), ids
}

// newOfficialClient is the official client for app id/secret, pointed at e
// with WithOpenBaseUrl; everything else is the SDK's default (its token
// cache included) unless opts say otherwise.
func newOfficialClient(t *testing.T, e *env, id, secret string, opts ...larksdk.ClientOptionFunc) *larksdk.Client {
	t.Helper()
	return larksdk.NewClient(id, secret, append([]larksdk.ClientOptionFunc{
		larksdk.WithOpenBaseUrl(e.srv.URL),
		larksdk.WithHttpClient(e.srv.Client()),
		larksdk.WithLogger(sdkTestLogger{t}),
		larksdk.WithLogLevel(larkcore.LogLevelDebug),
	}, opts...)...)
}

// mustSucceed fails the test unless an SDK call returned no error and code 0.
func mustSucceed(t *testing.T, call string, resp interface{ Success() bool }, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", call, err)
	}
	if !resp.Success() {
		b, _ := json.Marshal(resp)
		t.Fatalf("%s: not a success: %s", call, b)
	}
}

func str(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// TestOfficialSDKCalls makes every call the emulator serves with the
// official client and checks each answer decodes into the SDK's types with
// what the emulator recorded.
func TestOfficialSDKCalls(t *testing.T) {
	e, apps := newSDKEnv(t, 1)
	app := apps[0]
	ctx := t.Context()
	c := newOfficialClient(t, e, app, secret)
	e.emu.RegisterInboundMessage(larkemu.InboundMessage{MessageID: "om_user", ChatID: "oc_sdk", SenderOpenID: "ou_alice", Content: textBody("hello bot")})
	e.emu.SetChat(larkemu.Chat{ChatID: "oc_sdk", Name: "SDK chat", OwnerOpenID: "ou_alice",
		Members: []larkemu.Member{{OpenID: "ou_alice", Name: "Alice"}, {OpenID: "ou_bob", Name: "Bob"}, {OpenID: "ou_carol", Name: "Carol"}}})

	tok, err := c.GetTenantAccessTokenBySelfBuiltApp(ctx, &larkcore.SelfBuiltTenantAccessTokenReq{AppID: app, AppSecret: secret})
	mustSucceed(t, "auth.v3.tenantAccessToken.internal", tok, err)
	if tok.TenantAccessToken == "" || tok.Expire <= 0 {
		t.Fatalf("token response %+v", tok)
	}

	sent, err := c.Im.Message.Create(ctx, larkim.NewCreateMessageReqBuilder().ReceiveIdType(larkim.ReceiveIdTypeChatId).
		Body(larkim.NewCreateMessageReqBodyBuilder().ReceiveId("oc_sdk").MsgType(larkim.MsgTypeText).Content(textBody("hi")).Uuid("sdk-send-1").Build()).Build())
	mustSucceed(t, "im.v1.message.create", sent, err)
	msgID := str(sent.Data.MessageId)
	if str(sent.Data.ChatId) != "oc_sdk" || str(sent.Data.Body.Content) != textBody("hi") {
		t.Fatalf("send answered %s", sent.RawBody)
	}
	toUser, err := c.Im.Message.Create(ctx, larkim.NewCreateMessageReqBuilder().ReceiveIdType(larkim.ReceiveIdTypeOpenId).
		Body(larkim.NewCreateMessageReqBodyBuilder().ReceiveId("ou_alice").MsgType(larkim.MsgTypeText).Content(textBody("psst")).Build()).Build())
	mustSucceed(t, "im.v1.message.create (to a user)", toUser, err)

	reply, err := c.Im.Message.Reply(ctx, larkim.NewReplyMessageReqBuilder().MessageId("om_user").
		Body(larkim.NewReplyMessageReqBodyBuilder().MsgType(larkim.MsgTypeText).Content(textBody("pong")).ReplyInThread(true).Uuid("sdk-reply-1").Build()).Build())
	mustSucceed(t, "im.v1.message.reply", reply, err)
	if str(reply.Data.ParentId) != "om_user" || str(reply.Data.ChatId) != "oc_sdk" || str(reply.Data.ThreadId) == "<nil>" {
		t.Fatalf("reply answered %s", reply.RawBody)
	}

	got, err := c.Im.Message.Get(ctx, larkim.NewGetMessageReqBuilder().MessageId(msgID).Build())
	mustSucceed(t, "im.v1.message.get", got, err)
	if len(got.Data.Items) != 1 || str(got.Data.Items[0].Body.Content) != textBody("hi") || str(got.Data.Items[0].Sender.SenderType) != "app" {
		t.Fatalf("message.get answered %s", got.RawBody)
	}
	user, err := c.Im.Message.Get(ctx, larkim.NewGetMessageReqBuilder().MessageId("om_user").UserIdType(larkim.UserIdTypeOpenId).Build())
	mustSucceed(t, "im.v1.message.get (a user's)", user, err)
	if it := user.Data.Items[0]; str(it.Sender.Id) != "ou_alice" || str(it.Sender.SenderType) != "user" || str(it.Body.Content) != textBody("hello bot") {
		t.Fatalf("message.get of the user's message answered %s", user.RawBody)
	}

	edited, err := c.Im.Message.Update(ctx, larkim.NewUpdateMessageReqBuilder().MessageId(msgID).
		Body(larkim.NewUpdateMessageReqBodyBuilder().MsgType(larkim.MsgTypeText).Content(textBody("hi, edited")).Build()).Build())
	mustSucceed(t, "im.v1.message.update", edited, err)
	if edited.Data.Updated == nil || !*edited.Data.Updated || str(edited.Data.Body.Content) != textBody("hi, edited") {
		t.Fatalf("message.update answered %s", edited.RawBody)
	}

	card, err := c.Im.Message.Create(ctx, larkim.NewCreateMessageReqBuilder().ReceiveIdType(larkim.ReceiveIdTypeChatId).
		Body(larkim.NewCreateMessageReqBodyBuilder().ReceiveId("oc_sdk").MsgType(larkim.MsgTypeInteractive).Content(cardV1).Build()).Build())
	mustSucceed(t, "im.v1.message.create (a card)", card, err)
	cardID := str(card.Data.MessageId)
	patched, err := c.Im.Message.Patch(ctx, larkim.NewPatchMessageReqBuilder().MessageId(cardID).
		Body(larkim.NewPatchMessageReqBodyBuilder().Content(`{"config":{"update_multi":true},"elements":[{"tag":"markdown","content":"v2"}]}`).Build()).Build())
	mustSucceed(t, "im.v1.message.patch", patched, err)

	// v3.2.2 has no builder for the delayed update: its generic Post, as a
	// raw call would.
	delayed, err := c.Post(ctx, "/open-apis/interactive/v1/card/update", map[string]any{
		"token": e.emu.IssueCardToken(cardID),
		"card":  map[string]any{"elements": []any{map[string]any{"tag": "markdown", "content": "clicked"}}},
	}, larkcore.AccessTokenTypeTenant)
	if err != nil {
		t.Fatalf("interactive.v1.card.update: %v", err)
	}
	var ce larkcore.CodeError
	if err := json.Unmarshal(delayed.RawBody, &ce); err != nil || delayed.StatusCode != http.StatusOK || ce.Code != 0 {
		t.Fatalf("interactive.v1.card.update: HTTP %d %s (%v)", delayed.StatusCode, delayed.RawBody, err)
	}

	var reactionIDs []string
	for _, emoji := range []string{"SMILE", "THUMBSUP"} {
		r, err := c.Im.MessageReaction.Create(ctx, larkim.NewCreateMessageReactionReqBuilder().MessageId(msgID).
			Body(larkim.NewCreateMessageReactionReqBodyBuilder().ReactionType(larkim.NewEmojiBuilder().EmojiType(emoji).Build()).Build()).Build())
		mustSucceed(t, "im.v1.messageReaction.create", r, err)
		reactionIDs = append(reactionIDs, str(r.Data.ReactionId))
	}
	smiles, err := c.Im.MessageReaction.List(ctx, larkim.NewListMessageReactionReqBuilder().MessageId(msgID).ReactionType("SMILE").Build())
	mustSucceed(t, "im.v1.messageReaction.list", smiles, err)
	if len(smiles.Data.Items) != 1 || str(smiles.Data.Items[0].ReactionId) != reactionIDs[0] || str(smiles.Data.Items[0].Operator.OperatorId) != app {
		t.Fatalf("messageReaction.list answered %s", smiles.RawBody)
	}
	// The SDK's iterator follows page_token one reaction at a time.
	it, err := c.Im.MessageReaction.ListByIterator(ctx, larkim.NewListMessageReactionReqBuilder().MessageId(msgID).PageSize(1).Build())
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for {
		more, r, err := it.Next()
		if err != nil {
			t.Fatalf("messageReaction.list iterator: %v", err)
		}
		if !more {
			break
		}
		listed = append(listed, str(r.ReactionId))
	}
	if !slices.Equal(listed, reactionIDs) {
		t.Fatalf("iterator listed %v, want %v", listed, reactionIDs)
	}
	removed, err := c.Im.MessageReaction.Delete(ctx, larkim.NewDeleteMessageReactionReqBuilder().MessageId(msgID).ReactionId(reactionIDs[0]).Build())
	mustSucceed(t, "im.v1.messageReaction.delete", removed, err)

	chat, err := c.Im.Chat.Get(ctx, larkim.NewGetChatReqBuilder().ChatId("oc_sdk").UserIdType(larkim.UserIdTypeOpenId).Build())
	mustSucceed(t, "im.v1.chat.get", chat, err)
	if str(chat.Data.Name) != "SDK chat" || str(chat.Data.OwnerId) != "ou_alice" || str(chat.Data.UserCount) != "3" || str(chat.Data.ChatMode) != "group" {
		t.Fatalf("chat.get answered %s", chat.RawBody)
	}
	members, err := c.Im.ChatMembers.Get(ctx, larkim.NewGetChatMembersReqBuilder().ChatId("oc_sdk").MemberIdType("open_id").Build())
	mustSucceed(t, "im.v1.chatMembers.get", members, err)
	if members.Data.MemberTotal == nil || *members.Data.MemberTotal != 3 || len(members.Data.Items) != 3 {
		t.Fatalf("chatMembers.get answered %s", members.RawBody)
	}
	mit, err := c.Im.ChatMembers.GetByIterator(ctx, larkim.NewGetChatMembersReqBuilder().ChatId("oc_sdk").PageSize(2).Build())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for {
		more, m, err := mit.Next()
		if err != nil {
			t.Fatalf("chatMembers.get iterator: %v", err)
		}
		if !more {
			break
		}
		names = append(names, str(m.Name))
	}
	if fmt.Sprint(names) != "[Alice Bob Carol]" {
		t.Fatalf("iterator listed %v", names)
	}

	recalled, err := c.Im.Message.Delete(ctx, larkim.NewDeleteMessageReqBuilder().MessageId(msgID).Build())
	mustSucceed(t, "im.v1.message.delete", recalled, err)
	after, err := c.Im.Message.Get(ctx, larkim.NewGetMessageReqBuilder().MessageId(msgID).Build())
	mustSucceed(t, "im.v1.message.get (recalled)", after, err)
	if d := after.Data.Items[0].Deleted; d == nil || !*d {
		t.Fatalf("a recalled message read back as %s", after.RawBody)
	}

	// Every API the emulator serves was called, and every call succeeded.
	served := []string{larkemu.APITenantToken, larkemu.APISend, larkemu.APIReply, larkemu.APIGetMessage, larkemu.APIUpdateMessage,
		larkemu.APIPatch, larkemu.APICardUpdate, larkemu.APIAddReaction, larkemu.APIListReactions, larkemu.APIRemoveReaction,
		larkemu.APIGetChat, larkemu.APIGetChatMembers, larkemu.APIDelete}
	called := map[string]bool{}
	for _, call := range e.emu.Calls() {
		called[call.API] = true
		if call.Status != http.StatusOK || call.Code != 0 {
			t.Errorf("%s %s answered HTTP %d code %d", call.Method, call.Path, call.Status, call.Code)
		}
	}
	for _, api := range served {
		if !called[api] {
			t.Errorf("%s was not called", api)
		}
	}
	if len(called) != len(served) {
		t.Errorf("called %v, want exactly %v", called, served)
	}
}

// TestOfficialSDKErrors: what goes wrong reaches the official client as
// Lark's errors — an unknown route as a CodeError (not a decoding failure),
// bad credentials and bad tokens with Lark's codes.
func TestOfficialSDKErrors(t *testing.T) {
	e, apps := newSDKEnv(t, 3)
	ctx := t.Context()
	send := func(c *larksdk.Client, chat string, opts ...larkcore.RequestOptionFunc) (*larkim.CreateMessageResp, error) {
		return c.Im.Message.Create(ctx, larkim.NewCreateMessageReqBuilder().ReceiveIdType(larkim.ReceiveIdTypeChatId).
			Body(larkim.NewCreateMessageReqBodyBuilder().ReceiveId(chat).MsgType(larkim.MsgTypeText).Content(textBody("x")).Build()).Build(), opts...)
	}
	c := newOfficialClient(t, e, apps[0], secret)

	t.Run("unknown route, typed call", func(t *testing.T) {
		// im.v1.chat.list is a real Lark API the emulator does not serve.
		resp, err := c.Im.Chat.List(ctx, larkim.NewListChatReqBuilder().Build())
		if err != nil {
			t.Fatalf("chat.list: %v, want a response with a code", err)
		}
		if resp.Success() || resp.Code != 404 || resp.StatusCode != http.StatusNotFound || resp.Msg == "" {
			t.Fatalf("chat.list: HTTP %d code %d %q, want HTTP 404 code 404", resp.StatusCode, resp.Code, resp.Msg)
		}
	})
	t.Run("unknown route, generic call", func(t *testing.T) {
		resp, err := c.Get(ctx, "/open-apis/nonexistent/v1/things", nil, larkcore.AccessTokenTypeTenant)
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		var ce larkcore.CodeError
		if err := json.Unmarshal(resp.RawBody, &ce); err != nil || resp.StatusCode != http.StatusNotFound || ce.Code != 404 {
			t.Fatalf("HTTP %d %s (%v), want HTTP 404 with a code", resp.StatusCode, resp.RawBody, err)
		}
	})
	t.Run("business error", func(t *testing.T) {
		e.emu.SetBotInChat("oc_left", false)
		resp, err := send(c, "oc_left")
		if err != nil || resp.Success() || resp.Code != 230002 || resp.StatusCode != http.StatusBadRequest || resp.RequestId() == "" {
			t.Fatalf("send into a chat the bot left: %v %+v, want code 230002 with a log id", err, resp)
		}
	})
	credentials := map[string]struct {
		id, secret string
		code       int
	}{
		"wrong app secret": {apps[1], "wrong-secret", 10014},
		"unknown app":      {"cli_nobody", "any", 10003},
	}
	for name, tc := range credentials {
		t.Run(name, func(t *testing.T) {
			// The SDK fetches the token first and returns the token
			// endpoint's CodeError as the call's error.
			_, err := send(newOfficialClient(t, e, tc.id, tc.secret), "oc_1")
			var ce larkcore.CodeError
			if !errors.As(err, &ce) || ce.Code != tc.code {
				t.Fatalf("send = %v, want a CodeError with code %d", err, tc.code)
			}
		})
	}
	t.Run("forged tenant token", func(t *testing.T) {
		noCache := newOfficialClient(t, e, apps[0], secret, larksdk.WithEnableTokenCache(false))
		resp, err := send(noCache, "oc_1", larkcore.WithTenantAccessToken("t-forged"))
		if err != nil || resp.Code != 99991663 || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("send with a forged token: %v %+v, want HTTP 400 code 99991663", err, resp)
		}
	})
	t.Run("expired tenant token", func(t *testing.T) {
		fresh := newOfficialClient(t, e, apps[2], secret)
		before := e.emu.TokenFetches()
		resp, err := send(fresh, "oc_1")
		mustSucceed(t, "send", resp, err)
		e.emu.ExpireTokens()
		resp, err = send(fresh, "oc_1")
		if err != nil || resp.Code != 99991663 {
			t.Fatalf("send after the token expired: %v %+v, want code 99991663", err, resp)
		}
		// The SDK retries a token-invalid answer once, with the same cached
		// token (docs/lark-facts.md#sdk-pitfalls): no second fetch.
		if got := e.emu.TokenFetches() - before; got != 1 {
			t.Fatalf("%d token fetches, want 1", got)
		}
	})
}
