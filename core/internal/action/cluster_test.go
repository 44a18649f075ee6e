package action

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/larkway/larkway/core/internal/action/breaker"
	"github.com/larkway/larkway/core/internal/action/ratelimit"
	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// hotChatLoad is n inbound messages, registered with the emulator: one in
// hotEvery in one hot chat, the rest spread over 20 chats.
func hotChatLoad(c *cluster, n, hotEvery int, tag string) []*pluginv1.Event {
	events := make([]*pluginv1.Event, n)
	cold := 0
	for i := range events {
		chat := "oc_hot"
		if i%hotEvery != 0 {
			chat = fmt.Sprintf("oc_chat%02d", cold%20)
			cold++
		}
		id := fmt.Sprintf("om_%s_%05d", tag, i)
		c.emu.RegisterInbound(id, chat)
		events[i] = messageEvent(id, chat)
	}
	return events
}

// replicaOf is the replica a chat's events go to: Pulsar's key-shared
// subscription gives each chat to one consumer, so the hot chat's events
// all wait in one replica.
func replicaOf(chat string, n int) int {
	var k int
	if _, err := fmt.Sscanf(chat, "oc_chat%d", &k); err != nil {
		return 0 // the hot chat
	}
	return k % n
}

// runReplies executes one reply per event in its chat's replica, all at
// once (as the dispatchers of several replicas would), and waits.
func runReplies(t *testing.T, c *cluster, events []*pluginv1.Event, delivered *atomic.Int64) {
	t.Helper()
	var wg sync.WaitGroup
	for _, ev := range events {
		wg.Go(func() {
			refused, err := c.execs[replicaOf(ev.GetChatId(), len(c.execs))].Execute(t.Context(), Request{Plugin: "p", Allowed: allowReply, Event: ev,
				Actions: []*pluginv1.Action{reply("re " + ev.GetDedupKey())}})
			if err != nil || len(refused) != 0 {
				t.Errorf("event %s: refused %v, err %v", ev.GetDedupKey(), refused, err)
			}
			if delivered != nil {
				delivered.Add(1)
			}
		})
	}
	wg.Wait()
}

// assertExactlyOnce checks that every event got exactly one reply, in its
// chat, carrying the action's uuid.
func assertExactlyOnce(t *testing.T, c *cluster, events []*pluginv1.Event) []larkemu.Message {
	t.Helper()
	msgs := c.emu.Messages()
	byUUID := make(map[string]larkemu.Message, len(msgs))
	for _, m := range msgs {
		if _, dup := byUUID[m.UUID]; dup {
			t.Fatalf("uuid %s recorded twice", m.UUID)
		}
		byUUID[m.UUID] = m
	}
	for _, ev := range events {
		m, ok := byUUID[IdempotencyKey(appA, ev.GetDedupKey(), "p", 0)]
		if !ok {
			t.Fatalf("no reply to %s", ev.GetDedupKey())
		}
		if m.ParentID != ev.GetDedupKey() || m.ChatID != ev.GetChatId() {
			t.Fatalf("reply to %s recorded as %+v", ev.GetDedupKey(), m)
		}
	}
	if len(msgs) != len(events) {
		t.Fatalf("%d messages recorded, want %d", len(msgs), len(events))
	}
	return msgs
}

// assertNotThrottled fails the test, saying which, if the emulator refused
// any call for frequency.
func assertNotThrottled(t *testing.T, c *cluster) { assertThrottledAtMost(t, c, 0) }

// assertThrottledAtMost allows up to max refusals (each then obeyed and
// retried: exactly-once is checked apart).
func assertThrottledAtMost(t *testing.T, c *cluster, max int) {
	t.Helper()
	var throttled []larkemu.Call
	for _, call := range c.emu.Calls() {
		if call.Throttled() {
			throttled = append(throttled, call)
		}
	}
	if len(throttled) > max {
		t.Fatalf("the emulator throttled %d calls (at most %d allowed), first %+v", len(throttled), max, throttled[0])
	}
	if len(throttled) > 0 {
		t.Logf("the emulator throttled %d calls (allowed here), first %+v", len(throttled), throttled[0])
	}
}

