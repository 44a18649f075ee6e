package app_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/pluginhost"
	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
)

// releaseFixture is two replicas on Pulsar and Redis serving echo 1.0.0,
// with the echovariant test plugin (echo 2.0.0, replying "echo2: …") in
// the plugin directory.
type releaseFixture struct {
	appID    string
	emu      *larkemu.Emulator
	cores    []*runningCore
	variant  string
	sum      string
	posted   []string // message ids
	chatOfID map[string]string
}

func newReleaseFixture(t *testing.T, name string, replicas int) *releaseFixture {
	t.Helper()
	f := &releaseFixture{appID: uniqueApp(t, name), chatOfID: map[string]string{}}
	var emuAddr string
	f.emu, emuAddr = emulator(t, f.appID)
	dir := t.TempDir()
	echo := testenv.BuildPlugin(t, "./plugins/echo", dir)
	f.variant = testenv.BuildPlugin(t, "./core/internal/app/testdata/echovariant", dir)
	f.sum, _ = pluginhost.FileSHA256(f.variant)
	plugins := fmt.Sprintf("  - {name: echo, path: %s}", echo)
	for i := range replicas {
		f.cores = append(f.cores, runCore(t, clusterYAML(t, f.appID, emuAddr, f.appID+":", fmt.Sprintf("%s-r%d", name, i), plugins)))
	}
	return f
}

// post sends one message event per chat, round-robin over the replicas.
func (f *releaseFixture) post(t *testing.T, round int, chats []string) {
	t.Helper()
	for i, chat := range chats {
		id := fmt.Sprintf("om_%s_%d", strings.TrimPrefix(chat, "oc_"), round)
		f.chatOfID[id] = chat
		f.posted = append(f.posted, id)
		if code, err := f.cores[(i+round)%len(f.cores)].post(messageEvent(f.appID, "ev_"+id, id, chat, id)); err != nil || code != 200 {
			t.Fatalf("post: %d %v", code, err)
		}
	}
}

// answered waits until every posted event has a reply and checks that each
// has exactly one; it returns the replying version by message id ("1" for
// echo's "echo: ", "2" for the variant's "echo2: ").
func (f *releaseFixture) answered(t *testing.T) map[string]string {
	t.Helper()
	testenv.Eventually(t, 90*time.Second, fmt.Sprintf("not every event answered (%d posted)", len(f.posted)), func() bool {
		return len(repliesByParent(f.emu)) >= len(f.posted)
	})
	replies := repliesByParent(f.emu)
	for _, id := range f.posted {
		if replies[id] != 1 {
			t.Errorf("%s answered %d times", id, replies[id])
		}
	}
	if len(replies) != len(f.posted) {
		t.Errorf("%d replies for %d events", len(replies), len(f.posted))
	}
	by := map[string]string{}
	for _, m := range f.emu.Messages() {
		var c struct{ Text string }
		_ = json.Unmarshal([]byte(m.Content), &c)
		switch {
		case strings.HasPrefix(c.Text, "echo2: "):
			by[m.ParentID] = "2"
		case strings.HasPrefix(c.Text, "echo: "):
			by[m.ParentID] = "1"
		default:
			t.Fatalf("unexpected reply %q", c.Text)
		}
	}
	return by
}

// release reads GET /v1/plugins/echo/release.
// canarySlice waits until a 10 % canary runs on both replicas, posts two
// rounds over 200 chats and checks each event was answered by the version
// its chat's hash picks (version "2" is the candidate; who names a version
// in errors). It returns the chats in the slice.
func (f *releaseFixture) canarySlice(t *testing.T, prefix string, who func(v string) string) map[string]bool {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, "the canary did not run on both replicas", func() bool {
		reps, _ := f.release(t)["replicas"].(map[string]any)
		return len(reps) == 2
	})
	chats := chatsN(prefix, 200)
	for round := range 2 {
		f.post(t, round, chats)
	}
	by := f.answered(t)
	want := map[string]bool{}
	for _, c := range chats {
		if (dispatch.Split{Percent: 10}).Has(c) {
			want[c] = true
		}
	}
	if len(want) < 5 || len(want) > 40 {
		t.Fatalf("the hash put %d of 200 chats in a 10 %% slice", len(want))
	}
	for id, v := range by {
		if chat := f.chatOfID[id]; (v == "2") != want[chat] {
			t.Errorf("%s (chat %s, in slice %v) answered by %s", id, chat, want[chat], who(v))
		}
	}
	return want
}

func (f *releaseFixture) release(t *testing.T) map[string]any {
	t.Helper()
	code, out := f.cores[0].adminCall(t, http.MethodGet, "/v1/plugins/echo/release", nil)
	if code != http.StatusOK {
		t.Fatalf("release view: %d %v", code, out)
	}
	return out
}

