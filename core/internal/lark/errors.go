package lark

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Sentinel error classes. Use errors.Is; IsRetryable answers the retry
// question for any error this package returns.
var (
	// ErrInvalidRequest marks a request rejected locally, before any HTTP
	// call (empty message_id, unknown receive_id_type, content that is not
	// JSON, uuid over 50 characters). Terminal.
	ErrInvalidRequest = errors.New("invalid lark request")
	// ErrTransport marks a failure to get an HTTP response at all (dial
	// failure, reset connection, client timeout). Retryable: a request that
	// may have reached Lark is safe to repeat when it carries a uuid.
	ErrTransport = errors.New("lark transport failure")
	// ErrUnexpectedResponse marks a successful-looking response that lacks
	// what the API promises (a code-0 send without message_id, a token
	// response without a token). Terminal.
	ErrUnexpectedResponse = errors.New("unexpected lark response")
	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("lark client closed")
	// ErrContentTooLarge marks a message body over Lark's size limit (text
	// 150 KB, card and post 30 KB), detected before sending. It comes with
	// ErrInvalidRequest. Terminal.
	ErrContentTooLarge = errors.New("message content too large")
)

// OpenAPI body codes this package treats specially
// (docs/lark-facts.md#error-codes). Codes not listed here are business
// errors and terminal.
const (
	CodeOK = 0
	// Token endpoint.
	CodeInvalidParam     = 10003 // invalid param (unknown app_id, missing fields)
	CodeAppSecretInvalid = 10014 // app secret invalid
	// Gateway.
	CodeRateLimited           = 99991400 // request trigger frequency limit (HTTP 429, x-ogw-ratelimit-reset)
	CodeTokenMissing          = 99991661 // missing access token (no "Bearer " header)
	CodeTenantTokenInvalid    = 99991663 // tenant_access_token invalid or expired
	CodeAppTokenInvalid       = 99991664 // app_access_token invalid
	CodeAccessTokenInvalid    = 99991671 // access token invalid
	CodeFieldValidationFailed = 99992402 // request field validation failed
	// Messaging (im/v1 send and reply).
	CodeBadParam             = 230001 // invalid request parameter
	CodeBotNotInChat         = 230002 // bot is not in the chat
	CodeMessageRecalled      = 230011 // replied-to message was recalled
	CodeMessageRateLimited   = 230020 // per-chat / per-user 5 QPS frequency limit
	CodeContentTooLong       = 230025 // text > 150 KB, card or post > 30 KB
	CodeNoPermission         = 230027 // lacks permission
	CodeMessageBeingSent     = 230049 // same uuid still being processed
	CodeCustomBotRateLimited = 11232  // create message service trigger rate limit
)

// HTTP headers of Lark's gateway rate limiting
// (docs/lark-facts.md#gateway-limit-response).
const (
	HeaderRateLimitLimit = "x-ogw-ratelimit-limit"
	HeaderRateLimitReset = "x-ogw-ratelimit-reset"
)

const (
	headerLogID     = "X-Tt-Logid"
	headerRequestID = "X-Request-Id"
	// maxUUIDLen is the documented limit on a send/reply uuid.
	maxUUIDLen = 50
	// maxRetryAfter caps a server-provided x-ogw-ratelimit-reset.
	maxRetryAfter = time.Hour
)

// APIError is a response from the OpenAPI whose body code is not 0, or a
// response without a JSON body (then Code is 0 and HTTPStatus tells what
// happened, e.g. a 502 from a proxy).
type APIError struct {
	// Code is the body's "code" field, read whatever the HTTP status.
	Code int
	// Msg is the body's "msg" field.
	Msg string
	// HTTPStatus is the response status (Lark answers most business errors
	// with 400, some with 200).
	HTTPStatus int
	// RetryAfter is the x-ogw-ratelimit-reset header (seconds until the rate
	// limit window recovers), zero when absent.
	RetryAfter time.Duration
	// LogID is Lark's request log ID (X-Tt-Logid), for support tickets.
	LogID string
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "lark api error: code %d", e.Code)
	if e.Msg != "" {
		fmt.Fprintf(&b, " (%s)", e.Msg)
	}
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, ", http %d", e.HTTPStatus)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
	}
	if e.LogID != "" {
		fmt.Fprintf(&b, ", log_id %s", e.LogID)
	}
	return b.String()
}

// RateLimited reports whether Lark refused the call for frequency: gateway
// 99991400, messaging 230020, 11232, or HTTP 429. Callers should back off
// (at least RetryAfter when set) rather than retry immediately.
func (e *APIError) RateLimited() bool {
	switch e.Code {
	case CodeRateLimited, CodeMessageRateLimited, CodeCustomBotRateLimited:
		return true
	}
	return e.HTTPStatus == http.StatusTooManyRequests
}

// ChatRateLimited reports whether the refusal is the per-chat / per-user
// (or per-message update) frequency limit, 230020, rather than the app's
// gateway limit for the API.
func (e *APIError) ChatRateLimited() bool { return e.Code == CodeMessageRateLimited }

// ServerError reports whether Lark (or a proxy in front of it) failed:
// HTTP 5xx. Circuit breakers count these.
func (e *APIError) ServerError() bool { return e.HTTPStatus >= 500 }

// TokenInvalid reports whether the access token was missing, invalid or
// expired. The Client already refetched a token and retried once before
// returning such an error.
func (e *APIError) TokenInvalid() bool { return isTokenInvalid(e.Code) }

// Retryable reports whether the same request may succeed later: rate
// limits, token errors (a fresh token may fix them), "message being sent",
// and 5xx responses. Business errors (bot not in chat, permission, content
// too long, bad parameters, bad app secret) are terminal.
func (e *APIError) Retryable() bool {
	if e.RateLimited() || e.TokenInvalid() || e.Code == CodeMessageBeingSent {
		return true
	}
	return e.HTTPStatus >= 500
}

func isTokenInvalid(code int) bool {
	switch code {
	case CodeTokenMissing, CodeTenantTokenInvalid, CodeAppTokenInvalid, CodeAccessTokenInvalid:
		return true
	}
	return false
}

// IsRetryable classifies any error returned by this package: transport
// failures and retryable *APIError values are retryable; local validation,
// closed client, context cancellation and business errors are not.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrTransport) {
		return true
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Retryable()
	}
	return false
}

// newAPIError builds an APIError from a decoded body code and the response
// status and headers.
func newAPIError(code int, msg string, status int, h http.Header) *APIError {
	e := &APIError{Code: code, Msg: msg, HTTPStatus: status}
	if h != nil {
		e.RetryAfter = parseRetryAfter(h.Get(HeaderRateLimitReset))
		e.LogID = h.Get(headerLogID)
		if e.LogID == "" {
			e.LogID = h.Get(headerRequestID)
		}
	}
	return e
}

// ParseRateLimitReset reads x-ogw-ratelimit-reset, a whole number of
// seconds until the limit recovers, capped at an hour. Anything else
// (empty, not a number, zero or negative) is 0: unknown.
func ParseRateLimitReset(v string) time.Duration { return parseRetryAfter(v) }

// parseRetryAfter reads x-ogw-ratelimit-reset. Lark sends whole seconds;
// a fractional value is accepted too.
func parseRetryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 32 {
		return 0
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || f <= 0 {
		return 0
	}
	if f >= maxRetryAfter.Seconds() {
		return maxRetryAfter
	}
	return time.Duration(math.Ceil(f * float64(time.Second)))
}