// logTimeline logs replies per second, hot chat apart, and the hot chat's
// gaps: where a run lost rate.
func logTimeline(t *testing.T, msgs []larkemu.Message) {
	t.Helper()
	times := make([]time.Time, 0, len(msgs))
	var hot []time.Time
	for _, m := range msgs {
		times = append(times, m.CreateTime)
		if m.ChatID == "oc_hot" {
			hot = append(hot, m.CreateTime)
		}
	}
	first := slices.MinFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	perSecond := map[int][2]int{}
	last := 0
	for _, m := range msgs {
		sec := int(m.CreateTime.Sub(first) / time.Second)
		v := perSecond[sec]
		if m.ChatID == "oc_hot" {
			v[0]++
		} else {
			v[1]++
		}
		perSecond[sec] = v
		last = max(last, sec)
	}
	for sec := 0; sec <= last; sec++ {
		t.Logf("second %d: hot chat %d, others %d", sec, perSecond[sec][0], perSecond[sec][1])
	}
	slices.SortFunc(hot, func(a, b time.Time) int { return a.Compare(b) })
	gaps := map[time.Duration]int{}
	for i := 1; i < len(hot); i++ {
		gaps[hot[i].Sub(hot[i-1]).Truncate(10*time.Millisecond)]++
	}
	t.Logf("hot chat gaps (10 ms buckets): %v", gaps)
}

// sustainedRate is what Lark allows in the long run: the tighter of the
// app's two windows.
func sustainedRate(l larkemu.RateLimits) float64 {
	return min(float64(l.AppPerSecond.Count)/l.AppPerSecond.Window.Seconds(), float64(l.AppPerMinute.Count)/l.AppPerMinute.Window.Seconds())
}

