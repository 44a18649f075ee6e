package larkemu_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/larkemu"
)

func TestFaults(t *testing.T) {
	tests := map[string]struct {
		faults larkemu.Faults
		check  func(t *testing.T, r response)
	}{
		"every call fails with 503": {
			faults: larkemu.Faults{ErrorRate: 1, ErrorStatus: 503},
			check: func(t *testing.T, r response) {
				if r.status != 503 || !strings.HasPrefix(r.contentType, "text/plain") {
					t.Fatalf("HTTP %d %q %s, want a plain-text 503", r.status, r.contentType, r.raw)
				}
			},
		},
		"default error status is 500": {
			faults: larkemu.Faults{ErrorRate: 1},
			check: func(t *testing.T, r response) {
				if r.status != 500 {
					t.Fatalf("HTTP %d, want 500", r.status)
				}
			},
		},
		"429 storm": {
			faults: larkemu.Faults{RateLimitStorm: 3 * time.Second},
			check: func(t *testing.T, r response) {
				if r.status != 429 || r.code() != 99991400 || r.header.Get("x-ogw-ratelimit-reset") != "3" || r.header.Get("x-ogw-ratelimit-limit") != "50" {
					t.Fatalf("HTTP %d %s reset %q, want 429 99991400 with reset 3", r.status, r.raw, r.header.Get("x-ogw-ratelimit-reset"))
				}
			},
		},
		"token invalidation": {
			faults: larkemu.Faults{InvalidateTokens: true},
			check: func(t *testing.T, r response) {
				if r.status != 400 || r.code() != 99991663 {
					t.Fatalf("HTTP %d %s, want 400 99991663", r.status, r.raw)
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newAppEnv(t)
			auth := "Bearer " + e.token(t)
			e.emu.SetFaults(tc.faults)
			tc.check(t, e.sendTo(t, auth, "chat_id", "oc_1"))
			// The token endpoint is spared, so clients recover once faults clear.
			auth = "Bearer " + e.token(t)
			e.emu.SetFaults(larkemu.Faults{})
			if r := e.sendTo(t, auth, "chat_id", "oc_1"); r.code() != 0 {
				t.Fatalf("after clearing faults: %s", r.raw)
			}
		})
	}
}

func TestStormEnds(t *testing.T) {
	e := newAppEnv(t)
	auth := "Bearer " + e.token(t)
	e.emu.SetFaults(larkemu.Faults{RateLimitStorm: 3 * time.Second})
	e.clock.Advance(1500 * time.Millisecond)
	if r := e.sendTo(t, auth, "chat_id", "oc_1"); r.header.Get("x-ogw-ratelimit-reset") != "2" {
		t.Fatalf("1.5 s into a 3 s storm: reset %q, want 2", r.header.Get("x-ogw-ratelimit-reset"))
	}
	e.clock.Advance(1500 * time.Millisecond)
	if r := e.sendTo(t, auth, "chat_id", "oc_1"); r.code() != 0 {
		t.Fatalf("after the storm: %s", r.raw)
	}
	if got := e.emu.Throttled(); got != 1 {
		t.Fatalf("Throttled() = %d, want 1", got)
	}
}

func TestFaultLatency(t *testing.T) {
	e := newEnv(t, larkemu.Options{Apps: map[string]string{appID: secret}, Unlimited: true, Now: time.Now})
	auth := "Bearer " + e.token(t)
	e.emu.SetFaults(larkemu.Faults{Latency: 50 * time.Millisecond})
	start := time.Now()
	if r := e.sendTo(t, auth, "chat_id", "oc_1"); r.code() != 0 {
		t.Fatal(r.raw)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("answered in %s, want at least the 50 ms latency", d)
	}
	// A client that gives up is not waited for.
	e.emu.SetFaults(larkemu.Faults{Latency: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/open-apis/im/v1/messages?receive_id_type=chat_id",
		strings.NewReader(sendBody("oc_1", "text", textBody("x"), "")))
	req.Header.Set("Authorization", auth)
	if _, err := e.srv.Client().Do(req); err == nil {
		t.Fatal("a one-hour latency answered")
	}
}

func TestFaultsEndpoint(t *testing.T) {
	e := newAppEnv(t)
	auth := "Bearer " + e.token(t)
	status := func(r response) map[string]any {
		t.Helper()
		if r.status != 200 {
			t.Fatalf("HTTP %d %s", r.status, r.raw)
		}
		return r.body
	}
	got := status(e.do(t, "POST", "/_emu/faults", "", `{"error_rate":0.25,"error_status":502,"latency_ms":1,"rate_limit_storm_seconds":2}`))
	if got["error_rate"] != 0.25 || got["error_status"] != float64(502) || got["latency_ms"] != float64(1) || got["rate_limit_storm_remaining_ms"] != float64(2000) {
		t.Fatalf("POST answered %v", got)
	}
	if r := e.sendTo(t, auth, "chat_id", "oc_1"); r.code() != 99991400 {
		t.Fatalf("storm set over HTTP: %s", r.raw)
	}
	if got := status(e.do(t, "GET", "/_emu/faults", "", "")); got["error_status"] != float64(502) {
		t.Fatalf("GET answered %v", got)
	}
	status(e.do(t, "DELETE", "/_emu/faults", "", ""))
	if r := e.sendTo(t, auth, "chat_id", "oc_1"); r.code() != 0 {
		t.Fatalf("after DELETE: %s", r.raw)
	}
	status(e.do(t, "POST", "/_emu/faults", "", `{"invalidate_tokens":true}`))
	if r := e.sendTo(t, auth, "chat_id", "oc_1"); r.code() != 99991663 {
		t.Fatalf("after invalidate_tokens: %s", r.raw)
	}
	for _, bad := range []string{`{"error_rate":2}`, `{"error_status":404}`, `{"latency_ms":-1}`, `not json`, `{"rate_limit_storm_seconds":-3}`} {
		if r := e.do(t, "POST", "/_emu/faults", "", bad); r.status != 400 {
			t.Fatalf("POST %s: HTTP %d, want 400", bad, r.status)
		}
	}
	// Calls are listed over HTTP too.
	r := e.do(t, "GET", "/_emu/calls", "", "")
	var calls []larkemu.Call
	if err := json.Unmarshal([]byte(r.raw), &calls); err != nil || len(calls) < 4 {
		t.Fatalf("GET /_emu/calls: %s (%v)", r.raw, err)
	}
}
