// Package action executes the actions plugins return on the Lark OpenAPI:
// it checks each against the plugin's manifest, plans the call (with a
// deterministic idempotency key, so a redelivered event can never post
// twice), performs it, retries what is worth retrying and keeps what
// exhausts its retries as a failed action, to be listed and replayed.
//
// Each call to Lark goes through, outermost first: retry (exponential
// backoff with jitter, retryable failures only) → rate limit (package
// ratelimit: a priority queue per app, under the app's per-API, per-chat,
// per-user and per-card limits) → circuit breaker (package breaker, per app
// and endpoint) → the lark.Client. With a Redis client the limits,
// "blocked until" marks and breakers are shared by every replica; without
// one (embedded mode) they live in the process and behave the same.
// Actions that exhaust their retries go to the FailedStore ("failed
// actions", not to be confused with the event dead letters of package dlq).
package action

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/larkway/larkway/core/internal/action/breaker"
	"github.com/larkway/larkway/core/internal/action/ratelimit"
	"github.com/larkway/larkway/core/internal/lark"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// ErrNoClient is returned for an event of an app with no Lark client.
var ErrNoClient = errors.New("no Lark client for app")

// ErrRetryable classes a failure worth redelivering the event for: the
// actions could not all be carried out or stored as failed before the
// context ended, the executor closed, or the failed-action store could not
// be written.
// Actions already done are safe to repeat: each send and reply carries a
// deterministic uuid.
var ErrRetryable = errors.New("retryable action failure")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("action executor closed")

// ErrNoTarget is returned by SendFallback for an event with neither a
// message nor a chat to answer in.
var ErrNoTarget = errors.New("event has no message or chat to reply to")

// Client is what the executor needs of a Lark app client (*lark.Client).
// Implementations are safe for concurrent use and honour ctx.
type Client interface {
	Reply(ctx context.Context, r lark.ReplyRequest) (lark.Sent, error)
	Send(ctx context.Context, r lark.SendRequest) (lark.Sent, error)
	UpdateCard(ctx context.Context, r lark.UpdateCardRequest) error
	DelayedUpdateCard(ctx context.Context, r lark.DelayedCardUpdateRequest) error
	AddReaction(ctx context.Context, r lark.AddReactionRequest) (lark.Reaction, error)
	RemoveReaction(ctx context.Context, r lark.RemoveReactionRequest) error
	Raw(ctx context.Context, r lark.RawRequest) (lark.RawResponse, error)
}

var _ Client = (*lark.Client)(nil)

// tokenWarmer is implemented by clients that can fetch their token ahead of
// a call (*lark.Client): the executor does so before a call waits for its
// rate-limit slot.
type tokenWarmer interface {
	WarmToken(ctx context.Context) error
}

var _ tokenWarmer = (*lark.Client)(nil)

// Request is one result's actions to perform.
type Request struct {
	Plugin  string
	Allowed []pluginv1.ActionKind
	// EventID is the event's id, set even when Event is nil (the bench
	// counts deliveries per event with it).
	EventID string
	// Event is the event the actions answer; nil when there are none (the
	// dispatcher decodes the whole event only when it has a use for it).
	Event    *pluginv1.Event
	Actions  []*pluginv1.Action
	Attempts int
	// FinalAttempt marks the event's last delivery: an action that exhausts
	// its retries is then stored as a failed action. Before that, the event is
	// redelivered instead (with its own backoff), so a Lark outage longer
	// than the executor's retries loses no reply.
	FinalAttempt bool
}

// Config tunes an Executor. The zero value uses Lark's limits and the
// default retry and breaker settings.
type Config struct {
	Limits  ratelimit.Limits
	Retry   RetryPolicy
	Breaker breaker.Settings
	// KeyPrefix prefixes every Redis key the executor uses (default
	// "larkway:action:"): rate limits under <prefix>{rl}:, blocks under
	// <prefix>{rl}:block:, breakers under <prefix>cb:, and the failed
	// actions in the list <prefix>dead-letters (FailedKey). Replicas of different versions share these
	// keys during a rolling deploy: the layout stays as it is.
	KeyPrefix string
}