// measureRate is the rate replies reached the emulator, first to last.
func measureRate(msgs []larkemu.Message) (float64, time.Duration) {
	times := make([]time.Time, len(msgs))
	for i, m := range msgs {
		times[i] = m.CreateTime
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	span := times[len(times)-1].Sub(times[0])
	return float64(len(times)-1) / span.Seconds(), span
}

// testThroughput: three replicas sharing Redis push n replies over 20
// chats and a hot one (1 in 8) at the emulator's strict limits, compressed by
// factor on both sides: Lark never throttles and every reply lands once.
// The share of the allowed rate used is logged, not gated: it depends on
// how busy the machine is (make test must not fail on a loaded one).
func testThroughput(t *testing.T, n int, factor float64, maxThrottled int) {
	emuLimits := larkemu.LarkLimits().Compressed(factor)
	c := newCluster(t, clusterOpts{replicas: 3, redis: true, emu: &emuLimits,
		cfg: Config{Limits: ratelimit.DefaultLimits().Compressed(factor)}})
	events := hotChatLoad(c, n, 8, "tp")
	start := time.Now()
	runReplies(t, c, events, nil)
	elapsed := time.Since(start)

	assertThrottledAtMost(t, c, maxThrottled)
	msgs := assertExactlyOnce(t, c, events)
	rate, span := measureRate(msgs)
	allowed := sustainedRate(emuLimits)
	t.Logf("%d replies (1 in 8 in one hot chat) from 3 replicas in %s (%s first to last): %.1f/s of %.1f/s allowed = %.1f%%, 0 throttled",
		n, elapsed.Round(time.Millisecond), span.Round(time.Millisecond), rate, allowed, 100*rate/allowed)
	if testing.Verbose() {
		logTimeline(t, msgs)
	}
	var waited float64
	for _, reg := range c.regs {
		waited += testenv.MetricValue(t, reg, "larkway_action_ratelimit_wait_seconds", "app_id", appA, "api", "im.message.reply")
	}
	// A refused call waits again before its retry.
	if want := n + c.emu.Throttled(); int(waited) != want {
		t.Fatalf("larkway_action_ratelimit_wait_seconds counted %v waits, want %d (%d replies, %d refused and retried)", waited, want, n, c.emu.Throttled())
	}
}

// TestThroughputAcrossReplicasAt5x: 2 000 replies with every window five
// times shorter on both sides (1 000 per 12 s: about 25 s). Compression
// makes the test five times more sensitive to scheduling stalls than Lark's
// real windows are — the burst that lets a stalled replica catch up covers
// a fifth of the time — so it is not taken further.
//
// At 5x a replica descheduled for longer than the limiter's 50 ms margin
// (a loaded CI machine does that) can reach Lark a moment past the window
// it was granted: up to 1 % of the calls may be refused, and each must be
// obeyed and retried (exactly once is still asserted). At Lark's real
// windows the margin covers such stalls and no refusal is allowed.
func TestThroughputAcrossReplicasAt5x(t *testing.T) { testThroughput(t, 2000, 5, 2000/100) }

// TestThroughputAcrossReplicasAtRealLimits runs the same at Lark's real
// limits, with fewer replies to stay short: 1 000/min allows 16.7/s.
func TestThroughputAcrossReplicasAtRealLimits(t *testing.T) { testThroughput(t, 300, 1, 0) }

// TestEmbeddedModeKeepsLimits: without Redis, one replica keeps to the same
// limits in process.
func TestEmbeddedModeKeepsLimits(t *testing.T) {
	emuLimits := larkemu.LarkLimits().Compressed(5)
	c := newCluster(t, clusterOpts{emu: &emuLimits, cfg: Config{Limits: ratelimit.DefaultLimits().Compressed(5)}})
	events := hotChatLoad(c, 600, 8, "em")
	runReplies(t, c, events, nil)
	// At 5x, as in TestThroughputAcrossReplicasAt5x: a stall longer than the
	// limiter's margin can cost up to 1 % obeyed refusals.
	assertThrottledAtMost(t, c, len(events)/100)
	msgs := assertExactlyOnce(t, c, events)
	rate, _ := measureRate(msgs)
	t.Logf("embedded: %.1f/s of %.1f/s allowed (logged, not gated)", rate, sustainedRate(emuLimits))
}

// TestRateLimitStormIsObeyed: mid-run, Lark answers everything with 429 and
// x-ogw-ratelimit-reset for 2 s. The replicas stop calling until the reset
// — all of them, as the first refusal blocks the scope in Redis — and then
// finish, each reply once.
func TestRateLimitStormIsObeyed(t *testing.T) {
	// 5x, as the throughput tests: at 10x a scheduling stall on a loaded CI
	// machine outgrew the margin and Lark throttled a hot-chat reply.
	emuLimits := larkemu.LarkLimits().Compressed(5)
	c := newCluster(t, clusterOpts{replicas: 3, redis: true, emu: &emuLimits, cfg: Config{Limits: ratelimit.DefaultLimits().Compressed(5)}})
	events := hotChatLoad(c, 600, 8, "st")
	var delivered atomic.Int64
	done := make(chan struct{})
	go func() { defer close(done); runReplies(t, c, events, &delivered) }()
	testenv.Eventually(t, 30*time.Second, "no replies before the storm", func() bool { return len(c.emu.Messages()) >= 100 })
	const storm = 2 * time.Second
	stormStart := time.Now()
	c.emu.SetFaults(larkemu.Faults{RateLimitStorm: storm})
	<-done

	assertExactlyOnce(t, c, events)
	var throttled []larkemu.Call
	var after []larkemu.Call // calls that arrived after the first refusal was answered, during the storm
	calls := c.emu.Calls()
	for _, call := range calls {
		if call.Code == 99991400 {
			throttled = append(throttled, call)
		} else if call.Throttled() {
			t.Fatalf("a call was throttled by a limit: %+v", call)
		}
	}
	if len(throttled) == 0 {
		t.Fatal("the storm refused nothing")
	}
	first := throttled[0].Time
	for _, call := range calls {
		if call.API != larkemu.APITenantToken && call.Time.After(first.Add(250*time.Millisecond)) && call.Time.Before(stormStart.Add(storm)) {
			after = append(after, call)
		}
	}
	t.Logf("storm: %d calls refused (the ones in flight), %d calls during the rest of the storm, %d calls in all", len(throttled), len(after), len(calls))
	if len(after) != 0 {
		t.Fatalf("%d calls reached Lark after the reset was announced, during the storm: first %+v", len(after), after[0])
	}
	if len(throttled) > 20 {
		t.Fatalf("%d calls refused: the replicas did not stop", len(throttled))
	}
	var blocked float64
	for _, reg := range c.regs {
		blocked += max(0, testenv.MetricValue(t, reg, "larkway_action_ratelimit_throttled_total", "app_id", appA, "api", "im.message.reply", "scope", "app"))
	}
	if int(blocked) != len(throttled) {
		t.Fatalf("larkway_action_ratelimit_throttled_total = %v, want %d", blocked, len(throttled))
	}
}

// TestTokenInvalidationMidRun: Lark invalidates the tenant token while three
// replicas are replying; they recover with one token fetch for all.
func TestTokenInvalidationMidRun(t *testing.T) {
	// 5x, as the throughput tests: at 10x a scheduling stall on a loaded CI
	// machine outgrew the margin and Lark throttled a hot-chat reply.
	emuLimits := larkemu.LarkLimits().Compressed(5)
	c := newCluster(t, clusterOpts{replicas: 3, redis: true, emu: &emuLimits, cfg: Config{Limits: ratelimit.DefaultLimits().Compressed(5)}})
	events := hotChatLoad(c, 600, 8, "tk")
	done := make(chan struct{})
	go func() { defer close(done); runReplies(t, c, events, nil) }()
	testenv.Eventually(t, 30*time.Second, "no replies before the invalidation", func() bool { return len(c.emu.Messages()) >= 100 })
	if got := c.emu.TokenFetches(); got != 1 {
		t.Fatalf("%d token fetches before the invalidation, want 1", got)
	}
	c.emu.SetFaults(larkemu.Faults{InvalidateTokens: true})
	<-done
	assertExactlyOnce(t, c, events)
	rejected := 0
	for _, call := range c.emu.Calls() {
		if call.Code == 99991663 {
			rejected++
		}
	}
	t.Logf("token invalidation: %d calls rejected, %d token fetches in all", rejected, c.emu.TokenFetches())
	if rejected == 0 {
		t.Fatal("no call was rejected: the invalidation came too late")
	}
	if got := c.emu.TokenFetches(); got != 2 {
		t.Fatalf("%d token fetches, want 2 (one after the invalidation, for all replicas)", got)
	}
	if got := c.emu.Throttled(); got != 0 {
		t.Fatalf("%d calls throttled", got)
	}
}

// TestServerErrorStormOpensTheBreaker: Lark answers 503 to everything; the
// shared breaker opens after FailureThreshold failures, lets one probe
// through per OpenFor for all replicas, and closes once Lark recovers.
func TestServerErrorStormOpensTheBreaker(t *testing.T) {
	const openFor = 300 * time.Millisecond
	c := newCluster(t, clusterOpts{replicas: 3, redis: true, cfg: Config{
		Limits:  ratelimit.Limits{Disabled: true},
		Retry:   RetryPolicy{MaxAttempts: 1000, BaseDelay: 5 * time.Millisecond, MaxDelay: 20 * time.Millisecond},
		Breaker: breaker.Settings{FailureThreshold: 5, OpenFor: openFor, HalfOpenProbes: 1},
	}})
	c.emu.SetFaults(larkemu.Faults{ErrorRate: 1, ErrorStatus: 503})
	events := hotChatLoad(c, 30, 10, "br")
	done := make(chan struct{})
	go func() { defer close(done); runReplies(t, c, events, nil) }()

	breakerState := func(i int) breaker.State {
		return breaker.State(testenv.MetricValue(t, c.regs[i], "larkway_action_breaker_state", "app_id", appA, "endpoint", "im.message.reply"))
	}
	testenv.Eventually(t, 10*time.Second, "the breaker did not open", func() bool { return breakerState(0) == breaker.StateOpen })
	openedAt := time.Now()
	// While Lark fails, only probes get through: one per OpenFor, whichever
	// replica sends it. (Calls allowed before the breaker opened may still
	// land in its first moments.)
	probesSince := openedAt.Add(openFor / 2)
	var probes []time.Time
	testenv.Eventually(t, 10*time.Second, "fewer than 3 probes", func() bool {
		probes = probes[:0]
		for _, call := range c.emu.Calls() {
			if call.Time.After(probesSince) && call.API == larkemu.APIReply {
				probes = append(probes, call.Time)
			}
		}
		return len(probes) >= 3
	})
	for i := 1; i < len(probes); i++ {
		if gap := probes[i].Sub(probes[i-1]); gap < openFor*8/10 {
			t.Fatalf("calls %s apart while the breaker was open, want one probe per %s: %v", gap, openFor, probes)
		}
	}
	for i := range c.execs {
		if s := breakerState(i); s != breaker.StateOpen && s != breaker.StateHalfOpen {
			t.Fatalf("replica %d sees the breaker %v, want open or half-open", i, s)
		}
	}
	c.emu.SetFaults(larkemu.Faults{})
	recovered := time.Now()
	<-done
	took := time.Since(recovered)
	assertExactlyOnce(t, c, events)
	for i := range c.execs {
		if s := breakerState(i); s != breaker.StateClosed {
			t.Fatalf("replica %d sees the breaker %v after recovery, want closed", i, s)
		}
	}
	t.Logf("5xx storm: breaker opened; %d probes, one per %s; all replies done %s after Lark recovered", len(probes), openFor, took.Round(time.Millisecond))
	if took > 2*openFor+time.Second {
		t.Fatalf("the replies took %s to finish after recovery", took)
	}
}

// TestBusinessErrorsAreNotRetried: Lark's answer for a chat the bot left, a
// recalled message or bad content is final: one call, no failed action.
func TestBusinessErrorsAreNotRetried(t *testing.T) {
	failed := &MemoryFailedStore{}
	c := newCluster(t, clusterOpts{redis: true, emu: ptr(larkemu.LarkLimits()), failed: failed, cfg: Config{Retry: fastRetry()}})
	c.emu.SetBotInChat("oc_left", false)
	c.emu.RegisterInbound("om_left", "oc_left")
	recalled, err := c.execs[0].Execute(t.Context(), Request{Plugin: "p", Allowed: allAllowed(), Event: messageEvent("om_src", "oc_biz"),
		Actions: []*pluginv1.Action{{Kind: &pluginv1.Action_Send{Send: &pluginv1.SendMessage{ReceiveIdType: "chat_id", ReceiveId: "oc_biz",
			MsgType: "text", ContentJson: `{"text":"to recall"}`}}}}})
	if err != nil || len(recalled) != 0 {
		t.Fatal(recalled, err)
	}
	toRecall := c.emu.Messages()[0].MessageID
	if _, err := c.execs[0].Execute(t.Context(), Request{Plugin: "p", Allowed: allAllowed(), Event: messageEvent("om_src2", "oc_biz"),
		Actions: []*pluginv1.Action{{Kind: &pluginv1.Action_RawCall{RawCall: &pluginv1.RawCall{Method: "DELETE", Path: "/open-apis/im/v1/messages/" + toRecall}}}}}); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		ev     *pluginv1.Event
		action *pluginv1.Action
		code   string
	}{
		"bot not in chat":   {messageEvent("om_left", "oc_left"), reply("hi"), "230002"},
		"recalled message":  {messageEvent(toRecall, "oc_biz"), reply("hi"), "230011"},
		"invalid receiver":  {event(), &pluginv1.Action{Kind: &pluginv1.Action_Send{Send: &pluginv1.SendMessage{ReceiveIdType: "open_id", ReceiveId: "oc_not_a_user", MsgType: "text", ContentJson: `{"text":"x"}`}}}, "230001"},
		"text without text": {event(), &pluginv1.Action{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MsgType: "text", ContentJson: `{"title":"x"}`}}}, "230001"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := len(c.emu.Calls())
			refused, err := c.execs[0].Execute(t.Context(), Request{Plugin: "p", Allowed: allAllowed(), Event: tc.ev, Actions: []*pluginv1.Action{tc.action}})
			if err != nil || len(refused) != 1 || !strings.Contains(refused[0].GetReason(), tc.code) {
				t.Fatalf("refused %v, err %v, want a refusal with %s", refused, err, tc.code)
			}
			n := 0
			for _, call := range c.emu.Calls()[before:] {
				if call.API != larkemu.APITenantToken {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("%d calls to Lark, want 1 (no retry)", n)
			}
		})
	}
	if dls, _ := failed.List(t.Context(), 0); len(dls) != 0 {
		t.Fatalf("business errors kept as failed actions: %+v", dls)
	}
}

