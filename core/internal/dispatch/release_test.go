package dispatch

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/shadow"
	"github.com/larkway/larkway/core/internal/testenv"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

func TestSplit(t *testing.T) {
	chats := make([]string, 10000)
	for i := range chats {
		chats[i] = fmt.Sprintf("oc_%d", i)
	}
	count := func(s Split) int {
		n := 0
		for _, c := range chats {
			if s.Has(c) {
				n++
			}
		}
		return n
	}
	for _, tc := range []struct {
		name     string
		split    Split
		min, max int
	}{
		{"none", Split{}, 0, 0},
		{"5 percent", Split{Percent: 5}, 400, 600},
		{"10 percent", Split{Percent: 10}, 850, 1150},
		{"all", Split{Percent: 100}, 10000, 10000},
		{"named chats only", Split{Chats: []string{"oc_1", "oc_2", "oc_x"}}, 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n := count(tc.split); n < tc.min || n > tc.max {
				t.Fatalf("%d of %d chats selected, want %d..%d", n, len(chats), tc.min, tc.max)
			}
		})
	}
	// Growing the percentage only adds chats.
	for _, c := range chats {
		for p := 1.0; p < 100; p++ {
			if (Split{Percent: p}).Has(c) && !(Split{Percent: p + 1}).Has(c) {
				t.Fatalf("%s is in the %v%% slice but not in the %v%% one", c, p, p+1)
			}
		}
	}
	// The bucket is FNV-1a of the chat id (3560 computed independently): the same on every replica and
	// in every release (a change here moves chats between versions).
	if b := ChatBucket("oc_abc"); b != ChatBucket("oc_abc") || b != 3560 {
		t.Fatalf("ChatBucket(oc_abc) = %d", b)
	}
}

// candidate attaches a second fake plugin, version 2, as the candidate.
func (h *harness) candidate(t *testing.T, mode Mode, split Split) (*fakePlugin, *Session) {
	t.Helper()
	m := manifest()
	m.Version = "2"
	fp := newFakePlugin(t, m)
	s, prev, err := h.route.AttachCandidate(context.Background(), fp, mode, split)
	if err != nil || prev != nil {
		t.Fatalf("attach candidate: %v (prev %v)", err, prev)
	}
	t.Cleanup(s.Close)
	return fp, s
}

func (f *fakePlugin) texts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

// A canary gets exactly its chats, each in order; once detached, its chats
// go back to the stable version.
func TestCanaryGetsItsChats(t *testing.T) {
	h := start(t, manifest(), 5*time.Second)
	cand, sess := h.candidate(t, ModeCanary, Split{Chats: []string{"oc_b"}})
	for i := range 10 {
		h.publish(t, "oc_a", fmt.Sprintf("a%d", i))
		h.publish(t, "oc_b", fmt.Sprintf("b%d", i))
	}
	testenv.Eventually(t, 10*time.Second, "not every event handled", func() bool { return len(h.exec.texts("")) == 20 })
	for i, s := range cand.texts() {
		if want := fmt.Sprintf("b%d", i); s != want {
			t.Fatalf("canary's delivery %d is %s, want %s", i, s, want)
		}
	}
	for _, s := range h.plugin.texts() {
		if s[0] != 'a' {
			t.Fatalf("stable got %s", s)
		}
	}
	if st := sess.Stats(); st.Deliveries != 10 || st.Errors != 0 {
		t.Fatalf("canary stats %+v", st)
	}
	if v := testenv.MetricValue(t, h.reg, "larkway_dispatch_version_results_total",
		"plugin", "fake", "version", "2", "role", "canary", "outcome", "done"); v != 10 {
		t.Fatalf("canary series %v", v)
	}
	if h.route.DetachCandidate() != sess {
		t.Fatal("detached another candidate")
	}
	h.publish(t, "oc_b", "after")
	testenv.Eventually(t, 10*time.Second, "the chat did not return to stable", func() bool {
		got := h.plugin.texts()
		return len(got) > 0 && got[len(got)-1] == "after"
	})
}

// A canary failing its deliveries is rolled back with nothing lost: what
// it failed is redelivered to the stable version.
func TestCanaryRollbackRedeliversToStable(t *testing.T) {
	h := start(t, manifest(), 5*time.Second)
	cand, sess := h.candidate(t, ModeCanary, Split{Percent: 100})
	cand.mu.Lock()
	cand.failAll = true
	cand.mu.Unlock()
	h.publish(t, "oc_a", "x")
	testenv.Eventually(t, 10*time.Second, "the canary never failed", func() bool { return sess.Stats().Errors > 0 })
	h.route.DetachCandidate()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sess.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the failed event never reached stable", func() bool { return len(h.exec.texts("")) == 1 })
	if st := sess.Stats(); st.Retries == 0 || st.Retries != st.Errors || st.DeadLetters != 0 {
		t.Fatalf("canary stats %+v", st)
	}
}

// A promoted canary serves every chat.
func TestCanaryPromote(t *testing.T) {
	h := start(t, manifest(), 5*time.Second)
	cand, sess := h.candidate(t, ModeCanary, Split{Chats: []string{"oc_b"}})
	prev, ok := h.route.Promote()
	if !ok || prev != h.session || h.route.Current() != sess {
		t.Fatalf("promote: %v %v", prev, ok)
	}
	if c, _, _ := h.route.Candidate(); c != nil {
		t.Fatal("still a candidate after the promotion")
	}
	h.publish(t, "oc_a", "a")
	testenv.Eventually(t, 10*time.Second, "the promoted version did not get the other chats", func() bool { return len(cand.texts()) == 1 })
	if _, ok := h.route.Promote(); ok {
		t.Fatal("promoted without a canary")
	}
}

