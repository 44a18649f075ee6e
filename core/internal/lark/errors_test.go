package lark

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func TestAPIErrorClassification(t *testing.T) {
	tests := map[string]struct {
		err         APIError
		retryable   bool
		rateLimited bool
	}{
		"gateway rate limit 429":           {APIError{Code: CodeRateLimited, HTTPStatus: 429}, true, true},
		"gateway rate limit on HTTP 400":   {APIError{Code: CodeRateLimited, HTTPStatus: 400}, true, true},
		"chat rate limit 230020":           {APIError{Code: CodeMessageRateLimited, HTTPStatus: 400}, true, true},
		"custom bot rate limit 11232":      {APIError{Code: CodeCustomBotRateLimited, HTTPStatus: 200}, true, true},
		"429 without a known code":         {APIError{HTTPStatus: 429}, true, true},
		"tenant token invalid 99991663":    {APIError{Code: CodeTenantTokenInvalid, HTTPStatus: 400}, true, false},
		"tenant token invalid on HTTP 200": {APIError{Code: CodeTenantTokenInvalid, HTTPStatus: 200}, true, false},
		"app token invalid 99991664":       {APIError{Code: CodeAppTokenInvalid, HTTPStatus: 400}, true, false},
		"access token invalid 99991671":    {APIError{Code: CodeAccessTokenInvalid, HTTPStatus: 400}, true, false},
		"token missing 99991661":           {APIError{Code: CodeTokenMissing, HTTPStatus: 400}, true, false},
		"message being sent 230049":        {APIError{Code: CodeMessageBeingSent, HTTPStatus: 400}, true, false},
		"non-JSON 502":                     {APIError{HTTPStatus: 502}, true, false},
		"gateway timeout 504":              {APIError{HTTPStatus: 504}, true, false},
		"internal error code on 500":       {APIError{Code: 1500, HTTPStatus: 500}, true, false},
		"bot not in chat 230002":           {APIError{Code: CodeBotNotInChat, HTTPStatus: 400}, false, false},
		"no permission 230027":             {APIError{Code: CodeNoPermission, HTTPStatus: 400}, false, false},
		"content too long 230025":          {APIError{Code: CodeContentTooLong, HTTPStatus: 400}, false, false},
		"bad param 230001":                 {APIError{Code: CodeBadParam, HTTPStatus: 400}, false, false},
		"recalled 230011":                  {APIError{Code: CodeMessageRecalled, HTTPStatus: 400}, false, false},
		"field validation 99992402":        {APIError{Code: CodeFieldValidationFailed, HTTPStatus: 400}, false, false},
		"app secret invalid 10014":         {APIError{Code: CodeAppSecretInvalid, HTTPStatus: 200}, false, false},
		"invalid param 10003":              {APIError{Code: CodeInvalidParam, HTTPStatus: 200}, false, false},
		"scope missing 99991672":           {APIError{Code: 99991672, HTTPStatus: 400}, false, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tc.err.Retryable(); got != tc.retryable {
				t.Errorf("Retryable() = %v, want %v", got, tc.retryable)
			}
			if got := tc.err.RateLimited(); got != tc.rateLimited {
				t.Errorf("RateLimited() = %v, want %v", got, tc.rateLimited)
			}
			wrapped := fmt.Errorf("sending message: %w", &tc.err)
			if got := IsRetryable(wrapped); got != tc.retryable {
				t.Errorf("IsRetryable(wrapped) = %v, want %v", got, tc.retryable)
			}
		})
	}
}