func allAllowed() []pluginv1.ActionKind { return allowAll }

// TestFailedActionAndFallback: an action whose retries run out on the
// event's final delivery is kept in the Redis failed actions with its error;
// the dispatcher's fallback reply then reaches the user, once however often
// it is sent.
func TestFailedActionAndFallback(t *testing.T) {
	c := newCluster(t, clusterOpts{redis: true, cfg: Config{Limits: ratelimit.Limits{Disabled: true}, Retry: fastRetry(),
		Breaker: breaker.Settings{FailureThreshold: 100}}})
	c.emu.SetFaults(larkemu.Faults{ErrorRate: 1, ErrorStatus: 502})
	ev := messageEvent("om_dl", "oc_dl")
	refused, err := c.execs[0].Execute(t.Context(), Request{Plugin: "p", Allowed: allowReply, Event: ev, Actions: []*pluginv1.Action{reply("lost")}, Attempts: 5, FinalAttempt: true})
	if err != nil || len(refused) != 1 || !strings.Contains(refused[0].GetReason(), "failed after 3 attempts") {
		t.Fatalf("refused %v, err %v", refused, err)
	}
	dls, err := NewRedisFailedStore(c.rdb, c.prefix+"action:"+FailedKey, 0).List(t.Context(), 10)
	if err != nil || len(dls) != 1 || dls[0].Kind != "reply" || dls[0].Attempts != 3 || !strings.Contains(dls[0].Error, "502") || dls[0].EventID != "ev-om_dl" {
		t.Fatalf("failed actions %+v, %v", dls, err)
	}
	if got := testenv.MetricValue(t, c.regs[0], "larkway_action_failed_total", "app_id", appA, "plugin", "p", "kind", "reply"); got != 1 {
		t.Fatalf("larkway_action_failed_total = %v", got)
	}
	if got := testenv.MetricValue(t, c.regs[0], "larkway_action_failed_stored"); got != 1 {
		t.Fatalf("larkway_action_failed_stored = %v", got)
	}

	c.emu.SetFaults(larkemu.Faults{})
	for range 2 { // the dispatcher may send it again on a redelivery
		if err := c.execs[0].SendFallback(t.Context(), "p", ev, "Sorry, something went wrong."); err != nil {
			t.Fatalf("SendFallback: %v", err)
		}
	}
	msgs := c.emu.Messages()
	if len(msgs) != 1 || msgs[0].ParentID != "om_dl" || msgs[0].Content != `{"text":"Sorry, something went wrong."}` {
		t.Fatalf("messages %+v", msgs)
	}
	// Without a message, the fallback goes to the chat; without either it fails.
	chatOnly := &pluginv1.Event{EventId: "ev2", AppId: appA, DedupKey: "ev2", ChatId: "oc_dl"}
	if err := c.execs[0].SendFallback(t.Context(), "p", chatOnly, "Sorry."); err != nil {
		t.Fatal(err)
	}
	if m := c.emu.Messages(); len(m) != 2 || m[1].ChatID != "oc_dl" || m[1].ParentID != "" {
		t.Fatalf("messages %+v", m)
	}
	if err := c.execs[0].SendFallback(t.Context(), "p", &pluginv1.Event{AppId: appA}, "Sorry."); err == nil {
		t.Fatal("a fallback with no target succeeded")
	}
	if err := c.execs[0].SendFallback(t.Context(), "p", ev, ""); err != nil {
		t.Fatalf("empty fallback text: %v", err)
	}
}