// DefaultKeyPrefix is Config.KeyPrefix's default.
const DefaultKeyPrefix = "larkway:action:"

func (c Config) withDefaults() Config {
	c.Limits = c.Limits.WithDefaults()
	c.Retry = c.Retry.withDefaults()
	c.Breaker = c.Breaker.WithDefaults()
	if c.KeyPrefix == "" {
		c.KeyPrefix = DefaultKeyPrefix
	}
	return c
}

// Validate reports every problem with c (after defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	return errors.Join(c.Limits.Validate(), c.Retry.Validate(), c.Breaker.Validate())
}

// Deps are an Executor's collaborators.
type Deps struct {
	// Clients are the Lark clients by app ID.
	Clients map[string]Client
	// Redis shares rate limits, blocks and breakers across replicas; nil
	// keeps them in the process (one replica only).
	Redis redis.UniversalClient
	// FailedActions receives actions that exhausted their retries (nil: a
	// Redis list at <prefix>dead-letters with Redis, else in memory).
	FailedActions FailedStore
	// Logger (nil: discarded).
	Logger *slog.Logger
	// Registerer gets the larkway_action_* metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Plugins are the configured plugins' names, whose counter series
	// (like every app's in Clients) exist at 0 from the start.
	Plugins []string
}

// Executor performs actions for every configured app. It is safe for
// concurrent use.
type Executor struct {
	cfg       Config
	clients   map[string]Client
	logger    *slog.Logger
	metrics   *metrics
	limiter   *ratelimit.Scheduler
	breakers  breaker.Store
	failed    FailedStore
	closeOnce sync.Once
}

// New returns an executor. It does no I/O and starts no goroutines (each
// app's rate-limit queue starts with its first call).
func New(cfg Config, deps Deps) (*Executor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	logger := deps.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "action")
	e := &Executor{cfg: cfg, clients: deps.Clients, logger: logger, failed: deps.FailedActions}
	m := newMetrics(deps.Registerer, func(ctx context.Context) (int, error) { return e.failed.Count(ctx) })
	apps := make([]string, 0, len(deps.Clients))
	for app := range deps.Clients {
		apps = append(apps, app)
	}
	m.precreate(apps, deps.Plugins)
	e.metrics = m
	onState := func(key string, state breaker.State) {
		app, api := splitBreakerKey(key)
		m.breakerState.WithLabelValues(app, api).Set(float64(state))
	}
	if deps.Redis != nil {
		e.breakers = breaker.NewRedis(deps.Redis, cfg.KeyPrefix, cfg.Breaker, onState)
		if e.failed == nil {
			e.failed = NewRedisFailedStore(deps.Redis, cfg.KeyPrefix+FailedKey, 0)
		}
	} else {
		e.breakers = breaker.NewMemory(cfg.Breaker, onState)
		if e.failed == nil {
			e.failed = &MemoryFailedStore{}
		}
	}
	e.limiter = ratelimit.New(cfg.Limits, ratelimit.Deps{Redis: deps.Redis, KeyPrefix: cfg.KeyPrefix, Logger: logger, Registerer: deps.Registerer})
	return e, nil
}

// Close stops the rate-limit queues: calls waiting in them fail with
// ErrClosed, and later Executes ask for redelivery. It is idempotent and
// waits for the queues' goroutines.
func (e *Executor) Close(context.Context) error {
	e.closeOnce.Do(e.limiter.Close)
	return nil
}

