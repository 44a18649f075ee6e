// Package action carries out the actions plugins return, on the Lark OpenAPI,
// with permission checks against the plugin's manifest and deterministic
// idempotency keys so a redelivered event can never post twice.
package action

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/lark"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// ErrNoClient is returned for an event of an app with no Lark client.
var ErrNoClient = errors.New("no Lark client for app")

// ErrRetryable classes a failure worth redelivering the event for.
var ErrRetryable = errors.New("retryable action failure")

// Client is what the executor needs of a Lark app client.
type Client interface {
	Reply(ctx context.Context, r lark.ReplyRequest) (lark.Sent, error)
	Send(ctx context.Context, r lark.SendRequest) (lark.Sent, error)
}

// Request is one result's actions to perform.
type Request struct {
	Plugin   string
	Allowed  []pluginv1.ActionKind
	Event    *pluginv1.Event
	Actions  []*pluginv1.Action
	Attempts int
}

// Executor performs actions for every configured app.
type Executor struct {
	clients map[string]Client
	logger  *slog.Logger
	total   *prometheus.CounterVec
}

// New returns an executor over clients keyed by app id.
func New(clients map[string]Client, logger *slog.Logger, reg prometheus.Registerer) *Executor {
	total := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "larkway_action_executions_total", Help: "Actions by plugin, kind and outcome.",
	}, []string{"plugin", "kind", "outcome"})
	if reg != nil {
		reg.MustRegister(total)
	}
	return &Executor{clients: clients, logger: logger.With("component", "action"), total: total}
}

// Execute performs the actions in order. Refused actions (not allowed by the
// manifest, or invalid) are skipped and reported; an error wrapping
// ErrRetryable means the event should be redelivered — actions already done
// are safe to repeat because each carries a deterministic uuid.
func (e *Executor) Execute(ctx context.Context, req Request) ([]*pluginv1.RefusedAction, error) {
	var refused []*pluginv1.RefusedAction
	refuse := func(i int, kind, reason string) {
		e.total.WithLabelValues(req.Plugin, kind, "refused").Inc()
		refused = append(refused, &pluginv1.RefusedAction{Index: uint32(i), Reason: reason})
	}
	cli := e.clients[req.Event.GetAppId()]
	for i, a := range req.Actions {
		kind, perm := kindOf(a)
		if perm == pluginv1.ActionKind_ACTION_KIND_UNSPECIFIED {
			refuse(i, kind, "empty action")
			continue
		}
		if !slices.Contains(req.Allowed, perm) {
			refuse(i, kind, fmt.Sprintf("%s is not in the plugin manifest's allowed_actions", perm))
			continue
		}
		if cli == nil {
			return refused, fmt.Errorf("performing %s for app %s: %w", kind, req.Event.GetAppId(), ErrNoClient)
		}
		uuid := IdempotencyKey(req.Event.GetAppId(), req.Event.GetDedupKey(), req.Plugin, i)
		var err error
		switch k := a.GetKind().(type) {
		case *pluginv1.Action_Reply:
			target := k.Reply.GetMessageId()
			if target == "" {
				target = req.Event.GetMessage().GetMessageId()
			}
			if target == "" {
				refuse(i, kind, "reply needs a message_id: the event has no message")
				continue
			}
			_, err = cli.Reply(ctx, lark.ReplyRequest{MessageID: target, MsgType: k.Reply.GetMsgType(),
				Content: k.Reply.GetContentJson(), ReplyInThread: k.Reply.GetReplyInThread(), UUID: uuid})
		case *pluginv1.Action_Send:
			_, err = cli.Send(ctx, lark.SendRequest{ReceiveIDType: k.Send.GetReceiveIdType(), ReceiveID: k.Send.GetReceiveId(),
				MsgType: k.Send.GetMsgType(), Content: k.Send.GetContentJson(), UUID: uuid})
		default:
			refuse(i, kind, kind+" is not supported by this core version")
			continue
		}
		if err != nil {
			if lark.IsRetryable(err) {
				e.total.WithLabelValues(req.Plugin, kind, "retry").Inc()
				return refused, fmt.Errorf("performing %s for %s: %w: %w", kind, req.Plugin, ErrRetryable, err)
			}
			// Business errors (bot not in chat, content rejected) will not
			// improve with retries: report and go on with the next action.
			e.total.WithLabelValues(req.Plugin, kind, "failed").Inc()
			refuse(i, kind, err.Error())
			e.logger.Warn("action failed", "plugin", req.Plugin, "kind", kind, "event_id", req.Event.GetEventId(), "err", err)
			continue
		}
		e.total.WithLabelValues(req.Plugin, kind, "done").Inc()
	}
	return refused, nil
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
