// Package lark is larkway's client for the Feishu/Lark OpenAPI: it sends
// and replies to messages as the bot.
//
// It is the only package in the repository that imports oapi-sdk-go; no SDK
// type appears in its API. Calls go through the SDK's typed im/v1 builders,
// but the tenant_access_token is managed here (the SDK's cache is disabled):
// the SDK retries a token-invalid response with the same stale token and
// has no single-flight, so this package fetches tokens itself, refreshes
// them before the last 30 minutes of validity, and on a token-invalid code
// invalidates the token and retries the call once with a fresh one.
//
// Errors are classed: *APIError (body code != 0, or a non-JSON response)
// with Retryable and RateLimited, ErrTransport (retryable), ErrInvalidRequest
// and ErrUnexpectedResponse (terminal). IsRetryable answers for any error.
package lark

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"
	"unicode/utf8"

	larksdk "github.com/larksuite/oapi-sdk-go/v3"
	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
	larkim "github.com/larksuite/oapi-sdk-go/v3/service/im/v1"
)

// Receive ID types accepted by Send (SendRequest.ReceiveIDType).
const (
	ReceiveIDOpenID  = "open_id"
	ReceiveIDUserID  = "user_id"
	ReceiveIDUnionID = "union_id"
	ReceiveIDEmail   = "email"
	ReceiveIDChatID  = "chat_id"
)

// ReplyRequest replies to a message (POST /open-apis/im/v1/messages/:message_id/reply).
type ReplyRequest struct {
	// MessageID is the message replied to (om_…).
	MessageID string
	// MsgType is text, post, interactive, image, … (lark-platform.md §4.2).
	MsgType string
	// Content is the message content as a JSON-encoded string, e.g.
	// `{"text":"hi"}`; it is sent as a string, not an object.
	Content string
	// ReplyInThread replies in the message's thread (creating one).
	ReplyInThread bool
	// UUID makes the call idempotent for one hour: Lark executes a request
	// with a given uuid at most once. At most 50 characters; optional.
	UUID string
}

// SendRequest sends a message (POST /open-apis/im/v1/messages?receive_id_type=…).
type SendRequest struct {
	// ReceiveIDType is one of the ReceiveID* constants.
	ReceiveIDType string
	// ReceiveID is the chat (oc_…) or user ID, of ReceiveIDType.
	ReceiveID string
	// MsgType and Content are as for ReplyRequest.
	MsgType string
	Content string
	// UUID is as for ReplyRequest.
	UUID string
}

// Sent identifies the message Lark created. A retry with the same UUID
// returns the same Sent.
type Sent struct {
	MessageID string
	ChatID    string
}

// Client calls the OpenAPI for one app. It is safe for concurrent use.
type Client struct {
	cfg    Config
	log    *slog.Logger
	http   *http.Client
	sdk    *larksdk.Client
	tokens tokenSource
	closed atomic.Bool
}

// New builds a Client. It does no I/O: the first call fetches the token.
// A nil logger discards logs.
func New(cfg Config, logger *slog.Logger) (*Client, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "lark", "app_id", cfg.AppID)

	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = 64
	hc := &http.Client{Timeout: cfg.Timeout, Transport: base}

	c := &Client{cfg: cfg, log: logger, http: hc}
	c.sdk = larksdk.NewClient(cfg.AppID, cfg.AppSecret,
		larksdk.WithOpenBaseUrl(cfg.BaseURL),
		larksdk.WithHttpClient(bufferingClient{c: hc}),
		// The SDK's cache would override WithTenantAccessToken (upstream
		// #198) and retry with a stale token; tokens are handled here.
		larksdk.WithEnableTokenCache(false),
		larksdk.WithLogger(sdkLogger{l: logger}),
		larksdk.WithLogLevel(larkcore.LogLevelDebug),
	)
	c.tokens = newMemoryTokenSource(c.fetchToken, logger)
	return c, nil
}