// A shadow gets a copy of each delivery after the stable version: its
// actions are recorded, checked against its manifest, never executed.
func TestShadowRecordsCopies(t *testing.T) {
	shadows := shadow.NewMemory(0)
	h := startWith(t, manifest(), 5*time.Second, func(c *Config) { c.Shadows = shadows })
	cand, _ := h.candidate(t, ModeShadow, Split{Percent: 100})
	h.publish(t, "oc_a", "hello")
	h.publish(t, "oc_a", "forbidden")
	testenv.Eventually(t, 10*time.Second, "the shadow did not record both", func() bool {
		s, _ := shadows.Summary(context.Background(), "fake")
		return s.Events == 2
	})
	if got := h.exec.texts(""); len(got) != 2 {
		t.Fatalf("executed %v: only the stable version's actions may run", got)
	}
	if got := cand.texts(); len(got) != 2 {
		t.Fatalf("the shadow saw %v", got)
	}
	recs, _ := shadows.List(context.Background(), "fake", 0)
	byText := map[string]shadow.Record{}
	for _, r := range recs {
		if len(r.Candidate.Actions) == 1 && len(r.Candidate.Refused) == 1 {
			byText["forbidden"] = r
		} else {
			byText["hello"] = r
		}
	}
	if r := byText["hello"]; r.Differs || r.Source != "live" || r.Stable.Version != "1" || r.Candidate.Version != "2" || r.Candidate.Outcome != "done" {
		t.Fatalf("hello: %+v", r)
	}
	// The stable version's forbidden action was refused by the executor
	// (not performed); the shadow's by the manifest check.
	if r := byText["forbidden"]; r.Candidate.Refused[0] != "0: ACTION_KIND_RAW_CALL is not in the plugin manifest's allowed_actions" {
		t.Fatalf("forbidden: %+v", r)
	}
}

func TestDifferences(t *testing.T) {
	reply := func(text string) *pluginv1.Action {
		return &pluginv1.Action{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MsgType: "text", ContentJson: text}}}
	}
	for _, tc := range []struct {
		name         string
		sOut, cOut   string
		stable, cand []*pluginv1.Action
		want         []string
	}{
		{"same", "done", "done", []*pluginv1.Action{reply("a")}, []*pluginv1.Action{reply("a")}, nil},
		{"action differs", "done", "done", []*pluginv1.Action{reply("a")}, []*pluginv1.Action{reply("b")}, []string{"action 0 (reply) differs"}},
		{"more actions", "done", "done", []*pluginv1.Action{reply("a")}, []*pluginv1.Action{reply("a"), reply("b")}, []string{"actions: stable 1, candidate 2"}},
		{"outcome differs", "done", "retry", []*pluginv1.Action{reply("a")}, nil,
			[]string{"outcome: stable done, candidate retry", "actions: stable 1, candidate 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := differences(tc.sOut, tc.cOut, tc.stable, tc.cand)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// A replay hands stored events of the selected chats to the shadow and to
// a baseline instance, each chat's in order; nothing is executed or
// settled, and every pair is recorded as a replay.
func TestReplayToShadow(t *testing.T) {
	shadows := shadow.NewMemory(0)
	h := startWith(t, manifest(), 5*time.Second, func(c *Config) { c.Shadows = shadows })
	baseline := newFakePlugin(t, manifest())
	history := func(ctx context.Context, fn func(bus.Message) error) error {
		for i := range 50 {
			chat := fmt.Sprintf("oc_%d", i%5)
			ev := &pluginv1.Event{EventId: fmt.Sprintf("rev%d", i), EventType: "im.message.receive_v1", AppId: "cli_t", ChatId: chat,
				Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: fmt.Sprintf("om_r%d", i), ChatId: chat, Text: fmt.Sprintf("%s-%02d", chat, i/5)}}}
			msg, err := envelope.Encode(ev)
			if err != nil {
				return err
			}
			if err := fn(msg); err != nil {
				return err
			}
		}
		return nil
	}
	if _, err := h.route.ReplayToShadow(context.Background(), baseline, Split{Percent: 100}, history); !errors.Is(err, ErrNoShadow) {
		t.Fatalf("replay without a shadow: %v", err)
	}
	cand, _ := h.candidate(t, ModeShadow, Split{Percent: 100})
	st, err := h.route.ReplayToShadow(context.Background(), baseline, Split{Percent: 100}, history)
	if err != nil || st != (ReplayStats{Events: 50, Replayed: 50}) {
		t.Fatalf("replay: %+v %v", st, err)
	}
	if got := h.exec.texts(""); len(got) != 0 {
		t.Fatalf("a replay executed %v", got)
	}
	if got := h.plugin.texts(); len(got) != 0 {
		t.Fatalf("the stable instance got %v", got)
	}
	for name, p := range map[string]*fakePlugin{"shadow": cand, "baseline": baseline} {
		next := map[string]int{}
		for _, s := range p.texts() {
			chat, n := s[:4], 0
			_, _ = fmt.Sscanf(s[5:], "%d", &n)
			if n != next[chat] {
				t.Fatalf("%s: %s came when %d was due", name, s, next[chat])
			}
			next[chat]++
		}
		if len(p.texts()) != 50 {
			t.Fatalf("%s saw %d", name, len(p.texts()))
		}
	}
	recs, _ := shadows.List(context.Background(), "fake", 0)
	if len(recs) != 50 || recs[0].Source != "replay" || recs[0].Differs {
		t.Fatalf("records %d, first %+v", len(recs), recs[0])
	}
	st, err = h.route.ReplayToShadow(context.Background(), baseline, Split{Chats: []string{"oc_0"}}, history)
	if err != nil || st.Events != 50 || st.Replayed != 10 {
		t.Fatalf("replay of one chat: %+v %v", st, err)
	}
}
