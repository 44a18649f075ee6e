package action

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/larkway/larkway/core/internal/action/breaker"
	"github.com/larkway/larkway/core/internal/action/ratelimit"
	"github.com/larkway/larkway/core/internal/lark"
	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	appA   = "cli_a"
	secret = "secret"
)

// clusterOpts describe a test deployment: an emulator and replicas of the
// executor.
type clusterOpts struct {
	replicas int
	redis    bool                // share state through Redis (else in memory: one replica)
	emu      *larkemu.RateLimits // nil: the emulator is unlimited
	cfg      Config
	failed   FailedStore
}

type cluster struct {
	emu    *larkemu.Emulator
	url    string
	rdb    redis.UniversalClient
	prefix string
	execs  []*Executor
	regs   []*prometheus.Registry
}

func newCluster(t testing.TB, o clusterOpts) *cluster {
	t.Helper()
	c := &cluster{prefix: testenv.Name(t, "lw") + ":"}
	opts := larkemu.Options{Apps: map[string]string{appA: secret}, Unlimited: o.emu == nil}
	if o.emu != nil {
		opts.Limits = *o.emu
	}
	c.emu = larkemu.New(opts)
	srv := httptest.NewServer(c.emu.Handler())
	t.Cleanup(srv.Close)
	c.url = srv.URL
	if o.redis {
		rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), PoolSize: 64})
		t.Cleanup(func() { _ = rdb.Close() })
		c.rdb = rdb
	}
	if o.replicas == 0 {
		o.replicas = 1
	}
	for i := range o.replicas {
		var tokens lark.TokenCache
		if c.rdb != nil {
			tokens = lark.NewRedisTokenCache(c.rdb, c.prefix+"lark:")
		}
		cli, err := lark.New(lark.Config{AppID: appA, AppSecret: secret, BaseURL: c.url, Timeout: 5 * time.Second}, lark.Deps{Tokens: tokens})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cli.Close(context.Background()) })
		cfg := o.cfg
		cfg.KeyPrefix = c.prefix + "action:"
		reg := prometheus.NewRegistry()
		ex, err := New(cfg, Deps{Clients: map[string]Client{appA: cli}, Redis: c.rdb, FailedActions: o.failed, Registerer: reg,
			Logger: testLogger(t).With("replica", i)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ex.Close(context.Background()) })
		c.execs = append(c.execs, ex)
		c.regs = append(c.regs, reg)
	}
	return c
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func event() *pluginv1.Event {
	return messageEvent("om_1", "oc_1")
}

func messageEvent(messageID, chatID string) *pluginv1.Event {
	return &pluginv1.Event{EventId: "ev-" + messageID, AppId: appA, DedupKey: messageID, ChatId: chatID,
		Sender:  &pluginv1.UserId{OpenId: "ou_sender"},
		Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: messageID, ChatId: chatID}}}
}

func reply(text string) *pluginv1.Action {
	return &pluginv1.Action{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MsgType: "text", ContentJson: `{"text":"` + text + `"}`}}}
}

var allowReply = []pluginv1.ActionKind{pluginv1.ActionKind_ACTION_KIND_REPLY}

var allowAll = []pluginv1.ActionKind{pluginv1.ActionKind_ACTION_KIND_SEND, pluginv1.ActionKind_ACTION_KIND_REPLY,
	pluginv1.ActionKind_ACTION_KIND_UPDATE_CARD, pluginv1.ActionKind_ACTION_KIND_REACTION, pluginv1.ActionKind_ACTION_KIND_RAW_CALL}

func TestExecuteReplyIsIdempotent(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	req := Request{Plugin: "p", Allowed: allowReply, Event: event(), Actions: []*pluginv1.Action{reply("one"), reply("two")}}
	for range 3 { // a redelivered event runs the same actions again
		refused, err := c.execs[0].Execute(t.Context(), req)
		if err != nil || len(refused) != 0 {
			t.Fatalf("refused %v err %v", refused, err)
		}
	}
	msgs := c.emu.Messages()
	if len(msgs) != 2 || msgs[0].ParentID != "om_1" || !strings.Contains(msgs[1].Content, "two") {
		t.Fatalf("emulator recorded %+v", msgs)
	}
}

