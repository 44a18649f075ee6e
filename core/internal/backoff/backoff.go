// Package backoff is the core's one exponential backoff: action retries,
// bus redelivery, long-connection reconnects and plugin restarts all take
// their delays from it.
//
// It is a pure function of the attempt number rather than a stateful
// iterator such as cenkalti/backoff's: the bus learns the attempt from the
// broker's redelivery count, the action retry interleaves its waits with a
// rate limiter and a breaker, and the supervisor resets on a healthy run —
// each keeps its own count, and the delay for a given count must be the
// same wherever it is computed.
package backoff

import (
	"math"
	"math/rand/v2"
	"time"
)

// Policy doubles from First per attempt, capped at Max.
type Policy struct {
	First, Max time.Duration
	// Jitter draws each delay from [d/2, d] ("equal jitter") so callers
	// that failed together do not retry together.
	Jitter bool
}

// Delay is the wait after the attempt-th failure (1-based; attempts < 1
// count as 1): First·2^(attempt-1), capped at Max, jittered if asked.
func (p Policy) Delay(attempt int) time.Duration {
	d := p.First
	if d <= 0 {
		return 0
	}
	for i := 1; i < attempt && (p.Max <= 0 || d < p.Max) && d <= math.MaxInt64/2; i++ {
		d *= 2
	}
	if p.Max > 0 {
		d = min(d, p.Max)
	}
	if !p.Jitter || d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Func is Delay as a function value, for options that take one.
func (p Policy) Func() func(attempt int) time.Duration { return p.Delay }