func chatsN(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("oc_%s%03d", prefix, i)
	}
	return out
}

// A 10 % canary over 200 chats on two replicas: exactly the chats the hash
// of the chat id selects get the new version, whichever replica handles
// them, and every event is answered exactly once in total.
func TestCanarySameChatsOnEveryReplica(t *testing.T) {
	t.Parallel()
	f := newReleaseFixture(t, "canary", 2)
	code, out := f.cores[0].adminCall(t, http.MethodPost, "/v1/plugins/echo/canary", map[string]any{"path": f.variant, "sha256": f.sum, "percent": 10})
	if code != http.StatusOK {
		t.Fatalf("canary: %d %v", code, out)
	}
	want := f.canarySlice(t, "c", func(v string) string { return "version " + v })
	// Both replicas served canary chats: each picked the same ones.
	testenv.Eventually(t, 10*time.Second, "not both replicas served canary chats", func() bool {
		reps, _ := f.release(t)["replicas"].(map[string]any)
		n := 0
		for _, r := range reps {
			st, _ := r.(map[string]any)["stats"].(map[string]any)
			if d, _ := st["deliveries"].(float64); d > 0 {
				n++
			}
		}
		return n == 2
	})
	// The per-version series count both versions.
	if v := counter(t, f.cores[0].reg, "larkway_dispatch_version_results_total", map[string]string{"plugin": "echo", "role": "canary", "version": "2.0.0", "outcome": "done"}) +
		counter(t, f.cores[1].reg, "larkway_dispatch_version_results_total", map[string]string{"plugin": "echo", "role": "canary", "version": "2.0.0", "outcome": "done"}); v != float64(2*len(want)) {
		t.Errorf("canary done deliveries %v, want %d", v, 2*len(want))
	}
	// plugin list shows it.
	if rels := f.cores[1].releases(t); len(rels) != 2 || rels["canary-r0"] != "canary" || rels["canary-r1"] != "canary" {
		t.Errorf("plugin list shows the releases %v", rels)
	}
}

// A canary failing 30 % of its deliveries breaches its error budget and is
// rolled back on every replica by itself; the events it failed are
// redelivered to the stable version: each is answered exactly once, none
// dead-lettered.
func TestCanaryBreachRolledBack(t *testing.T) {
	t.Parallel()
	f := newReleaseFixture(t, "breach", 2)
	code, out := f.cores[0].adminCall(t, http.MethodPost, "/v1/plugins/echo/canary", map[string]any{"path": f.variant, "sha256": f.sum,
		"percent": 50, "env": []string{"ECHO_FAIL_PERCENT=30"}, "max_error_rate": 0.1, "promote_after": "100000"})
	if code != http.StatusOK {
		t.Fatalf("canary: %d %v", code, out)
	}
	chats := chatsN("b", 60)
	for round := range 4 {
		f.post(t, round, chats)
	}
	testenv.Eventually(t, 60*time.Second, "the canary was not rolled back", func() bool {
		last, _ := f.release(t)["last"].(map[string]any)
		return last["result"] == "rolled_back"
	})
	// After the rollback every chat is on the stable version.
	for round := 4; round < 6; round++ {
		f.post(t, round, chats)
	}
	by := f.answered(t)
	testenv.Eventually(t, 10*time.Second, "a replica still runs the canary", func() bool {
		return len(f.cores[0].releases(t)) == 0
	})
	for id, v := range by {
		if strings.HasSuffix(id, "_5") && v != "1" {
			t.Errorf("%s, after the rollback, answered by version %s", id, v)
		}
	}
	_, dl := f.cores[0].adminCall(t, http.MethodGet, "/v1/dlq/echo", nil)
	if dl["total"] != float64(0) {
		t.Errorf("dead letters after the rollback: %v", dl)
	}
	last, _ := f.release(t)["last"].(map[string]any)
	t.Logf("rolled back: %v", last["reason"])
}

// A healthy canary is promoted on every replica once it served its quota;
// from then on every chat gets the new version.
func TestCanaryPromotedAfterQuota(t *testing.T) {
	t.Parallel()
	f := newReleaseFixture(t, "promote", 2)
	code, out := f.cores[0].adminCall(t, http.MethodPost, "/v1/plugins/echo/canary", map[string]any{"path": f.variant, "sha256": f.sum,
		"percent": 50, "promote_after": "30", "max_error_rate": 0.01})
	if code != http.StatusOK {
		t.Fatalf("canary: %d %v", code, out)
	}
	chats := chatsN("p", 40)
	for round := 0; ; round++ {
		f.post(t, round, chats)
		last, _ := f.release(t)["last"].(map[string]any)
		if last["result"] == "promoted" {
			break
		}
		if round > 30 {
			t.Fatalf("not promoted: %v", f.release(t))
		}
		f.answered(t) // let the deliveries land before judging again
	}
	testenv.Eventually(t, 30*time.Second, "not every replica runs the promoted version", func() bool {
		paths := f.cores[0].pluginPaths(t, "echo")
		return len(paths) == 2 && paths["promote-r0"] == f.variant && paths["promote-r1"] == f.variant
	})
	f.answered(t)
	before := len(f.posted)
	f.post(t, 1000, chats)
	by := f.answered(t)
	for _, id := range f.posted[before:] {
		if by[id] != "2" {
			t.Errorf("%s, after the promotion, answered by version %s", id, by[id])
		}
	}
}

