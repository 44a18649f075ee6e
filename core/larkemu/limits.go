package larkemu

import (
	"math"
	"net/http"
	"strconv"
	"time"
)

// Limit allows Count accepted requests in any sliding Window.
type Limit struct {
	Count  int           `json:"count"`
	Window time.Duration `json:"window"`
}

func (l Limit) zero() bool { return l.Count <= 0 || l.Window <= 0 }

// RateLimits are the frequency limits the emulator enforces
// (docs/lark-facts.md#rate-limits).
type RateLimits struct {
	// AppPerSecond and AppPerMinute limit each app's calls to each API
	// (50 per second and 1 000 per minute for messaging): HTTP 429, code
	// 99991400, with x-ogw-ratelimit-limit and x-ogw-ratelimit-reset.
	AppPerSecond Limit `json:"app_per_second"`
	AppPerMinute Limit `json:"app_per_minute"`
	// PerChat limits messages into one chat, shared by all bots (5 per
	// second); PerUser messages sent to one user (5 per second). HTTP 400,
	// code 230020.
	PerChat Limit `json:"per_chat"`
	PerUser Limit `json:"per_user"`
	// PerMessageUpdate limits PATCHes of one card (5 per second): 230020.
	PerMessageUpdate Limit `json:"per_message_update"`
}

// LarkLimits are Lark's documented limits.
func LarkLimits() RateLimits {
	return RateLimits{
		AppPerSecond:     Limit{50, time.Second},
		AppPerMinute:     Limit{1000, time.Minute},
		PerChat:          Limit{5, time.Second},
		PerUser:          Limit{5, time.Second},
		PerMessageUpdate: Limit{5, time.Second},
	}
}

// Compressed returns the limits running factor times faster: every window
// divided by factor, counts unchanged. Every ratio between limits stays as
// on Lark, so a test at 10x exercises the same behaviour in a tenth of the
// time.
func (l RateLimits) Compressed(factor float64) RateLimits {
	c := func(x Limit) Limit {
		return Limit{Count: x.Count, Window: time.Duration(float64(x.Window) / factor)}
	}
	return RateLimits{c(l.AppPerSecond), c(l.AppPerMinute), c(l.PerChat), c(l.PerUser), c(l.PerMessageUpdate)}
}

func (l RateLimits) withDefaults() RateLimits {
	d := LarkLimits()
	for _, p := range []struct{ got, def *Limit }{
		{&l.AppPerSecond, &d.AppPerSecond}, {&l.AppPerMinute, &d.AppPerMinute},
		{&l.PerChat, &d.PerChat}, {&l.PerUser, &d.PerUser}, {&l.PerMessageUpdate, &d.PerMessageUpdate},
	} {
		if p.got.zero() {
			*p.got = *p.def
		}
	}
	return l
}

// windows are sliding-window logs of accepted requests, per scope key. Lark
// does not document its window algorithm; a log is the strictest reading of
// "N per second" (no burst at window edges), so a client that passes here
// passes there. Guarded by Emulator.mu.
type windows struct {
	scopes map[string][]time.Time // ascending
	ops    int
}

func newWindows() *windows { return &windows{scopes: make(map[string][]time.Time)} }

type check struct {
	key   string
	limit Limit
}

// allow admits a request at now if every check has room, recording it in
// all of them; otherwise it records nothing and returns the refusing check
// and the time until it has room.
func (w *windows) allow(now time.Time, checks ...check) (ok bool, refused check, reset time.Duration) {
	w.sweep(now)
	for _, c := range checks {
		times := w.trim(c.key, now, c.limit.Window)
		if len(times) >= c.limit.Count {
			return false, c, times[len(times)-c.limit.Count].Add(c.limit.Window).Sub(now)
		}
	}
	for _, c := range checks {
		w.scopes[c.key] = append(w.scopes[c.key], now)
	}
	return true, check{}, 0
}

// trim drops the key's entries outside (now-window, now].
func (w *windows) trim(key string, now time.Time, window time.Duration) []time.Time {
	times := w.scopes[key]
	cut := now.Add(-window)
	i := 0
	for i < len(times) && !times[i].After(cut) {
		i++
	}
	if i > 0 {
		times = append(times[:0:0], times[i:]...)
		if len(times) == 0 {
			delete(w.scopes, key)
		} else {
			w.scopes[key] = times
		}
	}
	return times
}

// sweep forgets idle scopes now and then, bounding memory.
func (w *windows) sweep(now time.Time) {
	w.ops++
	if w.ops%4096 != 0 {
		return
	}
	for key, times := range w.scopes {
		if len(times) == 0 || now.Sub(times[len(times)-1]) > time.Hour {
			delete(w.scopes, key)
		}
	}
}

// allowApp applies the per-app-and-API limits, writing Lark's 429 when one
// refuses.
func (e *Emulator) allowApp(w http.ResponseWriter, appID, api string) bool {
	if e.unlimited {
		return true
	}
	e.mu.Lock()
	ok, refused, reset := e.windows.allow(e.now(),
		check{"app:" + appID + ":" + api + ":s", e.limits.AppPerSecond},
		check{"app:" + appID + ":" + api + ":m", e.limits.AppPerMinute})
	e.mu.Unlock()
	if ok {
		return true
	}
	e.log.Debug("app rate limit", "app_id", appID, "api", api, "limit", refused.limit.Count, "reset", reset)
	e.writeGatewayLimit(w, refused.limit.Count, reset)
	return false
}

// writeGatewayLimit answers as Lark's gateway does when a limit trips
// (docs/lark-facts.md#gateway-limit-response): HTTP 429, code 99991400,
// and the window's limit and the whole seconds until it recovers.
func (e *Emulator) writeGatewayLimit(w http.ResponseWriter, limit int, reset time.Duration) {
	secs := max(1, int(math.Ceil(reset.Seconds())))
	w.Header().Set("x-ogw-ratelimit-limit", strconv.Itoa(limit))
	w.Header().Set("x-ogw-ratelimit-reset", strconv.Itoa(secs))
	logID := e.newLogID()
	writeJSON(w, http.StatusTooManyRequests, logID, envelope{Code: codeRateLimited, Msg: msgRateLimited, Error: &errorDetail{LogID: logID}})
}

// allowTarget applies a per-chat, per-user or per-message limit, writing
// Lark's 230020 when it refuses.
func (e *Emulator) allowTarget(w http.ResponseWriter, key string, limit Limit) bool {
	if e.unlimited {
		return true
	}
	e.mu.Lock()
	ok, _, reset := e.windows.allow(e.now(), check{key, limit})
	e.mu.Unlock()
	if ok {
		return true
	}
	e.log.Debug("target rate limit", "scope", key, "reset", reset)
	e.fail(w, codeMessageRateLimited, msgMessageRateLimited)
	return false
}