func TestExecuteRefusals(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	send := &pluginv1.Action{Kind: &pluginv1.Action_Send{Send: &pluginv1.SendMessage{ReceiveIdType: "chat_id", ReceiveId: "oc_1", MsgType: "text", ContentJson: `{"text":"x"}`}}}
	badContent := &pluginv1.Action{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MsgType: "text", ContentJson: `not json`}}}
	tooLong := reply(strings.Repeat("x", 151*1024))
	bigCard := &pluginv1.Action{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MsgType: "interactive",
		ContentJson: fmt.Sprintf(`{"elements":[{"tag":"markdown","content":%q}]}`, strings.Repeat("x", 31*1024))}}}
	refused, err := c.execs[0].Execute(t.Context(), Request{Plugin: "p", Allowed: allowReply, Event: event(),
		Actions: []*pluginv1.Action{send, {}, badContent, tooLong, bigCard, reply("ok")}})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		index  uint32
		reason string
	}{
		{0, "allowed_actions"}, {1, "empty"}, {2, "content is not a JSON document"},
		{3, "at most 150 KB for text messages"}, {4, "at most 30 KB for cards and posts"},
	}
	if len(refused) != len(want) {
		t.Fatalf("refused %v", refused)
	}
	for i, w := range want {
		if refused[i].GetIndex() != w.index || !strings.Contains(refused[i].GetReason(), w.reason) {
			t.Errorf("refusal %d: %v, want index %d with %q", i, refused[i], w.index, w.reason)
		}
	}
	if msgs := c.emu.Messages(); len(msgs) != 1 || !strings.Contains(msgs[0].Content, "ok") {
		t.Fatalf("emulator recorded %+v", msgs)
	}
	// Refused actions never reached Lark.
	for _, call := range c.emu.Calls() {
		if call.API != larkemu.APITenantToken && call.Code != 0 {
			t.Fatalf("a refused action was sent: %+v", call)
		}
	}
}

