package action

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/larkway/larkway/core/internal/action/breaker"
	"github.com/larkway/larkway/core/internal/backoff"
	"github.com/larkway/larkway/core/internal/lark"
)

// RetryPolicy bounds the retries of one action. Only retryable failures are
// retried — 5xx, timeouts and transport errors with exponential backoff and
// jitter, rate limits after the limit's reset — never business errors (bot
// not in chat, no permission, content rejected). Zero fields take defaults.
type RetryPolicy struct {
	// MaxAttempts is how many calls to Lark one action may make (default
	// 5). Calls refused locally by an open breaker are not attempts.
	MaxAttempts int
	// BaseDelay is the backoff after the first failure (default 200 ms); it
	// doubles per attempt, up to MaxDelay (default 10 s). Each delay is
	// drawn from [d/2, d) ("equal jitter").
	BaseDelay time.Duration
	MaxDelay  time.Duration
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts == 0 {
		p.MaxAttempts = 5
	}
	if p.BaseDelay == 0 {
		p.BaseDelay = 200 * time.Millisecond
	}
	if p.MaxDelay == 0 {
		p.MaxDelay = 10 * time.Second
	}
	return p
}

// Validate reports problems with p (after defaults).
func (p RetryPolicy) Validate() error {
	if p.MaxAttempts < 1 || p.BaseDelay <= 0 || p.MaxDelay < p.BaseDelay {
		return fmt.Errorf("action: retry max_attempts (%d) must be at least 1 and 0 < base_delay (%s) <= max_delay (%s)",
			p.MaxAttempts, p.BaseDelay, p.MaxDelay)
	}
	return nil
}

// backoff is the delay after the attempt-th failed call, jittered.
func (p RetryPolicy) backoff(attempt int) time.Duration {
	return backoff.Policy{First: p.BaseDelay, Max: p.MaxDelay, Jitter: true}.Delay(attempt)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// classify says how a call's error counts for the breaker and whether it is
// worth retrying.
func classify(err error) (o breaker.Outcome, retryable, rateLimited bool) {
	if err == nil {
		return breaker.OutcomeSuccess, false, false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return breaker.OutcomeIgnored, false, false
	}
	if errors.Is(err, lark.ErrTransport) {
		return breaker.OutcomeFailure, true, false
	}
	var ae *lark.APIError
	if errors.As(err, &ae) {
		switch {
		case ae.RateLimited():
			return breaker.OutcomeIgnored, true, true
		case ae.ServerError():
			return breaker.OutcomeFailure, true, false
		case ae.TokenInvalid():
			return breaker.OutcomeIgnored, true, false
		}
		return breaker.OutcomeSuccess, ae.Retryable(), false
	}
	return breaker.OutcomeIgnored, lark.IsRetryable(err), false
}