// releases maps replica id → the mode of echo's release there, per the
// admin API's plugin list.
func (c *runningCore) releases(t *testing.T) map[string]string {
	t.Helper()
	_, list := c.adminCall(t, http.MethodGet, "/v1/plugins", nil)
	out := map[string]string{}
	ps, _ := list["plugins"].([]any)
	for _, p := range ps {
		pm, _ := p.(map[string]any)
		if pm["name"] != "echo" {
			continue
		}
		reps, _ := pm["replicas"].(map[string]any)
		for id, r := range reps {
			if rel, ok := r.(map[string]any)["release"].(map[string]any); ok {
				out[id], _ = rel["mode"].(string)
			}
		}
	}
	return out
}

// A shadow of a modified echo gets a copy of every delivery: its replies
// never reach Lark (the emulator sees only the stable version's, while the
// records count the shadow's), and the report pairs each event's stable
// and shadow actions and marks the difference.
func TestShadowRecordsNeverExecutes(t *testing.T) {
	t.Parallel()
	f := newReleaseFixture(t, "shadow", 1)
	code, out := f.cores[0].adminCall(t, http.MethodPost, "/v1/plugins/echo/shadow", map[string]any{"path": f.variant, "sha256": f.sum})
	if code != http.StatusOK {
		t.Fatalf("shadow: %d %v", code, out)
	}
	chats := chatsN("s", 10)
	for round := range 5 {
		f.post(t, round, chats)
	}
	var report map[string]any
	testenv.Eventually(t, 60*time.Second, "the shadow did not record every event", func() bool {
		_, report = f.cores[0].adminCall(t, http.MethodGet, "/v1/plugins/echo/shadow/report?limit=1000", nil)
		sum, _ := report["summary"].(map[string]any)
		return sum["events"] == float64(len(f.posted))
	})
	for id, v := range f.answered(t) {
		if v != "1" {
			t.Errorf("%s answered by version %s: a shadow's action reached Lark", id, v)
		}
	}
	if n := len(f.emu.Messages()); n != len(f.posted) {
		t.Errorf("the emulator got %d messages for %d events", n, len(f.posted))
	}
	sum, _ := report["summary"].(map[string]any)
	if sum["differ"] != float64(len(f.posted)) || sum["candidate_actions"] != float64(len(f.posted)) || sum["candidate_refused"] != float64(0) {
		t.Errorf("summary %v", sum)
	}
	recs, _ := report["records"].([]any)
	if len(recs) != len(f.posted) {
		t.Fatalf("%d records", len(recs))
	}
	for _, r := range recs {
		rec, _ := r.(map[string]any)
		st, _ := rec["stable"].(map[string]any)
		cand, _ := rec["candidate"].(map[string]any)
		diffs, _ := rec["differences"].([]any)
		sa, _ := json.Marshal(st["actions"])
		ca, _ := json.Marshal(cand["actions"])
		if rec["differs"] != true || len(diffs) != 1 || diffs[0] != "action 0 (reply) differs" ||
			st["version"] != "1.0.0" || cand["version"] != "2.0.0" || cand["outcome"] != "done" ||
			!strings.Contains(string(sa), "echo: ") || !strings.Contains(string(ca), "echo2: ") {
			t.Fatalf("record %v", rec)
		}
	}
	if v := counter(t, f.cores[0].reg, "larkway_shadow_actions_total", map[string]string{"plugin": "echo", "verdict": "allowed"}); v != float64(len(f.posted)) {
		t.Errorf("shadow actions counted %v", v)
	}
	// Stopping it leaves the stable version alone.
	if code, out := f.cores[0].adminCall(t, http.MethodPost, "/v1/plugins/echo/abort", nil); code != http.StatusOK {
		t.Fatalf("abort: %d %v", code, out)
	}
	if rels := f.cores[0].releases(t); len(rels) != 0 {
		t.Fatalf("releases after abort: %v", rels)
	}
}

