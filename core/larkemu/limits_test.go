package larkemu_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/larkemu"
)

// strictEnv serves an emulator with Lark's limits (or limits) on a fake
// clock, and returns an Authorization header for the test app.
func strictEnv(t *testing.T, limits larkemu.RateLimits) (*env, string) {
	t.Helper()
	e := newEnv(t, larkemu.Options{Apps: map[string]string{appID: secret}, Limits: limits})
	return e, "Bearer " + e.token(t)
}

func (e *env) sendTo(t *testing.T, auth, idType, id string) response {
	t.Helper()
	return e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type="+idType, auth, sendBody(id, "text", textBody("x"), ""))
}

func TestAppRateLimits(t *testing.T) {
	e, auth := strictEnv(t, larkemu.RateLimits{})
	limited := func(r response, limit, reset string) {
		t.Helper()
		if r.status != http.StatusTooManyRequests || r.code() != 99991400 || r.body["msg"] != "request trigger frequency limit" {
			t.Fatalf("HTTP %d %s, want 429 99991400", r.status, r.raw)
		}
		if r.header.Get("x-ogw-ratelimit-limit") != limit || r.header.Get("x-ogw-ratelimit-reset") != reset {
			t.Fatalf("headers limit %q reset %q, want %s and %s", r.header.Get("x-ogw-ratelimit-limit"), r.header.Get("x-ogw-ratelimit-reset"), limit, reset)
		}
	}
	// 50 per second, each to its own chat (5/s per chat).
	send := func(sec, i int) response { return e.sendTo(t, auth, "chat_id", fmt.Sprintf("oc_%d_%d", sec, i)) }
	for i := range 50 {
		if r := send(0, i); r.code() != 0 {
			t.Fatalf("send %d: %s", i, r.raw)
		}
	}
	limited(send(0, 50), "50", "1")
	// The limit is per API: replies still go.
	if r := e.do(t, "POST", "/open-apis/im/v1/messages/om_x/reply", auth, replyBody("text", textBody("r"), "", false)); r.code() != 0 {
		t.Fatalf("reply while sends are limited: %s", r.raw)
	}
	// 1 000 per minute: seconds 1 to 19 fill the minute.
	for sec := 1; sec < 20; sec++ {
		e.clock.Advance(time.Second)
		for i := range 50 {
			if r := send(sec, i); r.code() != 0 {
				t.Fatalf("second %d send %d: %s", sec, i, r.raw)
			}
		}
	}
	e.clock.Advance(time.Second)
	limited(send(20, 0), "1000", "40") // the first second's calls leave the window at 60 s
	e.clock.Advance(40 * time.Second)
	if r := send(60, 0); r.code() != 0 {
		t.Fatalf("after the minute: %s", r.raw)
	}
	if got := e.emu.Throttled(); got != 2 {
		t.Fatalf("Throttled() = %d, want 2", got)
	}
}

