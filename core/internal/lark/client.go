// Package lark is larkway's client for the Feishu/Lark OpenAPI: it sends,
// replies to and updates messages and reactions as the bot, and makes raw
// OpenAPI calls.
//
// It is the only package in the repository that imports oapi-sdk-go; no SDK
// type appears in its API. Calls go through the SDK's typed im/v1 builders
// (or its generic Do for endpoints v3.2.2 has no builder for), but the
// tenant_access_token is managed here (the SDK's cache is disabled): the
// SDK retries a token-invalid response with the same stale token and has no
// single-flight, so this package fetches tokens itself — once for all
// replicas when the TokenCache is shared (RedisTokenCache) — refreshes them
// before the last 30 minutes of validity, and on a token-invalid code
// invalidates the token and retries the call once with a fresh one.
//
// Errors are classed: *APIError (body code != 0, read whatever the HTTP
// status, or a non-JSON response) with Retryable, RateLimited and
// TokenInvalid; ErrTransport (retryable); ErrInvalidRequest (with
// ErrContentTooLarge for over-size bodies) and ErrUnexpectedResponse
// (terminal). IsRetryable answers for any error.
//
// The Client does not rate-limit, retry (beyond the one token retry) or
// break circuits: core/internal/action layers those on top.
package lark

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	larksdk "github.com/larksuite/oapi-sdk-go/v3"
	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
	larkim "github.com/larksuite/oapi-sdk-go/v3/service/im/v1"
)

// Names of the OpenAPI endpoints the Client calls. Lark rate-limits per app
// and API, so callers key limits, breakers and metrics on these.
const (
	APISend              = "im.message.create"
	APIReply             = "im.message.reply"
	APIUpdateCard        = "im.message.patch"
	APIDelayedCardUpdate = "interactive.card.update"
	APIAddReaction       = "im.message.reaction.create"
	APIRemoveReaction    = "im.message.reaction.delete"
	APIRaw               = "raw"
)

// Deps are a Client's collaborators. The zero value is usable.
type Deps struct {
	// Logger receives the client's logs (nil: discarded).
	Logger *slog.Logger
	// Tokens is where tenant tokens are cached and refreshed: a
	// RedisTokenCache shares one token per app across replicas; nil keeps it
	// in the process (NewMemoryTokenCache).
	Tokens TokenCache
	// Metrics, from NewMetrics, records token fetches and calls (nil: none).
	Metrics *Metrics
}

// Client calls the OpenAPI for one app. It is safe for concurrent use.
type Client struct {
	cfg     Config
	log     *slog.Logger
	http    *http.Client
	sdk     *larksdk.Client
	tokens  *tokenSource
	metrics *Metrics
	closed  atomic.Bool
}

// New builds a Client. It does no I/O: the first call fetches the token.
func New(cfg Config, deps Deps) (*Client, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "lark", "app_id", cfg.AppID)
	cache := deps.Tokens
	if cache == nil {
		cache = NewMemoryTokenCache()
	}

	base := http.DefaultTransport.(*http.Transport).Clone()
	base.DialContext = (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	base.MaxIdleConnsPerHost = cfg.MaxIdleConnsPerHost
	hc := &http.Client{Timeout: cfg.Timeout, Transport: base}

	c := &Client{cfg: cfg, log: logger, http: hc, metrics: deps.Metrics}
	c.sdk = larksdk.NewClient(cfg.AppID, cfg.AppSecret,
		larksdk.WithOpenBaseUrl(cfg.BaseURL),
		larksdk.WithHttpClient(bufferingClient{c: hc}),
		// The SDK's cache would override WithTenantAccessToken (upstream
		// #198) and retry with a stale token; tokens are handled here.
		larksdk.WithEnableTokenCache(false),
		larksdk.WithLogger(sdkLogger{l: logger}),
		larksdk.WithLogLevel(larkcore.LogLevelDebug),
	)
	c.tokens = newTokenSource(cfg.AppID, c.fetchToken, cache, max(2*cfg.Timeout, 5*time.Second), logger)
	return c, nil
}

// AppID is the app the client calls as.
func (c *Client) AppID() string { return c.cfg.AppID }