// Execute performs the actions in order. Refused actions — not allowed by
// the manifest, invalid (with a reason saying what Lark would reject, e.g.
// a card over 30 KB), rejected by Lark for a business reason, or (on the
// final attempt) stored as failed actions after exhausting their retries —
// are reported and the next action runs. An error wrapping ErrRetryable
// means the event should be redelivered: an action exhausted its retries
// before the final attempt, the context ended, or the failed-action store
// failed; actions
// already done are safe to repeat because each send and reply carries a
// deterministic uuid.
func (e *Executor) Execute(ctx context.Context, req Request) ([]*pluginv1.RefusedAction, error) {
	var refused []*pluginv1.RefusedAction
	refuse := func(i int, kind, outcome, reason string) {
		e.metrics.executions.WithLabelValues(req.Plugin, kind, outcome).Inc()
		refused = append(refused, &pluginv1.RefusedAction{Index: uint32(i), Reason: reason})
	}
	app := req.Event.GetAppId()
	cli := e.clients[app]
	for i, a := range req.Actions {
		kind, perm := kindOf(a)
		if perm == pluginv1.ActionKind_ACTION_KIND_UNSPECIFIED {
			refuse(i, kind, "refused", "empty action")
			continue
		}
		if !slices.Contains(req.Allowed, perm) {
			refuse(i, kind, "refused", fmt.Sprintf("%s is not in the plugin manifest's allowed_actions", perm))
			continue
		}
		if cli == nil {
			return refused, fmt.Errorf("performing %s for app %s: %w", kind, app, ErrNoClient)
		}
		c, reason := e.plan(req, i, a, cli)
		if reason != "" {
			refuse(i, kind, "refused", reason)
			continue
		}
		attempts, err := e.perform(ctx, app, c)
		switch {
		case err == nil:
			e.metrics.executions.WithLabelValues(req.Plugin, kind, "done").Inc()
		case errors.Is(err, errExhausted) && !req.FinalAttempt:
			e.metrics.executions.WithLabelValues(req.Plugin, kind, "retry").Inc()
			return refused, fmt.Errorf("performing %s for %s: %w: %w", kind, req.Plugin, ErrRetryable, err)
		case errors.Is(err, errExhausted):
			if derr := e.storeFailed(req, i, a, kind, attempts, err); derr != nil {
				e.metrics.executions.WithLabelValues(req.Plugin, kind, "retry").Inc()
				return refused, fmt.Errorf("performing %s for %s: %w: %w", kind, req.Plugin, ErrRetryable, derr)
			}
			refuse(i, kind, "dead_lettered", fmt.Sprintf("failed after %d attempts, kept as a failed action: %v", attempts, err))
		case isRetryableExit(err):
			// The context ended (or the executor closed) while the action
			// was waiting or retrying: ask for the event again.
			e.metrics.executions.WithLabelValues(req.Plugin, kind, "retry").Inc()
			return refused, fmt.Errorf("performing %s for %s: %w: %w", kind, req.Plugin, ErrRetryable, err)
		default:
			// Business errors (bot not in chat, content rejected) will not
			// improve with retries: report and go on with the next action.
			refuse(i, kind, "failed", err.Error())
			e.logger.Warn("action failed", "plugin", req.Plugin, "kind", kind, "event_id", req.Event.GetEventId(), "error", err)
		}
	}
	return refused, nil
}

// SendFallback replies text to the event's message — or, for an event
// without one, sends it to the event's chat — with high priority and the
// usual limits, breaker and retries. The dispatcher calls it when a
// plugin's delivery is dead-lettered and the manifest names a
// fallback_reply_text. It needs no manifest permission, and its uuid is
// derived from the event and plugin, so repeating it is harmless.
func (e *Executor) SendFallback(ctx context.Context, plugin string, ev *pluginv1.Event, text string) error {
	if text == "" {
		return nil
	}
	app := ev.GetAppId()
	cli := e.clients[app]
	if cli == nil {
		return fmt.Errorf("sending fallback reply for %s: %w", plugin, ErrNoClient)
	}
	content, _ := json.Marshal(map[string]string{"text": text}) // cannot fail
	uuid := IdempotencyKey(app, ev.GetDedupKey(), plugin, -1)
	c := call{priority: ratelimit.PriorityHigh, client: cli}
	switch target := eventMessageID(ev); {
	case target != "":
		r := lark.ReplyRequest{MessageID: target, MsgType: "text", Content: string(content), UUID: uuid}
		c.api, c.target = lark.APIReply, ratelimit.ChatScope(ev.GetChatId())
		c.do = func(ctx context.Context) error { _, err := cli.Reply(ctx, r); return err }
	case ev.GetChatId() != "":
		r := lark.SendRequest{ReceiveIDType: lark.ReceiveIDChatID, ReceiveID: ev.GetChatId(), MsgType: "text", Content: string(content), UUID: uuid}
		c.api, c.target = lark.APISend, ratelimit.ChatScope(ev.GetChatId())
		c.do = func(ctx context.Context) error { _, err := cli.Send(ctx, r); return err }
	default:
		e.metrics.fallbacks.WithLabelValues(plugin, "failed").Inc()
		return fmt.Errorf("sending fallback reply for %s: %w", plugin, ErrNoTarget)
	}
	if _, err := e.perform(ctx, app, c); err != nil {
		e.metrics.fallbacks.WithLabelValues(plugin, "failed").Inc()
		if isRetryableExit(err) || errors.Is(err, errExhausted) {
			err = fmt.Errorf("%w: %w", ErrRetryable, err)
		}
		return fmt.Errorf("sending fallback reply for %s: %w", plugin, err)
	}
	e.metrics.fallbacks.WithLabelValues(plugin, "done").Inc()
	return nil
}