// 10 000 events stored by the bus (and answered by echo when they came)
// are replayed into a shadow of a modified echo: the replay completes,
// every event is recorded with its difference, and neither the shadow nor
// the stable version's baseline sends anything to Lark. On the embedded
// bus (its log; records in memory) and on Pulsar (a reader; records in
// Redis). The Pulsar topic has no retention policy here: the test reads
// back within minutes of publishing, long before the broker trims a
// consumed ledger (it rolls ledgers over after 10 minutes at the
// earliest).
func TestReplayHistoryIntoShadow(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"embedded", "pulsar"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			replayHistoryIntoShadow(t, kind)
		})
	}
}

func replayHistoryIntoShadow(t *testing.T, kind string) {
	const events = 10000
	appID := uniqueApp(t, "replay"+kind)
	emu, emuAddr := emulator(t, appID)
	dir := t.TempDir()
	echo := testenv.BuildPlugin(t, "./plugins/echo", dir)
	variant := testenv.BuildPlugin(t, "./core/internal/app/testdata/echovariant", dir)
	sum, _ := pluginhost.FileSHA256(variant)
	stores := fmt.Sprintf("bus: {kind: embedded, embedded: {dir: %q}}", filepath.Join(t.TempDir(), "bus"))
	if kind == "pulsar" {
		stores = fmt.Sprintf("bus: {kind: pulsar, pulsar: {url: %q}}\nredis: {addr: %q, key_prefix: %q}", testenv.PulsarURL(t), testenv.RedisAddr(t), appID+":")
	}
	c := runCore(t, fmt.Sprintf(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
%s
apps:
  - {id: %s, secret: secret, verification_token: vt, base_url: "http://%s"}
plugins:
  - {name: echo, path: %s}
admin: {listen: 127.0.0.1:0, token: %s}
dispatch: {retry_backoff: 100ms}
actions: {rate_limits: {disabled: true}}
`, stores, appID, emuAddr, echo, testAdminToken))
	from := time.Now().Add(-time.Second)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range events {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			id := fmt.Sprintf("om_r_%d", i)
			if code, err := c.post(messageEvent(appID, "ev_"+id, id, fmt.Sprintf("oc_r%d", i%100), id)); err != nil || code != 200 {
				t.Errorf("post: %d %v", code, err)
			}
		}()
	}
	wg.Wait()
	testenv.Eventually(t, 180*time.Second, "echo did not answer every event", func() bool { return len(emu.Messages()) >= events })
	to := time.Now()

	if code, out := c.adminCall(t, http.MethodPost, "/v1/plugins/echo/shadow", map[string]any{"path": variant, "sha256": sum}); code != http.StatusOK {
		t.Fatalf("shadow: %d %v", code, out)
	}
	code, out := c.adminCall(t, http.MethodPost, "/v1/plugins/echo/replay", map[string]any{"to_shadow": true,
		"from": from.Format(time.RFC3339Nano), "to": to.Format(time.RFC3339Nano)})
	if code != http.StatusOK || out["events"] != float64(events) || out["replayed"] != float64(events) || out["differ"] != float64(events) {
		t.Fatalf("replay: %d %v", code, out)
	}
	_, report := c.adminCall(t, http.MethodGet, "/v1/plugins/echo/shadow/report?limit=20000", nil)
	sum2, _ := report["summary"].(map[string]any)
	if sum2["events"] != float64(events) || sum2["differ"] != float64(events) || sum2["candidate_actions"] != float64(events) {
		t.Fatalf("summary %v", sum2)
	}
	recs, _ := report["records"].([]any)
	seen := map[string]bool{}
	for _, r := range recs {
		rec, _ := r.(map[string]any)
		diffs, _ := rec["differences"].([]any)
		if rec["source"] != "replay" || len(diffs) != 1 || diffs[0] != "action 0 (reply) differs" {
			t.Fatalf("record %v", rec)
		}
		seen[rec["event_id"].(string)] = true
	}
	if len(seen) != events {
		t.Fatalf("%d distinct events recorded, want %d", len(seen), events)
	}
	if n := len(emu.Messages()); n != events {
		t.Fatalf("the emulator got %d messages for %d events: a replayed action reached Lark", n, events)
	}
	// A replay needs a running shadow.
	if code, out := c.adminCall(t, http.MethodPost, "/v1/plugins/echo/abort", nil); code != http.StatusOK {
		t.Fatalf("abort: %d %v", code, out)
	}
	if code, out := c.adminCall(t, http.MethodPost, "/v1/plugins/echo/replay", map[string]any{"to_shadow": true,
		"from": from.Format(time.RFC3339Nano), "to": to.Format(time.RFC3339Nano)}); code != http.StatusConflict || out["reason"] != "no_shadow" {
		t.Fatalf("replay without a shadow: %d %v", code, out)
	}
}
