package ratelimit

import (
	"errors"
	"fmt"
	"time"
)

// Limit allows Count calls in any Window.
type Limit struct {
	Count  int
	Window time.Duration
}

func (l Limit) zero() bool { return l.Count == 0 && l.Window == 0 }

// Limits are the OpenAPI frequency limits a Scheduler keeps to, across
// every replica sharing the Redis (docs/lark-facts.md#rate-limits). Zero
// fields take DefaultLimits' values.
type Limits struct {
	// Disabled turns client-side limiting off: actions go out as fast as
	// they come (benchmarks, an unlimited emulator).
	Disabled bool
	// AppPerSecond and AppPerMinute limit each app's calls to each API
	// (Lark: 50/s and 1 000/min for sending, replying and updating cards).
	AppPerSecond Limit
	AppPerMinute Limit
	// PerChat limits messages into one chat (Lark: 5/s, shared by all bots),
	// PerUser messages to one user (5/s), PerMessageUpdate PATCHes of one
	// card (5/s).
	PerChat          Limit
	PerUser          Limit
	PerMessageUpdate Limit
	// Margin widens every window to absorb the time between the limiter's
	// grant and the call's arrival at Lark (scheduling and network jitter,
	// across replicas). Default 100 ms.
	Margin time.Duration
	// BlockFor is how long a scope is held after Lark refuses a call for
	// frequency without an x-ogw-ratelimit-reset header (230020 has none).
	// Default 1 s.
	BlockFor time.Duration
}

// DefaultLimits are Lark's documented limits.
func DefaultLimits() Limits {
	return Limits{
		AppPerSecond:     Limit{50, time.Second},
		AppPerMinute:     Limit{1000, time.Minute},
		PerChat:          Limit{5, time.Second},
		PerUser:          Limit{5, time.Second},
		PerMessageUpdate: Limit{5, time.Second},
		Margin:           100 * time.Millisecond,
		BlockFor:         time.Second,
	}
}

// Compressed returns l running factor times faster: every window (and
// BlockFor) divided by factor, counts and Margin unchanged — the client side
// of larkemu's RateLimits.Compressed.
func (l Limits) Compressed(factor float64) Limits {
	l = l.WithDefaults()
	c := func(x Limit) Limit { return Limit{x.Count, time.Duration(float64(x.Window) / factor)} }
	l.AppPerSecond, l.AppPerMinute = c(l.AppPerSecond), c(l.AppPerMinute)
	l.PerChat, l.PerUser, l.PerMessageUpdate = c(l.PerChat), c(l.PerUser), c(l.PerMessageUpdate)
	l.BlockFor = time.Duration(float64(l.BlockFor) / factor)
	return l
}

// WithDefaults fills l's zero fields from DefaultLimits.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	for _, p := range []struct{ got, def *Limit }{
		{&l.AppPerSecond, &d.AppPerSecond}, {&l.AppPerMinute, &d.AppPerMinute},
		{&l.PerChat, &d.PerChat}, {&l.PerUser, &d.PerUser}, {&l.PerMessageUpdate, &d.PerMessageUpdate},
	} {
		if p.got.zero() {
			*p.got = *p.def
		}
	}
	if l.Margin == 0 {
		l.Margin = d.Margin
	}
	if l.BlockFor == 0 {
		l.BlockFor = d.BlockFor
	}
	return l
}

// Validate reports every problem with l (after defaults).
func (l Limits) Validate() error {
	var errs []error
	for name, x := range map[string]Limit{
		"app_per_second": l.AppPerSecond, "app_per_minute": l.AppPerMinute,
		"per_chat": l.PerChat, "per_user": l.PerUser, "per_message_update": l.PerMessageUpdate,
	} {
		if x.Count <= 0 || x.Window <= 0 {
			errs = append(errs, fmt.Errorf("action: rate limit %s must have a positive count and window, got %d per %s", name, x.Count, x.Window))
		}
	}
	if l.Margin < 0 || l.BlockFor < 0 {
		errs = append(errs, errors.New("action: rate limit margin and block_for must not be negative"))
	}
	return errors.Join(errs...)
}

// gcra turns "Count per Window" into the GCRA limit the Scheduler enforces.
// A GCRA with emission interval T and burst B admits fewer than B + Δ/T
// calls in any interval Δ; with T = (Window+Margin) / (Count-B+1) that is at
// most Count calls in any Window+Margin, so Lark sees at most Count in any
// Window even when calls arrive up to Margin later than granted. A small
// burst (a tenth of Count, at most 10) lets a late poll catch up without
// giving away much rate: for 1 000/min it keeps 99 % of it.
//
// headroom extra burst slots are added on top and held back: a caller
// passes urgency (0 to headroom) and may use that many of them. The state
// of a GCRA key is one time, shared by every caller whatever burst it
// passes, so when a scope is saturated the more urgent callers get the next
// slot first — across replicas, without coordination — while the total
// stays within the bound above, computed for the full burst.
func gcra(l Limit, margin time.Duration, headroom, urgency int) gcraLimit {
	burst := min(max(l.Count/10, 1), 10)
	full := burst + headroom
	return gcraLimit{Rate: max(l.Count-full+1, 1), Period: l.Window + margin, Burst: burst + min(urgency, headroom)}
}

// gcraLimit is a GCRA's parameters, as go-redis/redis_rate's Limit: Rate
// calls per Period at the sustained pace (emission interval Period/Rate),
// and up to Burst at once.
type gcraLimit struct {
	Rate   int
	Period time.Duration
	Burst  int
}