// WarmToken makes sure the process holds a valid tenant token (fetching or
// adopting one if needed), so that a call made right after spends no time
// on it. Callers that pace calls (a rate limiter) call it before waiting
// for their slot: time spent between the slot and the call is time the
// limit's margin must absorb.
func (c *Client) WarmToken(ctx context.Context) error {
	if c.closed.Load() {
		return ErrClosed
	}
	if _, err := c.tokens.Token(ctx); err != nil {
		return fmt.Errorf("getting tenant access token: %w", err)
	}
	return nil
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
	if err := r.Validate(); err != nil {
		return Sent{}, fmt.Errorf("%s: %w", op, err)
	}
	var sent Sent
	err := c.invoke(ctx, APIReply, op, func(ctx context.Context, opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, larkcore.CodeError, error) {
		req := larkim.NewReplyMessageReqBuilder().MessageId(r.MessageID).Body(r.body()).Build()
		resp, err := c.sdk.Im.Message.Reply(ctx, req, opt)
		if err != nil {
			return nil, larkcore.CodeError{}, err
		}
		if resp.Data != nil {
			sent = Sent{MessageID: deref(resp.Data.MessageId), ChatID: deref(resp.Data.ChatId), ThreadID: deref(resp.Data.ThreadId)}
		}
		return resp.ApiResp, resp.CodeError, nil
	})
	if err == nil && sent.MessageID == "" {
		err = fmt.Errorf("%s: %w: code 0 without data.message_id", op, ErrUnexpectedResponse)
	}
	return sent, err
}

// Send sends a message to r.ReceiveID.
func (c *Client) Send(ctx context.Context, r SendRequest) (Sent, error) {
	op := fmt.Sprintf("sending message to %s %s", r.ReceiveIDType, r.ReceiveID)
	if err := r.Validate(); err != nil {
		return Sent{}, fmt.Errorf("%s: %w", op, err)
	}
	var sent Sent
	err := c.invoke(ctx, APISend, op, func(ctx context.Context, opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, larkcore.CodeError, error) {
		req := larkim.NewCreateMessageReqBuilder().ReceiveIdType(r.ReceiveIDType).Body(r.body()).Build()
		resp, err := c.sdk.Im.Message.Create(ctx, req, opt)
		if err != nil {
			return nil, larkcore.CodeError{}, err
		}
		if resp.Data != nil {
			sent = Sent{MessageID: deref(resp.Data.MessageId), ChatID: deref(resp.Data.ChatId), ThreadID: deref(resp.Data.ThreadId)}
		}
		return resp.ApiResp, resp.CodeError, nil
	})
	if err == nil && sent.MessageID == "" {
		err = fmt.Errorf("%s: %w: code 0 without data.message_id", op, ErrUnexpectedResponse)
	}
	return sent, err
}