func TestTargetRateLimits(t *testing.T) {
	e, auth := strictEnv(t, larkemu.RateLimits{})
	e.emu.RegisterInbound("om_in", "oc_room")
	card := e.do(t, "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", auth,
		sendBody("oc_cards", "interactive", `{"elements":[{"tag":"markdown","content":"v1"}]}`, "")).data()["message_id"].(string)
	tests := map[string]struct {
		call  func() response
		other func() response // a different target, unaffected
	}{
		"chat": {
			call:  func() response { return e.sendTo(t, auth, "chat_id", "oc_hot") },
			other: func() response { return e.sendTo(t, auth, "chat_id", "oc_cold") },
		},
		"replies count against the inbound message's chat": {
			call: func() response {
				return e.do(t, "POST", "/open-apis/im/v1/messages/om_in/reply", auth, replyBody("text", textBody("r"), "", false))
			},
			other: func() response { return e.sendTo(t, auth, "chat_id", "oc_elsewhere") },
		},
		"user": {
			call:  func() response { return e.sendTo(t, auth, "open_id", "ou_busy") },
			other: func() response { return e.sendTo(t, auth, "open_id", "ou_idle") },
		},
		"card updates": {
			call: func() response {
				return e.do(t, "PATCH", "/open-apis/im/v1/messages/"+card, auth, `{"content":"{\"elements\":[]}"}`)
			},
			other: func() response { return e.sendTo(t, auth, "chat_id", "oc_other") },
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e.clock.Advance(2 * time.Second) // fresh windows
			for i := range 5 {
				if r := tc.call(); r.code() != 0 {
					t.Fatalf("call %d: %s", i, r.raw)
				}
			}
			r := tc.call()
			if r.status != 400 || r.code() != 230020 || !strings.Contains(r.raw, "frequency limit") {
				t.Fatalf("6th call: HTTP %d %s, want 400 230020", r.status, r.raw)
			}
			if r := tc.other(); r.code() != 0 {
				t.Fatalf("another target: %s", r.raw)
			}
			e.clock.Advance(time.Second)
			if r := tc.call(); r.code() != 0 {
				t.Fatalf("a second later: %s", r.raw)
			}
		})
	}
}

func TestCompressedLimits(t *testing.T) {
	e, auth := strictEnv(t, larkemu.LarkLimits().Compressed(10))
	for range 5 {
		if r := e.sendTo(t, auth, "chat_id", "oc_1"); r.code() != 0 {
			t.Fatal(r.raw)
		}
	}
	if r := e.sendTo(t, auth, "chat_id", "oc_1"); r.code() != 230020 {
		t.Fatalf("6th in 100 ms: %s", r.raw)
	}
	e.clock.Advance(100 * time.Millisecond)
	if r := e.sendTo(t, auth, "chat_id", "oc_1"); r.code() != 0 {
		t.Fatalf("after 100 ms: %s", r.raw)
	}
	// x-ogw-ratelimit-reset is whole seconds, at least 1.
	for i := range 50 {
		e.sendTo(t, auth, "chat_id", fmt.Sprint("oc_x", i))
	}
	if r := e.sendTo(t, auth, "chat_id", "oc_y"); r.code() != 99991400 || r.header.Get("x-ogw-ratelimit-reset") != "1" {
		t.Fatalf("app limit at 10x: %s reset %q", r.raw, r.header.Get("x-ogw-ratelimit-reset"))
	}
}

func TestUnlimited(t *testing.T) {
	e := newAppEnv(t)
	auth := "Bearer " + e.token(t)
	for i := range 200 {
		if r := e.sendTo(t, auth, "chat_id", "oc_1"); r.code() != 0 {
			t.Fatalf("send %d: %s", i, r.raw)
		}
	}
	if e.emu.Throttled() != 0 {
		t.Fatal("throttled in unlimited mode")
	}
}

// TestRefusedCallsDoNotCount: calls refused before the limits (bad token)
// do not use them up.
func TestRefusedCallsDoNotCount(t *testing.T) {
	e, auth := strictEnv(t, larkemu.RateLimits{})
	for range 60 {
		if r := e.sendTo(t, "Bearer t-nope", "chat_id", "oc_1"); r.code() != 99991663 {
			t.Fatal(r.raw)
		}
	}
	for i := range 5 {
		if r := e.sendTo(t, auth, "chat_id", "oc_1"); r.code() != 0 {
			t.Fatalf("send %d after refused calls: %s", i, r.raw)
		}
	}
	calls := e.emu.Calls()
	if len(calls) != 66 || calls[0].API != larkemu.APITenantToken || calls[1].Code != 99991663 || calls[65].Code != 0 ||
		calls[65].AppID != appID || calls[65].API != larkemu.APISend {
		t.Fatalf("calls: %d, first %+v, last %+v", len(calls), calls[0], calls[len(calls)-1])
	}
}