// Close releases idle connections. It is idempotent; calls made after it
// fail with ErrClosed. It starts no goroutines, so there is nothing to wait
// for.
func (c *Client) Close(context.Context) error {
	if c.closed.CompareAndSwap(false, true) {
		c.http.CloseIdleConnections()
	}
	return nil
}

// Reply replies to r.MessageID.
func (c *Client) Reply(ctx context.Context, r ReplyRequest) (Sent, error) {
	op := fmt.Sprintf("replying to message %s", r.MessageID)
	if err := r.validate(); err != nil {
		return Sent{}, fmt.Errorf("%s: %w", op, err)
	}
	return c.invoke(ctx, op, func(ctx context.Context, opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, larkcore.CodeError, Sent, error) {
		body := larkim.NewReplyMessageReqBodyBuilder().
			MsgType(r.MsgType).
			Content(r.Content).
			ReplyInThread(r.ReplyInThread)
		if r.UUID != "" {
			body.Uuid(r.UUID)
		}
		req := larkim.NewReplyMessageReqBuilder().MessageId(r.MessageID).Body(body.Build()).Build()
		resp, err := c.sdk.Im.Message.Reply(ctx, req, opt)
		if err != nil {
			return nil, larkcore.CodeError{}, Sent{}, err
		}
		var sent Sent
		if resp.Data != nil {
			sent = Sent{MessageID: deref(resp.Data.MessageId), ChatID: deref(resp.Data.ChatId)}
		}
		return resp.ApiResp, resp.CodeError, sent, nil
	})
}

// Send sends a message to r.ReceiveID.
func (c *Client) Send(ctx context.Context, r SendRequest) (Sent, error) {
	op := fmt.Sprintf("sending message to %s %s", r.ReceiveIDType, r.ReceiveID)
	if err := r.validate(); err != nil {
		return Sent{}, fmt.Errorf("%s: %w", op, err)
	}
	return c.invoke(ctx, op, func(ctx context.Context, opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, larkcore.CodeError, Sent, error) {
		body := larkim.NewCreateMessageReqBodyBuilder().
			ReceiveId(r.ReceiveID).
			MsgType(r.MsgType).
			Content(r.Content)
		if r.UUID != "" {
			body.Uuid(r.UUID)
		}
		req := larkim.NewCreateMessageReqBuilder().ReceiveIdType(r.ReceiveIDType).Body(body.Build()).Build()
		resp, err := c.sdk.Im.Message.Create(ctx, req, opt)
		if err != nil {
			return nil, larkcore.CodeError{}, Sent{}, err
		}
		var sent Sent
		if resp.Data != nil {
			sent = Sent{MessageID: deref(resp.Data.MessageId), ChatID: deref(resp.Data.ChatId)}
		}
		return resp.ApiResp, resp.CodeError, sent, nil
	})
}

// sdkCall performs one SDK call authenticated by opt. It returns the raw
// response and decoded code on any response that the SDK could decode, or
// an error when it could not (transport failure, non-JSON body).
type sdkCall func(ctx context.Context, opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, larkcore.CodeError, Sent, error)

// invoke runs call with the current token; on a token-invalid code it
// invalidates that token and runs call once more with a fresh one.
func (c *Client) invoke(ctx context.Context, op string, call sdkCall) (Sent, error) {
	if c.closed.Load() {
		return Sent{}, fmt.Errorf("%s: %w", op, ErrClosed)
	}
	for attempt := 1; ; attempt++ {
		tok, err := c.tokens.Token(ctx)
		if err != nil {
			return Sent{}, fmt.Errorf("%s: getting tenant access token: %w", op, err)
		}
		meta := &responseMeta{}
		resp, ce, sent, err := call(withResponseMeta(ctx, meta), larkcore.WithTenantAccessToken(tok))
		if err != nil {
			return Sent{}, fmt.Errorf("%s: %w", op, classifySDKError(ctx, err, meta))
		}
		if ce.Code == CodeOK {
			if sent.MessageID == "" {
				return Sent{}, fmt.Errorf("%s: %w: code 0 without data.message_id", op, ErrUnexpectedResponse)
			}
			return sent, nil
		}
		apiErr := newAPIError(ce.Code, ce.Msg, resp.StatusCode, resp.Header)
		if apiErr.TokenInvalid() && attempt == 1 {
			c.log.Warn("tenant access token rejected; refetching and retrying once", "code", ce.Code, "reason", ce.Msg, "log_id", apiErr.LogID)
			c.tokens.Invalidate(ctx, tok)
			continue
		}
		return Sent{}, fmt.Errorf("%s: %w", op, apiErr)
	}
}