// UpdateCard replaces a sent shared card (PATCH /open-apis/im/v1/messages/:message_id).
func (c *Client) UpdateCard(ctx context.Context, r UpdateCardRequest) error {
	op := fmt.Sprintf("updating card %s", r.MessageID)
	if err := r.Validate(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return c.invoke(ctx, APIUpdateCard, op, func(ctx context.Context, opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, larkcore.CodeError, error) {
		req := larkim.NewPatchMessageReqBuilder().MessageId(r.MessageID).Body(r.body()).Build()
		resp, err := c.sdk.Im.Message.Patch(ctx, req, opt)
		if err != nil {
			return nil, larkcore.CodeError{}, err
		}
		return resp.ApiResp, resp.CodeError, nil
	})
}

// DelayedUpdateCard updates the card a user interacted with, using the card
// callback's token (POST /open-apis/interactive/v1/card/update). SDK v3.2.2
// has no builder for this endpoint, so it goes through the SDK's Do.
func (c *Client) DelayedUpdateCard(ctx context.Context, r DelayedCardUpdateRequest) error {
	op := "updating card by callback token"
	body, err := r.body()
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return c.invoke(ctx, APIDelayedCardUpdate, op, func(ctx context.Context, opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, larkcore.CodeError, error) {
		resp, err := c.sdk.Do(ctx, &larkcore.ApiReq{
			HttpMethod:                http.MethodPost,
			ApiPath:                   "/open-apis/interactive/v1/card/update",
			Body:                      body,
			SupportedAccessTokenTypes: []larkcore.AccessTokenType{larkcore.AccessTokenTypeTenant},
		}, opt)
		if err != nil {
			return nil, larkcore.CodeError{}, err
		}
		ce, err := decodeCodeError(resp)
		return resp, ce, err
	})
}

// AddReaction adds an emoji reaction to a message and returns its ID.
func (c *Client) AddReaction(ctx context.Context, r AddReactionRequest) (Reaction, error) {
	op := fmt.Sprintf("adding reaction %s to %s", r.EmojiType, r.MessageID)
	if err := r.Validate(); err != nil {
		return Reaction{}, fmt.Errorf("%s: %w", op, err)
	}
	var out Reaction
	err := c.invoke(ctx, APIAddReaction, op, func(ctx context.Context, opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, larkcore.CodeError, error) {
		body := larkim.NewCreateMessageReactionReqBodyBuilder().
			ReactionType(larkim.NewEmojiBuilder().EmojiType(r.EmojiType).Build()).Build()
		req := larkim.NewCreateMessageReactionReqBuilder().MessageId(r.MessageID).Body(body).Build()
		resp, err := c.sdk.Im.MessageReaction.Create(ctx, req, opt)
		if err != nil {
			return nil, larkcore.CodeError{}, err
		}
		if resp.Data != nil {
			out = Reaction{ID: deref(resp.Data.ReactionId)}
		}
		return resp.ApiResp, resp.CodeError, nil
	})
	if err == nil && out.ID == "" {
		err = fmt.Errorf("%s: %w: code 0 without data.reaction_id", op, ErrUnexpectedResponse)
	}
	return out, err
}

// RemoveReaction removes a reaction the bot added.
func (c *Client) RemoveReaction(ctx context.Context, r RemoveReactionRequest) error {
	op := fmt.Sprintf("removing reaction %s from %s", r.ReactionID, r.MessageID)
	if err := r.Validate(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return c.invoke(ctx, APIRemoveReaction, op, func(ctx context.Context, opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, larkcore.CodeError, error) {
		req := larkim.NewDeleteMessageReactionReqBuilder().MessageId(r.MessageID).ReactionId(r.ReactionID).Build()
		resp, err := c.sdk.Im.MessageReaction.Delete(ctx, req, opt)
		if err != nil {
			return nil, larkcore.CodeError{}, err
		}
		return resp.ApiResp, resp.CodeError, nil
	})
}

// Raw makes any other OpenAPI call with the tenant token. A JSON response
// with a non-zero code is an *APIError like any other call's; otherwise the
// status and body are returned as they came.
func (c *Client) Raw(ctx context.Context, r RawRequest) (RawResponse, error) {
	op := fmt.Sprintf("calling %s %s", r.Method, r.Path)
	if err := r.Validate(); err != nil {
		return RawResponse{}, fmt.Errorf("%s: %w", op, err)
	}
	var out RawResponse
	err := c.invoke(ctx, APIRaw, op, func(ctx context.Context, opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, larkcore.CodeError, error) {
		req := &larkcore.ApiReq{
			HttpMethod:                r.Method,
			ApiPath:                   r.Path,
			SupportedAccessTokenTypes: []larkcore.AccessTokenType{larkcore.AccessTokenTypeTenant},
		}
		if len(r.Body) > 0 {
			req.Body = json.RawMessage(r.Body)
		}
		resp, err := c.sdk.Do(ctx, req, opt)
		if err != nil {
			return nil, larkcore.CodeError{}, err
		}
		out = RawResponse{HTTPStatus: resp.StatusCode, Body: resp.RawBody}
		ce, err := decodeCodeError(resp)
		return resp, ce, err
	})
	return out, err
}

// decodeCodeError reads code and msg from a response the SDK's generic Do
// returned (it does not decode bodies). A non-JSON body has no code: a
// success status passes, an error status becomes the classifying error.
func decodeCodeError(resp *larkcore.ApiResp) (larkcore.CodeError, error) {
	var ce larkcore.CodeError
	if err := json.Unmarshal(resp.RawBody, &ce); err != nil {
		if resp.StatusCode >= 400 {
			return ce, fmt.Errorf("response content-type %q is not JSON", resp.Header.Get("Content-Type"))
		}
		return larkcore.CodeError{}, nil
	}
	return ce, nil
}

// sdkCall performs one SDK call authenticated by opt. It returns the raw
// response and decoded code on any response that the SDK could decode, or
// an error when it could not (transport failure, non-JSON body).
type sdkCall func(ctx context.Context, opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, larkcore.CodeError, error)

// invoke runs call with the current token; on a token-invalid code it
// invalidates that token and runs call once more with a fresh one.
func (c *Client) invoke(ctx context.Context, api, op string, call sdkCall) (err error) {
	if c.closed.Load() {
		return fmt.Errorf("%s: %w", op, ErrClosed)
	}
	start := time.Now()
	defer func() { c.metrics.observeCall(c.cfg.AppID, api, err, time.Since(start)) }()
	for attempt := 1; ; attempt++ {
		tok, err := c.tokens.Token(ctx)
		if err != nil {
			return fmt.Errorf("%s: getting tenant access token: %w", op, err)
		}
		meta := &responseMeta{}
		resp, ce, err := call(withResponseMeta(ctx, meta), larkcore.WithTenantAccessToken(tok))
		if err != nil {
			return fmt.Errorf("%s: %w", op, classifySDKError(ctx, err, meta))
		}
		if ce.Code == CodeOK {
			return nil
		}
		apiErr := newAPIError(ce.Code, ce.Msg, resp.StatusCode, resp.Header)
		if apiErr.TokenInvalid() && attempt == 1 {
			c.log.Warn("tenant access token rejected; refetching and retrying once", "code", ce.Code, "reason", ce.Msg, "log_id", apiErr.LogID)
			c.tokens.Invalidate(ctx, tok)
			continue
		}
		return fmt.Errorf("%s: %w", op, apiErr)
	}
}

// fetchToken calls POST /open-apis/auth/v3/tenant_access_token/internal.
func (c *Client) fetchToken(ctx context.Context) (tok string, ttl time.Duration, err error) {
	defer func() { c.metrics.observeTokenFetch(c.cfg.AppID, err) }()
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

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