func TestExecuteWithoutClient(t *testing.T) {
	e, err := New(Config{}, Deps{Clients: map[string]Client{}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(t.Context())
	_, err = e.Execute(t.Context(), Request{Plugin: "p", Allowed: allowReply, Event: event(), Actions: []*pluginv1.Action{reply("x")}})
	if !errors.Is(err, ErrNoClient) {
		t.Fatalf("err %v", err)
	}
}

func TestEveryActionKind(t *testing.T) {
	c := newCluster(t, clusterOpts{emu: ptr(larkemu.LarkLimits())})
	ex := c.execs[0]
	ev := messageEvent("om_in", "oc_kinds")
	c.emu.RegisterInbound("om_in", "oc_kinds")
	card := `{"config":{"update_multi":true},"elements":[{"tag":"markdown","content":"v1"}]}`
	run := func(actions ...*pluginv1.Action) {
		t.Helper()
		refused, err := ex.Execute(t.Context(), Request{Plugin: "p", Allowed: allowAll, Event: ev, Actions: actions})
		if err != nil || len(refused) != 0 {
			t.Fatalf("refused %v, err %v", refused, err)
		}
	}
	run(
		&pluginv1.Action{Kind: &pluginv1.Action_Send{Send: &pluginv1.SendMessage{ReceiveIdType: "chat_id", ReceiveId: "oc_kinds", MsgType: "interactive", ContentJson: card}}},
		&pluginv1.Action{Kind: &pluginv1.Action_Send{Send: &pluginv1.SendMessage{ReceiveIdType: "open_id", ReceiveId: "ou_sender", MsgType: "text", ContentJson: `{"text":"dm"}`}}},
		&pluginv1.Action{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MsgType: "text", ContentJson: `{"text":"in thread"}`, ReplyInThread: true}}},
		&pluginv1.Action{Kind: &pluginv1.Action_AddReaction{AddReaction: &pluginv1.AddReaction{EmojiType: "DONE"}}},
	)
	msgs := c.emu.Messages()
	if len(msgs) != 3 || msgs[0].MsgType != "interactive" || msgs[1].ReceiveIDType != "open_id" || !msgs[2].ReplyInThread || msgs[2].ChatID != "oc_kinds" {
		t.Fatalf("messages %+v", msgs)
	}
	reactions := c.emu.Reactions()
	if len(reactions) != 1 || reactions[0].MessageID != "om_in" || reactions[0].EmojiType != "DONE" {
		t.Fatalf("reactions %+v", reactions)
	}
	cardID := msgs[0].MessageID
	cardEv := &pluginv1.Event{EventId: "ev-card", AppId: appA, DedupKey: "ev-card", ChatId: "oc_kinds",
		Payload: &pluginv1.Event_CardAction{CardAction: &pluginv1.CardAction{OpenMessageId: cardID, Token: c.emu.IssueCardToken(cardID)}}}
	refused, err := ex.Execute(t.Context(), Request{Plugin: "p", Allowed: allowAll, Event: cardEv, Actions: []*pluginv1.Action{
		{Kind: &pluginv1.Action_UpdateCard{UpdateCard: &pluginv1.UpdateCard{CardJson: card}}}, // the clicked card
		{Kind: &pluginv1.Action_DelayedCardUpdate{DelayedCardUpdate: &pluginv1.DelayedCardUpdate{CardJson: `{"elements":[]}`, OpenIds: []string{"ou_sender"}}}},
		{Kind: &pluginv1.Action_RemoveReaction{RemoveReaction: &pluginv1.RemoveReaction{MessageId: "om_in", ReactionId: reactions[0].ReactionID}}},
		{Kind: &pluginv1.Action_RawCall{RawCall: &pluginv1.RawCall{Method: "DELETE", Path: "/open-apis/im/v1/messages/" + msgs[1].MessageID}}},
	}})
	if err != nil || len(refused) != 0 {
		t.Fatalf("card actions: refused %v, err %v", refused, err)
	}
	ups := c.emu.Updates()
	if len(ups) != 2 || ups[0].Kind != "patch" || ups[0].MessageID != cardID || ups[1].Kind != "delayed" || ups[1].OpenIDs[0] != "ou_sender" {
		t.Fatalf("updates %+v", ups)
	}
	if !c.emu.Reactions()[0].Removed || !c.emu.Messages()[1].Deleted {
		t.Fatal("reaction not removed or message not recalled")
	}
	// Without the manifest's permission, nothing is called.
	refused, _ = ex.Execute(t.Context(), Request{Plugin: "p", Allowed: allowReply, Event: ev, Actions: []*pluginv1.Action{
		{Kind: &pluginv1.Action_RawCall{RawCall: &pluginv1.RawCall{Method: "GET", Path: "/open-apis/im/v1/chats"}}},
		{Kind: &pluginv1.Action_AddReaction{AddReaction: &pluginv1.AddReaction{EmojiType: "DONE"}}},
	}})
	if len(refused) != 2 || !strings.Contains(refused[0].GetReason(), "ACTION_KIND_RAW_CALL") {
		t.Fatalf("refused %v", refused)
	}
	if c.emu.Throttled() != 0 {
		t.Fatal("throttled")
	}
}

func ptr[T any](v T) *T { return &v }

// scriptedClient answers every call with the next error of a script (the
// last one repeating), counting calls.
type scriptedClient struct {
	mu     sync.Mutex
	errs   []error
	calls  atomic.Int32
	called chan struct{} // receives once per call, if non-nil
}

func (s *scriptedClient) next() error {
	n := int(s.calls.Add(1))
	if s.called != nil {
		s.called <- struct{}{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) == 0 {
		return nil
	}
	return s.errs[min(n, len(s.errs))-1]
}

func (s *scriptedClient) Reply(context.Context, lark.ReplyRequest) (lark.Sent, error) {
	return lark.Sent{MessageID: "om_r"}, s.next()
}
func (s *scriptedClient) Send(context.Context, lark.SendRequest) (lark.Sent, error) {
	return lark.Sent{MessageID: "om_s"}, s.next()
}
func (s *scriptedClient) UpdateCard(context.Context, lark.UpdateCardRequest) error { return s.next() }
func (s *scriptedClient) DelayedUpdateCard(context.Context, lark.DelayedCardUpdateRequest) error {
	return s.next()
}
func (s *scriptedClient) AddReaction(context.Context, lark.AddReactionRequest) (lark.Reaction, error) {
	return lark.Reaction{ID: "r"}, s.next()
}
func (s *scriptedClient) RemoveReaction(context.Context, lark.RemoveReactionRequest) error {
	return s.next()
}
func (s *scriptedClient) Raw(context.Context, lark.RawRequest) (lark.RawResponse, error) {
	return lark.RawResponse{}, s.next()
}

func fastRetry() RetryPolicy {
	return RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}
}