// fetchToken calls POST /open-apis/auth/v3/tenant_access_token/internal.
func (c *Client) fetchToken(ctx context.Context) (string, time.Duration, error) {
	meta := &responseMeta{}
	resp, err := c.sdk.GetTenantAccessTokenBySelfBuiltApp(withResponseMeta(ctx, meta), &larkcore.SelfBuiltTenantAccessTokenReq{
		AppID:     c.cfg.AppID,
		AppSecret: c.cfg.AppSecret,
	})
	if err != nil {
		return "", 0, fmt.Errorf("fetching tenant access token: %w", classifySDKError(ctx, err, meta))
	}
	if resp.Code != CodeOK {
		return "", 0, fmt.Errorf("fetching tenant access token: %w", newAPIError(resp.Code, resp.Msg, resp.StatusCode, resp.Header))
	}
	if resp.TenantAccessToken == "" || resp.Expire <= 0 {
		return "", 0, fmt.Errorf("fetching tenant access token: %w: code 0 without tenant_access_token or expire", ErrUnexpectedResponse)
	}
	return resp.TenantAccessToken, time.Duration(resp.Expire) * time.Second, nil
}

// classifySDKError turns an error from the SDK into this package's classes.
// When an HTTP response was received but not decodable (a non-JSON 502, the
// SDK's 504 ServerTimeoutError), it is an *APIError carrying the status;
// when the caller's context ended, its error; otherwise ErrTransport.
func classifySDKError(ctx context.Context, err error, meta *responseMeta) error {
	if meta.status != 0 {
		return newAPIError(0, "undecodable response: "+err.Error(), meta.status, meta.header)
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%w (%v)", ctxErr, err)
	}
	var illegal *larkcore.IllegalParamError
	if errors.As(err, &illegal) {
		return fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	return fmt.Errorf("%w: %w", ErrTransport, err)
}

func (r ReplyRequest) validate() error {
	if r.MessageID == "" {
		return fmt.Errorf("%w: message_id is empty", ErrInvalidRequest)
	}
	return validateMessage(r.MsgType, r.Content, r.UUID)
}

func (r SendRequest) validate() error {
	switch r.ReceiveIDType {
	case ReceiveIDOpenID, ReceiveIDUserID, ReceiveIDUnionID, ReceiveIDEmail, ReceiveIDChatID:
	default:
		return fmt.Errorf("%w: receive_id_type %q is not one of open_id, user_id, union_id, email, chat_id", ErrInvalidRequest, r.ReceiveIDType)
	}
	if r.ReceiveID == "" {
		return fmt.Errorf("%w: receive_id is empty", ErrInvalidRequest)
	}
	return validateMessage(r.MsgType, r.Content, r.UUID)
}

func validateMessage(msgType, content, uuid string) error {
	if msgType == "" {
		return fmt.Errorf("%w: msg_type is empty", ErrInvalidRequest)
	}
	if !json.Valid([]byte(content)) {
		return fmt.Errorf("%w: content is not a JSON document", ErrInvalidRequest)
	}
	if n := utf8.RuneCountInString(uuid); n > maxUUIDLen {
		return fmt.Errorf("%w: uuid has %d characters, more than %d", ErrInvalidRequest, n, maxUUIDLen)
	}
	return nil
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
