package app_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/pluginhost"
	"github.com/larkway/larkway/core/internal/testenv"
)

// clusterYAML is a replica's config: Pulsar, Redis and the admin API, with
// a key prefix and app id of its own so tests run in parallel.
func clusterYAML(t *testing.T, appID, emuAddr, prefix, replica, plugins string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
replica_id: %s
bus:
  kind: pulsar
  pulsar: {url: %q}
redis:
  addr: %q
  key_prefix: %q
apps:
  - {id: %s, secret: secret, verification_token: vt, base_url: "http://%s"}
plugins:
%s
admin:
  listen: 127.0.0.1:0
  token: %s
dispatch:
  retry_backoff: 100ms
  deadline: 5s
supervision:
  restart_backoff: 50ms
  probation_window: 1s
cluster:
  reconcile_interval: 200ms
actions:
  rate_limits: {disabled: true}
`, replica, testenv.PulsarURL(t), testenv.RedisAddr(t), prefix, appID, emuAddr, plugins, testAdminToken)
}

func uniqueApp(t *testing.T, prefix string) string {
	return fmt.Sprintf("cli_%s_%d", prefix, time.Now().UnixNano())
}

// Three replicas consume one plugin subscription (Key_Shared): every chat's
// replies come out in the order its events went in.
func TestOrderPerChatAcrossThreeReplicas(t *testing.T) {
	t.Parallel()
	appID := uniqueApp(t, "order")
	emu, emuAddr := emulator(t, appID)
	echo := testenv.BuildPlugin(t, "./plugins/echo", t.TempDir())
	plugins := fmt.Sprintf("  - {name: echo, path: %s}", echo)
	var cores []*runningCore
	for i := range 3 {
		cores = append(cores, runCore(t, clusterYAML(t, appID, emuAddr, appID+":", fmt.Sprintf("r%d", i), plugins)))
	}
	const chats, per = 10, 20
	for i := range per {
		for c := range chats {
			id := fmt.Sprintf("om_o_%d_%d", c, i)
			body := messageEvent(appID, "ev_"+id, id, fmt.Sprintf("oc_order_%d", c), fmt.Sprintf("%d/%03d", c, i))
			if code, err := cores[(i+c)%3].post(body); err != nil || code != 200 {
				t.Fatalf("post: %d %v", code, err)
			}
		}
	}
	testenv.Eventually(t, 60*time.Second, "not every event answered", func() bool { return len(emu.Messages()) >= chats*per })
	next := map[string]int{}
	for _, m := range emu.Messages() {
		var c, i int
		if _, err := fmt.Sscanf(strings.TrimPrefix(m.ParentID, "om_o_"), "%d_%d", &c, &i); err != nil {
			t.Fatalf("unexpected reply %+v", m)
		}
		chat := fmt.Sprint(c)
		if i != next[chat] {
			t.Fatalf("chat %d: reply to event %d came when %d was due", c, i, next[chat])
		}
		next[chat]++
	}
}

// A plugin that dies mid-delivery loses nothing: the delivery completes
// after the restart, exactly once.
func TestPluginKilledMidDeliveryLosesNothing(t *testing.T) {
	t.Parallel()
	appID := uniqueApp(t, "kill")
	emu, emuAddr := emulator(t, appID)
	dir := t.TempDir()
	hostile := testenv.BuildPlugin(t, "./core/internal/pluginhost/testdata/hostile", dir)
	plugins := fmt.Sprintf("  - {name: once, path: %s, env: [HOSTILE_MODE=crash-once, HOSTILE_NAME=once, HOSTILE_MARKER=%s]}",
		hostile, filepath.Join(dir, "crashed"))
	c := runCore(t, clusterYAML(t, appID, emuAddr, appID+":", "r0", plugins))
	var ids []string
	for i := range 30 {
		id := fmt.Sprintf("om_k_%d", i)
		ids = append(ids, id)
		if code, err := c.post(messageEvent(appID, "ev_"+id, id, fmt.Sprintf("oc_%d", i%3), "k")); err != nil || code != 200 {
			t.Fatalf("post: %d %v", code, err)
		}
	}
	testenv.Eventually(t, 60*time.Second, "not every event answered after the crash", func() bool { return len(repliesByParent(emu)) == len(ids) })
	if _, err := os.Stat(filepath.Join(dir, "crashed")); err != nil {
		t.Fatal("the plugin never crashed")
	}
	for id, n := range repliesByParent(emu) {
		if n != 1 {
			t.Errorf("%s answered %d times", id, n)
		}
	}
	if restarts := counter(t, c.reg, "larkway_plugin_restarts_total", map[string]string{"plugin": "once"}); restarts < 1 {
		t.Errorf("restarts %v", restarts)
	}
}

// Under a steady load, two replicas swap the echo plugin together (make
// before break); every event is answered exactly once across the old and
// new versions, and both replicas report the new version. A swap to a
// version that fails its health check rolls back with nothing lost.
func TestSwapUnderLoadAcrossReplicas(t *testing.T) {
	t.Parallel()
	appID := uniqueApp(t, "swap")
	emu, emuAddr := emulator(t, appID)
	dir := t.TempDir()
	echo := testenv.BuildPlugin(t, "./plugins/echo", dir)
	v2 := filepath.Join(dir, "echo-v2")
	b, _ := os.ReadFile(echo)
	if err := os.WriteFile(v2, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sum, _ := pluginhost.FileSHA256(v2)
	hostile := testenv.BuildPlugin(t, "./core/internal/pluginhost/testdata/hostile", dir)
	hostileSum, _ := pluginhost.FileSHA256(hostile)
	plugins := fmt.Sprintf("  - {name: echo, path: %s}", echo)
	a := runCore(t, clusterYAML(t, appID, emuAddr, appID+":", "replica-a", plugins))
	bCore := runCore(t, clusterYAML(t, appID, emuAddr, appID+":", "replica-b", plugins))

	rate := loadRate()
	stop := make(chan struct{})
	accepted := load(t, []*runningCore{a, bCore}, appID, rate, stop)
	testenv.Eventually(t, 30*time.Second, "no traffic before the swap", func() bool { return len(emu.Messages()) > rate/2 })

	// A version that cannot start (it never answers Describe) is refused
	// and everything stays on the old one.
	code, out := a.adminCall(t, http.MethodPost, "/v1/plugins/echo/swap", map[string]any{"path": hostile, "sha256": hostileSum})
	if code != http.StatusConflict || out["reason"] != "rolled_back" {
		t.Fatalf("broken swap: %d %v", code, out)
	}
	code, out = a.adminCall(t, http.MethodPost, "/v1/plugins/echo/swap", map[string]any{"path": v2, "sha256": sum})
	if code != http.StatusOK {
		t.Fatalf("swap: %d %v", code, out)
	}
	testenv.Eventually(t, 30*time.Second, "both replicas did not report the new version", func() bool {
		paths := a.pluginPaths(t, "echo")
		return paths["replica-a"] == v2 && paths["replica-b"] == v2
	})
	time.Sleep(time.Second) // keep the load running on the new version for a while
	close(stop)
	res := <-accepted
	ids := res.ids
	testenv.Eventually(t, 120*time.Second, fmt.Sprintf("not every accepted event answered (%d accepted)", len(ids)), func() bool {
		return len(repliesByParent(emu)) >= len(ids)
	})
	replies := repliesByParent(emu)
	for _, id := range ids {
		if replies[id] != 1 {
			t.Errorf("%s answered %d times", id, replies[id])
		}
	}
	if len(replies) != len(ids) {
		t.Errorf("%d replies for %d accepted events", len(replies), len(ids))
	}
	got := float64(len(ids)) / res.elapsed.Seconds()
	t.Logf("load: %d events in %s (%.0f/s; target %d/s), all answered exactly once across the swap",
		len(ids), res.elapsed.Round(time.Millisecond), got, rate)
	// The rate the load reached is machine speed, not behaviour: it is a
	// benchmark figure (`larkway bench --scenarios swap`), not a gate here.
}

// loadRate is the swap test's target rate: LARKWAY_SWAP_LOAD_RATE, default
// 2000 events/s (the figure); a race-enabled build on 2 shared
// cores may set it lower.
func loadRate() int {
	var r int
	if _, err := fmt.Sscan(os.Getenv("LARKWAY_SWAP_LOAD_RATE"), &r); err == nil && r > 0 {
		return r
	}
	return 2000
}

// A plugin keeps state in the core's store (Redis) through go-plugin's
// broker: a counter survives a restart of the whole core.
func TestPluginStateRoundTrip(t *testing.T) {
	t.Parallel()
	appID := uniqueApp(t, "state")
	emu, emuAddr := emulator(t, appID)
	counter := testenv.BuildPlugin(t, "./core/internal/app/testdata/counter", t.TempDir())
	plugins := fmt.Sprintf("  - {name: counter, path: %s}", counter)
	yaml := clusterYAML(t, appID, emuAddr, appID+":", "r0", plugins)
	post := func(c *runningCore, i int) {
		id := fmt.Sprintf("om_s_%d", i)
		if code, err := c.post(messageEvent(appID, "ev_"+id, id, "oc_state", "/count")); err != nil || code != 200 {
			t.Fatalf("post: %d %v", code, err)
		}
	}
	c := runCore(t, yaml)
	for i := range 3 {
		post(c, i)
	}
	testenv.Eventually(t, 30*time.Second, "counts missing", func() bool { return len(emu.Messages()) == 3 })
	if err := c.stop(); err != nil {
		t.Fatal(err)
	}
	c2 := runCore(t, yaml)
	post(c2, 3)
	testenv.Eventually(t, 30*time.Second, "count after restart missing", func() bool { return len(emu.Messages()) == 4 })
	for i, m := range emu.Messages() {
		if want := fmt.Sprintf(`count: %d"`, i+1); !strings.Contains(m.Content, want) {
			t.Fatalf("reply %d is %s, want %s", i, m.Content, want)
		}
	}
}