// TestRetryClassification: retryable failures are retried up to the policy
// and then — on the event's final delivery — kept as a failed action, or before it
// handed back for redelivery; business errors are not retried.
func TestRetryClassification(t *testing.T) {
	rateLimited := &lark.APIError{Code: lark.CodeRateLimited, HTTPStatus: 429, RetryAfter: time.Millisecond}
	tests := map[string]struct {
		errs      []error
		calls     int32
		exhausted bool   // retries run out: redelivered, or kept as failed on the final attempt
		refused   string // "" when done
	}{
		"success":                 {nil, 1, false, ""},
		"bot not in chat":         {[]error{&lark.APIError{Code: lark.CodeBotNotInChat, HTTPStatus: 400}}, 1, false, "230002"},
		"no permission":           {[]error{&lark.APIError{Code: lark.CodeNoPermission, HTTPStatus: 400}}, 1, false, "230027"},
		"content rejected":        {[]error{&lark.APIError{Code: 230028, HTTPStatus: 400}}, 1, false, "230028"},
		"5xx then success":        {[]error{&lark.APIError{HTTPStatus: 502}, nil}, 2, false, ""},
		"transport then success":  {[]error{fmt.Errorf("%w: reset", lark.ErrTransport), nil}, 2, false, ""},
		"rate limited then ok":    {[]error{rateLimited, nil}, 2, false, ""},
		"5xx forever":             {[]error{&lark.APIError{HTTPStatus: 500}}, 3, true, "failed after 3 attempts, kept as a failed action"},
		"rate limited forever":    {[]error{rateLimited}, 3, true, "failed after 3 attempts, kept as a failed action"},
		"token invalid then busy": {[]error{&lark.APIError{Code: lark.CodeTenantTokenInvalid, HTTPStatus: 400}, &lark.APIError{Code: lark.CodeMessageBeingSent, HTTPStatus: 400}, nil}, 3, false, ""},
	}
	for name, tc := range tests {
		for _, final := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/final=%v", name, final), func(t *testing.T) {
				cli := &scriptedClient{errs: tc.errs}
				failed := &MemoryFailedStore{}
				e, err := New(Config{Retry: fastRetry(), Limits: ratelimit.Limits{Disabled: true}}, Deps{Clients: map[string]Client{appA: cli}, FailedActions: failed})
				if err != nil {
					t.Fatal(err)
				}
				defer e.Close(t.Context())
				refused, err := e.Execute(t.Context(), Request{Plugin: "p", Allowed: allowReply, Event: event(),
					Actions: []*pluginv1.Action{reply("x")}, Attempts: 2, FinalAttempt: final})
				if got := cli.calls.Load(); got != tc.calls {
					t.Errorf("%d calls, want %d", got, tc.calls)
				}
				if tc.exhausted && !final {
					if !errors.Is(err, ErrRetryable) || failedCount(t, failed) != 0 {
						t.Fatalf("Execute = %v with %d failed actions, want ErrRetryable and none", err, failedCount(t, failed))
					}
					return
				}
				if err != nil {
					t.Fatalf("Execute: %v", err)
				}
				if tc.refused == "" && len(refused) != 0 || tc.refused != "" && (len(refused) != 1 || !strings.Contains(refused[0].GetReason(), tc.refused)) {
					t.Errorf("refused %v, want %q", refused, tc.refused)
				}
				dls, _ := failed.List(t.Context(), 0)
				if (len(dls) == 1) != tc.exhausted || len(dls) > 1 {
					t.Fatalf("failed actions %+v, want %v", dls, tc.exhausted)
				}
				if tc.exhausted {
					dl := dls[0]
					if dl.Plugin != "p" || dl.AppID != appA || dl.EventID != "ev-om_1" || dl.Kind != "reply" || dl.Attempts != 3 ||
						dl.DeliveryAttempt != 2 || dl.Error == "" || !strings.Contains(string(dl.Action), "reply") ||
						dl.UUID != IdempotencyKey(appA, "om_1", "p", 0) || dl.MessageID != "om_1" || dl.ID == "" {
						t.Fatalf("failed action %+v", dl)
					}
				}
			})
		}
	}
}