// errExhausted marks a retryable failure that used up the retry policy.
var errExhausted = errors.New("retries exhausted")

func isRetryableExit(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, ErrClosed) || errors.Is(err, ratelimit.ErrUnavailable) || errors.Is(err, breaker.ErrOpen)
}

// call is one OpenAPI call an action makes.
type call struct {
	api      string // lark.API*
	target   string // rate-limit scope of the chat, user or card, or ""
	priority ratelimit.Priority
	do       func(ctx context.Context) error
	client   Client
	// failOpen returns breaker.ErrOpen at once instead of waiting for the
	// breaker to close: a replay asked for during an outage answers now.
	failOpen bool
}

// perform makes c, retrying retryable failures. It returns the number of
// calls made and nil, the last call's non-retryable error, an error
// wrapping errExhausted, or — when ctx ends or the executor closes first —
// an error wrapping that (and breaker.ErrOpen if the breaker kept it out).
func (e *Executor) perform(ctx context.Context, app string, c call) (attempts int, err error) {
	t := ratelimit.Ticket{App: app, API: c.api, Target: c.target, Priority: c.priority}
	breakerKey := app + "|" + c.api
	for {
		// The breaker is asked before the rate-limit wait, so that nothing
		// but the call itself comes between the limiter's grant and Lark.
		var done func(context.Context, breaker.Outcome) breaker.State
		if !e.cfg.Breaker.Disabled {
			var retryAfter time.Duration
			done, _, retryAfter, err = e.breakers.Allow(ctx, breakerKey)
			if errors.Is(err, breaker.ErrOpen) && c.failOpen {
				return attempts, err
			}
			if errors.Is(err, breaker.ErrOpen) {
				e.metrics.retries.WithLabelValues(app, c.api, "breaker_open").Inc()
				if retryAfter <= 0 {
					retryAfter = e.cfg.Retry.backoff(max(attempts, 1))
				}
				if serr := sleep(ctx, retryAfter); serr != nil {
					return attempts, fmt.Errorf("%w (%w)", serr, err)
				}
				continue
			}
			if err != nil {
				// The breaker store is down: call anyway rather than stall;
				// the rate limiter still guards Lark.
				e.logger.Warn("circuit breaker unavailable", "app_id", app, "api", c.api, "error", err)
				done = nil
			}
		}
		if w, ok := c.client.(tokenWarmer); ok {
			// A token fetch after the slot would delay the call past it;
			// a failure here is left for the call itself to report.
			_ = w.WarmToken(ctx)
		}
		if err := e.limiter.Wait(ctx, t); err != nil {
			if done != nil {
				done(context.WithoutCancel(ctx), breaker.OutcomeIgnored) // give a half-open probe back
			}
			if errors.Is(err, ratelimit.ErrClosed) {
				err = ErrClosed // only Close closes the limiter
			}
			return attempts, err
		}
		attempts++
		err = c.do(ctx)
		outcome, retryable, rateLimited := classify(err)
		if done != nil {
			done(context.WithoutCancel(ctx), outcome)
		}
		if err == nil {
			return attempts, nil
		}
		if rateLimited {
			e.throttled(ctx, app, c, err)
		}
		if !retryable {
			return attempts, err
		}
		if attempts >= e.cfg.Retry.MaxAttempts {
			return attempts, fmt.Errorf("%w: %w", errExhausted, err)
		}
		if cerr := ctx.Err(); cerr != nil {
			return attempts, fmt.Errorf("%w (last error: %w)", cerr, err)
		}
		e.metrics.retries.WithLabelValues(app, c.api, lark.Outcome(err)).Inc()
		if !rateLimited { // a rate-limited call waits for its scope in the queue instead
			if serr := sleep(ctx, e.cfg.Retry.backoff(attempts)); serr != nil {
				return attempts, fmt.Errorf("%w (last error: %w)", serr, err)
			}
		}
	}
}