// TestReplayFailed: a failed reply, replayed once Lark is back, is posted
// once and leaves the store; replaying it again (as if the first call had in
// fact reached Lark) posts nothing more, thanks to the same uuid.
func TestReplayFailed(t *testing.T) {
	c := newCluster(t, clusterOpts{redis: true, replicas: 2, cfg: Config{Limits: ratelimit.Limits{Disabled: true}, Retry: fastRetry(),
		Breaker: breaker.Settings{FailureThreshold: 100}}})
	c.emu.SetFaults(larkemu.Faults{ErrorRate: 1, ErrorStatus: 502})
	ev := messageEvent("om_rp", "oc_rp")
	if _, err := c.execs[0].Execute(t.Context(), Request{Plugin: "p", Allowed: allowReply, Event: ev, Actions: []*pluginv1.Action{reply("late")}, FinalAttempt: true}); err != nil {
		t.Fatal(err)
	}
	// Another replica sees the same store.
	store := c.execs[1].FailedActions()
	list, err := store.List(t.Context(), 0)
	if err != nil || len(list) != 1 {
		t.Fatalf("failed actions %+v, %v", list, err)
	}
	f := list[0]
	if f.UUID != IdempotencyKey(appA, "om_rp", "p", 0) {
		t.Fatalf("stored uuid %q is not the one the calls carried", f.UUID)
	}
	if err := c.execs[1].ReplayFailed(t.Context(), f.ID); err == nil {
		t.Fatal("replay succeeded while Lark fails")
	}
	if n, _ := store.Count(t.Context()); n != 1 {
		t.Fatalf("a failed replay removed the entry: %d left", n)
	}
	c.emu.SetFaults(larkemu.Faults{})
	if err := c.execs[1].ReplayFailed(t.Context(), f.ID); err != nil {
		t.Fatalf("replay: %v", err)
	}
	msgs := c.emu.Messages()
	if len(msgs) != 1 || msgs[0].ParentID != "om_rp" || !strings.Contains(msgs[0].Content, "late") {
		t.Fatalf("messages %+v", msgs)
	}
	if n, _ := store.Count(t.Context()); n != 0 {
		t.Fatalf("%d failed actions left after the replay", n)
	}
	if err := c.execs[1].ReplayFailed(t.Context(), f.ID); !errors.Is(err, ErrFailedNotFound) {
		t.Fatalf("second replay of a removed entry = %v, want ErrFailedNotFound", err)
	}
	// The same entry again (the original "failure" was a lost answer):
	// Lark sees the same uuid and posts nothing new.
	if err := store.Put(t.Context(), f); err != nil {
		t.Fatal(err)
	}
	again, _ := store.List(t.Context(), 0)
	if err := c.execs[0].ReplayFailed(t.Context(), again[0].ID); err != nil {
		t.Fatalf("replay: %v", err)
	}
	if msgs := c.emu.Messages(); len(msgs) != 1 {
		t.Fatalf("replaying a delivered action posted again: %+v", msgs)
	}
	if got := testenv.MetricValue(t, c.regs[1], "larkway_action_failed_replays_total", "outcome", "failed"); got != 1 {
		t.Fatalf("failed replays = %v", got)
	}
}