// TestContextEndAsksForRedelivery: when the context ends while an action is
// retrying or waiting, Execute asks for the event again.
func TestContextEndAsksForRedelivery(t *testing.T) {
	cli := &scriptedClient{errs: []error{&lark.APIError{HTTPStatus: 503}}}
	e, err := New(Config{Retry: RetryPolicy{MaxAttempts: 100, BaseDelay: time.Hour, MaxDelay: time.Hour}}, Deps{Clients: map[string]Client{appA: cli}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(t.Context())
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = e.Execute(ctx, Request{Plugin: "p", Allowed: allowReply, Event: event(), Actions: []*pluginv1.Action{reply("x")}})
	if !errors.Is(err, ErrRetryable) {
		t.Fatalf("Execute = %v, want ErrRetryable", err)
	}
	// After Close, too.
	_ = e.Close(t.Context())
	_, err = e.Execute(t.Context(), Request{Plugin: "p", Allowed: allowReply, Event: event(), Actions: []*pluginv1.Action{reply("x")}})
	if !errors.Is(err, ErrRetryable) || !errors.Is(err, ErrClosed) {
		t.Fatalf("Execute after Close = %v, want ErrRetryable and ErrClosed", err)
	}
}

// failingStore cannot write.
type failingStore struct{ MemoryFailedStore }

func (*failingStore) Put(context.Context, FailedAction) error {
	return errors.New("disk full")
}

func TestFailedStoreWriteFailureAsksForRedelivery(t *testing.T) {
	cli := &scriptedClient{errs: []error{&lark.APIError{HTTPStatus: 500}}}
	e, err := New(Config{Retry: fastRetry(), Limits: ratelimit.Limits{Disabled: true}}, Deps{Clients: map[string]Client{appA: cli}, FailedActions: &failingStore{}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(t.Context())
	_, err = e.Execute(t.Context(), Request{Plugin: "p", Allowed: allowReply, Event: event(), Actions: []*pluginv1.Action{reply("x")}, FinalAttempt: true})
	if !errors.Is(err, ErrRetryable) {
		t.Fatalf("Execute = %v, want ErrRetryable", err)
	}
}

func TestIdempotencyKey(t *testing.T) {
	a := IdempotencyKey("cli_a", "om_1", "p", 0)
	if a != IdempotencyKey("cli_a", "om_1", "p", 0) || len(a) > 50 {
		t.Fatalf("key %q", a)
	}
	seen := map[string]bool{a: true}
	for _, k := range []string{IdempotencyKey("cli_b", "om_1", "p", 0), IdempotencyKey("cli_a", "om_2", "p", 0),
		IdempotencyKey("cli_a", "om_1", "q", 0), IdempotencyKey("cli_a", "om_1", "p", 1), IdempotencyKey("cli_a", "om_1p", "", 0),
		IdempotencyKey("cli_a", "om_1", "p", -1)} {
		if seen[k] {
			t.Fatalf("collision %q", k)
		}
		seen[k] = true
	}
}

func TestConfigValidate(t *testing.T) {
	tests := map[string]struct {
		cfg  Config
		want string
	}{
		"defaults":          {Config{}, ""},
		"disabled limits":   {Config{Limits: ratelimit.Limits{Disabled: true}}, ""},
		"negative count":    {Config{Limits: ratelimit.Limits{PerChat: ratelimit.Limit{Count: -1, Window: time.Second}}}, "per_chat"},
		"no window":         {Config{Limits: ratelimit.Limits{AppPerMinute: ratelimit.Limit{Count: 10, Window: 0}}}, "app_per_minute"},
		"negative margin":   {Config{Limits: ratelimit.Limits{Margin: -time.Second}}, "margin"},
		"zero attempts":     {Config{Retry: RetryPolicy{MaxAttempts: -1}}, "max_attempts"},
		"max under base":    {Config{Retry: RetryPolicy{BaseDelay: time.Second, MaxDelay: time.Millisecond}}, "base_delay"},
		"negative open_for": {Config{Breaker: breaker.Settings{OpenFor: -time.Second}}, "open_for"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
			if _, nerr := New(tc.cfg, Deps{}); (nerr == nil) != (tc.want == "") {
				t.Fatalf("New() = %v", nerr)
			}
		})
	}
}

func failedCount(t *testing.T, s FailedStore) int {
	t.Helper()
	n, err := s.Count(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return n
}