// throttled slows the scope Lark refused, for every replica: the app's API
// on 99991400 (for x-ogw-ratelimit-reset, or BlockFor without it), the
// chat, user or card on 230020.
func (e *Executor) throttled(ctx context.Context, app string, c call, err error) {
	var ae *lark.APIError
	if !errors.As(err, &ae) {
		return
	}
	key, scopeName := ratelimit.APIScope(app, c.api), "app"
	if ae.ChatRateLimited() && c.target != "" {
		key, scopeName = c.target, "target"
	}
	d := ae.RetryAfter
	if d <= 0 {
		d = e.cfg.Limits.BlockFor
	}
	e.metrics.throttled.WithLabelValues(app, c.api, scopeName).Inc()
	e.logger.Warn("Lark refused a call for frequency; slowing the scope", "app_id", app, "api", c.api, "scope", key, "for", d, "code", ae.Code)
	e.limiter.Block(context.WithoutCancel(ctx), key, time.Now().Add(d))
}

func (e *Executor) storeFailed(req Request, i int, a *pluginv1.Action, kind string, attempts int, cause error) error {
	raw, _ := protojson.Marshal(a)
	ev := req.Event
	f := FailedAction{
		Plugin: req.Plugin, AppID: ev.GetAppId(), EventID: ev.GetEventId(), DedupKey: ev.GetDedupKey(),
		ChatID: ev.GetChatId(), MessageID: ev.GetMessage().GetMessageId(), CardMessageID: ev.GetCardAction().GetOpenMessageId(),
		Index: i, Kind: kind, Action: raw, Error: cause.Error(),
		Attempts: attempts, DeliveryAttempt: req.Attempts, At: time.Now(),
	}
	if kind == "send" || kind == "reply" {
		f.UUID = IdempotencyKey(f.AppID, f.DedupKey, req.Plugin, i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.failed.Put(ctx, f); err != nil {
		e.logger.Error("storing a failed action failed; the event will be redelivered", "plugin", req.Plugin, "kind", kind, "error", err)
		return err
	}
	e.metrics.failed.WithLabelValues(f.AppID, req.Plugin, kind).Inc()
	e.logger.Warn("action failed after its retries; kept as a failed action", "plugin", req.Plugin, "kind", kind, "event_id", ev.GetEventId(), "attempts", attempts, "error", cause)
	return nil
}

// FailedActions is the store of actions that exhausted their retries, for
// the admin API.
func (e *Executor) FailedActions() FailedStore { return e.failed }

// ErrNotReplayable is returned for a failed action that cannot be planned
// again (e.g. a delayed card update whose token came from the event).
var ErrNotReplayable = errors.New("failed action cannot be replayed")

// ReplayFailed performs the failed action id again through the usual
// limits, breaker and retries, and removes it from the store once Lark
// accepted it. It returns ErrFailedNotFound for an unknown id, and the
// call's error, the entry kept, when Lark refuses again.
//
// A send or reply carries the same idempotency uuid as the original calls
// (the stored one, else recomputed from the same app, dedup key, plugin and
// index): if a call that "failed" in fact reached Lark (a timeout after Lark
// posted), Lark answers the replay with that message instead of posting it
// twice — within Lark's one-hour uuid window; a replay after that window may
// post again. Replays of the same entry on two replicas at once are safe for
// the same reason. Other kinds have no uuid: card updates and reaction
// removals are idempotent, an add_reaction or raw_call may repeat.
func (e *Executor) ReplayFailed(ctx context.Context, id string) error {
	f, err := e.failed.Get(ctx, id)
	if err != nil {
		return err
	}
	var a pluginv1.Action
	if err := protojson.Unmarshal(f.Action, &a); err != nil {
		return fmt.Errorf("replaying failed action %s: decoding the action: %w: %w", id, ErrNotReplayable, err)
	}
	cli := e.clients[f.AppID]
	if cli == nil {
		return fmt.Errorf("replaying failed action %s for app %s: %w", id, f.AppID, ErrNoClient)
	}
	req := Request{Plugin: f.Plugin, Event: f.event()}
	uuid := f.UUID
	if uuid == "" {
		uuid = IdempotencyKey(f.AppID, f.DedupKey, f.Plugin, f.Index)
	}
	c, reason := e.planWithUUID(req, f.Index, &a, cli, uuid)
	if reason != "" {
		e.metrics.replays.WithLabelValues("failed").Inc()
		return fmt.Errorf("replaying failed action %s: %w: %s", id, ErrNotReplayable, reason)
	}
	c.failOpen = true
	if _, err := e.perform(ctx, f.AppID, c); err != nil {
		e.metrics.replays.WithLabelValues("failed").Inc()
		return fmt.Errorf("replaying failed action %s (%s of %s): %w", id, f.Kind, f.Plugin, err)
	}
	e.metrics.replays.WithLabelValues("done").Inc()
	e.logger.Info("failed action replayed", "id", id, "plugin", f.Plugin, "kind", f.Kind, "event_id", f.EventID)
	// Done at Lark: a delete that loses a race with another replica's
	// replay or a purge is not an error.
	if err := e.failed.Delete(context.WithoutCancel(ctx), id); err != nil && !errors.Is(err, ErrFailedNotFound) {
		return fmt.Errorf("replayed failed action %s but could not remove it: %w", id, err)
	}
	return nil
}

// IdempotencyKey is the uuid sent with a send or reply: the same app, dedup
// key, plugin and action index always give the same ≤ 50-char key, so Lark
// executes a retried request at most once within its one-hour window.
func IdempotencyKey(appID, dedupKey, plugin string, index int) string {
	h := sha256.New()
	for _, s := range []string{appID, dedupKey, plugin, strconv.Itoa(index)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "lw-" + hex.EncodeToString(h.Sum(nil))[:40]
}

func splitBreakerKey(key string) (app, api string) {
	for i := 0; i < len(key); i++ {
		if key[i] == '|' {
			return key[:i], key[i+1:]
		}
	}
	return key, ""
}

func kindOf(a *pluginv1.Action) (string, pluginv1.ActionKind) {
	switch a.GetKind().(type) {
	case *pluginv1.Action_Send:
		return "send", pluginv1.ActionKind_ACTION_KIND_SEND
	case *pluginv1.Action_Reply:
		return "reply", pluginv1.ActionKind_ACTION_KIND_REPLY
	case *pluginv1.Action_UpdateCard:
		return "update_card", pluginv1.ActionKind_ACTION_KIND_UPDATE_CARD
	case *pluginv1.Action_DelayedCardUpdate:
		return "delayed_card_update", pluginv1.ActionKind_ACTION_KIND_UPDATE_CARD
	case *pluginv1.Action_AddReaction:
		return "add_reaction", pluginv1.ActionKind_ACTION_KIND_REACTION
	case *pluginv1.Action_RemoveReaction:
		return "remove_reaction", pluginv1.ActionKind_ACTION_KIND_REACTION
	case *pluginv1.Action_RawCall:
		return "raw_call", pluginv1.ActionKind_ACTION_KIND_RAW_CALL
	}
	return "unknown", pluginv1.ActionKind_ACTION_KIND_UNSPECIFIED
}