// TestFailedStoreReadsOlderEntries: entries an older replica pushed (no id,
// uuid or event target) are listed, shown, replayed with the uuid recomputed
// and deleted like new ones.
func TestFailedStoreReadsOlderEntries(t *testing.T) {
	c := newCluster(t, clusterOpts{redis: true, cfg: Config{Limits: ratelimit.Limits{Disabled: true}, Retry: fastRetry()}})
	key := c.prefix + "action:" + FailedKey
	action, _ := protojson.Marshal(&pluginv1.Action{Kind: &pluginv1.Action_Send{Send: &pluginv1.SendMessage{
		ReceiveIdType: "chat_id", ReceiveId: "oc_old", MsgType: "text", ContentJson: `{"text":"old"}`}}})
	old := fmt.Sprintf(`{"plugin":"p","app_id":%q,"event_id":"ev_old","dedup_key":"dk_old","chat_id":"oc_old","index":0,"kind":"send",`+
		`"action":%s,"error":"HTTP 502","attempts":3,"delivery_attempt":5,"at":"2025-01-02T03:04:05Z"}`, appA, action)
	if err := c.rdb.LPush(t.Context(), key, old).Err(); err != nil {
		t.Fatal(err)
	}
	store := c.execs[0].FailedActions()
	list, err := store.List(t.Context(), 0)
	if err != nil || len(list) != 1 || list[0].ID == "" || list[0].EventID != "ev_old" || list[0].UUID != "" {
		t.Fatalf("list %+v, %v", list, err)
	}
	got, err := store.Get(t.Context(), list[0].ID)
	if err != nil || got.Kind != "send" {
		t.Fatalf("get %+v, %v", got, err)
	}
	if err := c.execs[0].ReplayFailed(t.Context(), got.ID); err != nil {
		t.Fatalf("replay: %v", err)
	}
	msgs := c.emu.Messages()
	if len(msgs) != 1 || msgs[0].ChatID != "oc_old" {
		t.Fatalf("messages %+v", msgs)
	}
	if n, _ := c.rdb.LLen(t.Context(), key).Result(); n != 0 {
		t.Fatalf("%d entries left", n)
	}
}