func TestIsRetryable(t *testing.T) {
	tests := map[string]struct {
		err  error
		want bool
	}{
		"nil":                   {nil, false},
		"transport":             {fmt.Errorf("replying: %w: %w", ErrTransport, errors.New("connection reset")), true},
		"invalid request":       {fmt.Errorf("sending: %w: receive_id is empty", ErrInvalidRequest), false},
		"unexpected response":   {fmt.Errorf("sending: %w", ErrUnexpectedResponse), false},
		"closed":                {fmt.Errorf("sending: %w", ErrClosed), false},
		"context canceled":      {fmt.Errorf("sending: %w", context.Canceled), false},
		"context deadline":      {fmt.Errorf("sending: %w", context.DeadlineExceeded), false},
		"retryable api error":   {fmt.Errorf("a: %w", fmt.Errorf("b: %w", &APIError{Code: CodeMessageRateLimited})), true},
		"terminal api error":    {fmt.Errorf("a: %w", &APIError{Code: CodeBotNotInChat}), false},
		"unrelated error":       {errors.New("boom"), false},
		"token fetch transport": {fmt.Errorf("getting tenant access token: fetching tenant access token: %w: %w", ErrTransport, errors.New("dial")), true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := IsRetryable(tc.err); got != tc.want {
				t.Errorf("IsRetryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestNewAPIErrorReadsHeaders(t *testing.T) {
	tests := map[string]struct {
		header     http.Header
		retryAfter time.Duration
		logID      string
	}{
		"rate limit reset seconds": {http.Header{"X-Ogw-Ratelimit-Reset": {"52"}, "X-Tt-Logid": {"L1"}}, 52 * time.Second, "L1"},
		"reset with spaces":        {http.Header{"X-Ogw-Ratelimit-Reset": {" 3 "}}, 3 * time.Second, ""},
		"reset not a number":       {http.Header{"X-Ogw-Ratelimit-Reset": {"soon"}}, 0, ""},
		"reset negative":           {http.Header{"X-Ogw-Ratelimit-Reset": {"-1"}}, 0, ""},
		"reset capped at an hour":  {http.Header{"X-Ogw-Ratelimit-Reset": {"86400"}}, time.Hour, ""},
		"request id fallback":      {http.Header{"X-Request-Id": {"R1"}}, 0, "R1"},
		"no headers":               {nil, 0, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newAPIError(CodeRateLimited, "request trigger frequency limit", 429, tc.header)
			if e.RetryAfter != tc.retryAfter {
				t.Errorf("RetryAfter = %s, want %s", e.RetryAfter, tc.retryAfter)
			}
			if e.LogID != tc.logID {
				t.Errorf("LogID = %q, want %q", e.LogID, tc.logID)
			}
		})
	}
}

func TestParseRateLimitReset(t *testing.T) {
	tests := map[string]time.Duration{
		"52":       52 * time.Second,
		"1":        time.Second,
		" 7 ":      7 * time.Second,
		"0.5":      500 * time.Millisecond,
		"+3":       3 * time.Second,
		"":         0,
		"0":        0,
		"-2":       0,
		"soon":     0,
		"NaN":      0,
		"Inf":      time.Hour,
		"1e9":      time.Hour,
		"3600":     time.Hour,
		"86400":    time.Hour,
		"1.000001": 1000001 * time.Microsecond,
	}
	for in, want := range tests {
		if got := ParseRateLimitReset(in); got != want {
			t.Errorf("ParseRateLimitReset(%q) = %s, want %s", in, got, want)
		}
	}
}

// FuzzParseRateLimitReset feeds x-ogw-ratelimit-reset values: whatever the
// bytes, the result is a duration between 0 and an hour, and whole seconds
// parse exactly.
func FuzzParseRateLimitReset(f *testing.F) {
	for _, s := range []string{"52", "0", "-1", "1.5", " 3 ", "NaN", "Inf", "1e309", "0x10", "9223372036854775807", "", "٣"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := ParseRateLimitReset(v)
		if d < 0 || d > time.Hour {
			t.Fatalf("ParseRateLimitReset(%q) = %s, outside [0, 1h]", v, d)
		}
		if n, err := strconv.Atoi(v); err == nil && n > 0 && n < 3600 && d != time.Duration(n)*time.Second {
			t.Fatalf("ParseRateLimitReset(%q) = %s, want %ds", v, d, n)
		}
	})
}
