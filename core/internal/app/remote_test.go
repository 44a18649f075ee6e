package app_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/apptest"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/manager"
	"github.com/larkway/larkway/core/internal/testenv"
)

// freeAddr is a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// remoteInstance is a plugin process serving on its own address, as its own
// deployment would.
type remoteInstance struct {
	addr string
	cmd  *exec.Cmd
	logs *testenv.LogBuffer
}

// startRemote runs argv as a remote plugin instance with the given
// certificate, trusting ca for the core, and waits until it listens.
func startRemote(t *testing.T, argv []string, certFile, keyFile, ca string) *remoteInstance {
	t.Helper()
	in := &remoteInstance{addr: freeAddr(t), logs: &testenv.LogBuffer{}}
	args := append(argv[1:], "--listen", in.addr, "--tls-cert", certFile, "--tls-key", keyFile, "--client-ca", ca)
	in.cmd = exec.Command(argv[0], args...)
	in.cmd.Stderr = in.logs
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = in.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = in.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = in.cmd.Process.Kill()
			<-exited
		}
	})
	testenv.Eventually(t, 30*time.Second, "remote plugin never listened: "+in.logs.String(), func() bool {
		c, err := net.Dial("tcp", in.addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return in
}

// remotePlugin is a plugins: entry dialling addrs with mTLS.
func remotePlugin(name string, addrs []string, ca, cert, key string) string {
	return fmt.Sprintf("  - name: %s\n    remote: {address: %q, resolve_interval: 1s, tls: {ca_file: %s, cert_file: %s, key_file: %s}}\n",
		name, strings.Join(addrs, ","), ca, cert, key)
}

// Two remote Go instances of echo and one remote Python instance of
// py-echo, on loopback TCP with mutual TLS, answer 2 000 events across 50
// chats exactly once each, in order per chat; one Go instance is killed
// mid-run and its chats move to the other with nothing lost.
func TestRemotePluginsOverMTLS(t *testing.T) {
	appID := uniqueApp(t, "remote")
	emu, emuAddr := emulator(t, appID)
	pki := testenv.NewPKI(t)
	coreCert, coreKey := pki.Issue(t, testenv.Cert{})
	echoCert, echoKey := pki.Issue(t, testenv.Cert{URIs: []string{"urn:larkway:plugin:echo"}})
	pyCert, pyKey := pki.Issue(t, testenv.Cert{URIs: []string{"urn:larkway:plugin:py-echo"}})
	echo := testenv.BuildPlugin(t, "./plugins/echo", t.TempDir())
	py := testenv.PythonWithSDK(t)
	goA := startRemote(t, []string{echo}, echoCert, echoKey, pki.CAFile)
	goB := startRemote(t, []string{echo}, echoCert, echoKey, pki.CAFile)
	pyA := startRemote(t, []string{py, testenv.ModuleRoot(t) + "/plugins/py-echo/main.py"}, pyCert, pyKey, pki.CAFile)
	plugins := remotePlugin("echo", []string{goA.addr, goB.addr}, pki.CAFile, coreCert, coreKey) +
		remotePlugin("py-echo", []string{pyA.addr}, pki.CAFile, coreCert, coreKey)
	c := runCore(t, clusterYAML(t, appID, emuAddr, appID+":", "r0", plugins))

	const chats, per = 50, 40
	var posting sync.WaitGroup
	errs := make(chan error, chats)
	for ch := range chats {
		posting.Add(1)
		go func() { // a chat's events go in one after another, chats in parallel
			defer posting.Done()
			for i := range per {
				id := fmt.Sprintf("om_r_%d_%d", ch, i)
				body := messageEvent(appID, "ev_"+id, id, fmt.Sprintf("oc_remote_%d", ch), id)
				if code, err := c.post(body); err != nil || code != 200 {
					errs <- fmt.Errorf("post %s: %d %v", id, code, err)
					return
				}
			}
		}()
	}
	// Kill one Go instance while events are still being handled.
	testenv.Eventually(t, 120*time.Second, "no progress before the kill", func() bool { return len(emu.Messages()) >= chats*per/2 })
	if n := testenv.MetricValue(t, c.reg, "larkway_plugin_remote_instances", "plugin", "echo"); n != 2 {
		t.Errorf("larkway_plugin_remote_instances{plugin=echo} = %v before the kill, want 2", n)
	}
	if err := goA.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	atKill := len(emu.Messages())
	if atKill >= 2*chats*per {
		t.Fatalf("every event was answered before the kill (%d replies): the kill proves nothing", atKill)
	}
	t.Logf("killed %s after %d of %d replies", goA.addr, atKill, 2*chats*per)
	posting.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	testenv.Eventually(t, 180*time.Second, "not every event answered by both plugins", func() bool { return len(emu.Messages()) >= 2*chats*per })
	testenv.Eventually(t, 60*time.Second, "the killed instance still counted", func() bool {
		return testenv.MetricValue(t, c.reg, "larkway_plugin_remote_instances", "plugin", "echo") == 1
	})
	if n := testenv.MetricValue(t, c.reg, "larkway_plugin_remote_instances", "plugin", "py-echo"); n != 1 {
		t.Errorf("larkway_plugin_remote_instances{plugin=py-echo} = %v, want 1", n)
	}

	// Each reply's idempotency uuid says which plugin sent it.
	byPlugin := map[string]map[string]int{"echo": {}, "py-echo": {}}
	order := map[string][]int{} // plugin/chat → event indexes in reply order
	for _, m := range emu.Messages() {
		var ch, i int
		if _, err := fmt.Sscanf(strings.TrimPrefix(m.ParentID, "om_r_"), "%d_%d", &ch, &i); err != nil {
			t.Fatalf("unexpected reply %+v", m)
		}
		plugin := ""
		for _, p := range []string{"echo", "py-echo"} {
			if m.UUID == action.IdempotencyKey(appID, m.ParentID, p, 0) {
				plugin = p
			}
		}
		if plugin == "" {
			t.Fatalf("reply %+v is from no known plugin", m)
		}
		byPlugin[plugin][m.ParentID]++
		k := fmt.Sprintf("%s/%d", plugin, ch)
		order[k] = append(order[k], i)
	}
	for p, replies := range byPlugin {
		if len(replies) != chats*per {
			t.Errorf("%s answered %d of %d events", p, len(replies), chats*per)
		}
		for id, n := range replies {
			if n != 1 {
				t.Errorf("%s answered %s %d times", p, id, n)
			}
		}
	}
	for k, idx := range order {
		for j, i := range idx {
			if i != j {
				t.Fatalf("%s: reply %d is to event %d: out of order (%v)", k, j, i, idx)
			}
		}
	}
	// goA is dead: every chat it had was answered by goB after the kill.
}

// A remote plugin is swapped through the admin API like a launched one: the
// desired endpoint changes, make-before-break, and a swap to an endpoint
// whose certificate names another plugin is refused and rolled back.
func TestRemoteSwapChangesTheEndpoint(t *testing.T) {
	appID := uniqueApp(t, "rswap")
	emu, emuAddr := emulator(t, appID)
	pki := testenv.NewPKI(t)
	coreCert, coreKey := pki.Issue(t, testenv.Cert{})
	echoCert, echoKey := pki.Issue(t, testenv.Cert{URIs: []string{"urn:larkway:plugin:echo"}})
	otherCert, otherKey := pki.Issue(t, testenv.Cert{URIs: []string{"urn:larkway:plugin:billing"}})
	echo := testenv.BuildPlugin(t, "./plugins/echo", t.TempDir())
	oldEP := startRemote(t, []string{echo}, echoCert, echoKey, pki.CAFile)
	newEP := startRemote(t, []string{echo}, echoCert, echoKey, pki.CAFile)
	impostor := startRemote(t, []string{echo}, otherCert, otherKey, pki.CAFile)
	c := runCore(t, clusterYAML(t, appID, emuAddr, appID+":", "r0", remotePlugin("echo", []string{oldEP.addr}, pki.CAFile, coreCert, coreKey)))
	address := func() string {
		_, out := c.adminCall(t, http.MethodGet, "/v1/plugins/echo", nil)
		p, _ := out["plugin"].(map[string]any)
		reps, _ := p["replicas"].(map[string]any)
		rm, _ := reps["r0"].(map[string]any)
		spec, _ := rm["spec"].(map[string]any)
		rem, _ := spec["remote"].(map[string]any)
		addr, _ := rem["address"].(string)
		return addr
	}
	code, out := c.adminCall(t, http.MethodPost, "/v1/plugins/echo/swap", map[string]any{"address": impostor.addr})
	if code != http.StatusConflict || out["reason"] != "rolled_back" || !strings.Contains(fmt.Sprint(out["message"], out["error"]), "names billing") {
		t.Fatalf("swap to an impostor: %d %v", code, out)
	}
	code, out = c.adminCall(t, http.MethodPost, "/v1/plugins/echo/swap", map[string]any{"address": newEP.addr})
	if code != http.StatusOK {
		t.Fatalf("swap: %d %v", code, out)
	}
	testenv.Eventually(t, 30*time.Second, "the replica does not report the new endpoint", func() bool { return address() == newEP.addr })
	// The old endpoint is gone: what is answered now is answered by the new one.
	_ = oldEP.cmd.Process.Kill()
	for i := range 10 {
		id := fmt.Sprintf("om_rs_%d", i)
		if code, err := c.post(messageEvent(appID, "ev_"+id, id, "oc_rswap", id)); err != nil || code != 200 {
			t.Fatalf("post: %d %v", code, err)
		}
	}
	testenv.Eventually(t, 60*time.Second, "events after the swap not answered", func() bool { return len(repliesByParent(emu)) == 10 })
}

// Readiness does not wait for plugins (docs/operations.md, deploy/README.md):
// a replica whose plugins never start — a missing file, a file not matching
// its pin, an unreachable remote endpoint — still turns ready and serves;
// the launched ones are quarantined, the remote one is dialled again with
// backoff and never quarantined.
func TestReadinessWithPluginsThatNeverStart(t *testing.T) {
	dir := t.TempDir()
	wrong := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrong, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	pki := testenv.NewPKI(t)
	coreCert, coreKey := pki.Issue(t, testenv.Cert{})
	cfg, err := config.Parse(strings.NewReader(fmt.Sprintf(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
apps:
  - {id: cli_ready, secret: secret, verification_token: vt}
plugins:
  - {name: missing, path: %s}
  - {name: mispinned, path: %s, sha256: %s}
%s
supervision: {restart_backoff: 10ms, restart_backoff_max: 20ms}
`, filepath.Join(dir, "nope"), wrong, strings.Repeat("0", 64), remotePlugin("gone", []string{freeAddr(t)}, pki.CAFile, coreCert, coreKey))))
	if err != nil {
		t.Fatal(err)
	}
	c := apptest.Start(t, cfg, nil)
	resp, err := http.Get("http://" + c.Addr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz %d with plugins that never start: want 200", resp.StatusCode)
	}
	states := func() map[string]manager.Status {
		out := map[string]manager.Status{}
		for _, s := range c.Manager().Status() {
			out[s.Name] = s
		}
		return out
	}
	testenv.Eventually(t, 30*time.Second, "the launched plugins were not quarantined", func() bool {
		st := states()
		return st["missing"].State == manager.StateQuarantined && st["mispinned"].State == manager.StateQuarantined
	})
	// Far past supervision.quarantine_after (5) dials, the remote plugin is
	// still being dialled, not quarantined.
	testenv.Eventually(t, 30*time.Second, "the remote plugin was not redialled", func() bool { return states()["gone"].Restarts > 10 })
	if st := states()["gone"]; st.State == manager.StateQuarantined || !strings.Contains(st.LastError, "connection refused") {
		t.Fatalf("remote plugin %+v: want it crashed and redialled, saying why", st)
	}
}

// A remote plugin's canary is another endpoint of it, through the same
// admin command as a launched plugin's: on two replicas sharing Redis and
// Pulsar, a 10 % canary at the candidate's address gets exactly the chats
// the hash selects, whichever replica handles them, every event is answered
// exactly once, a candidate whose certificate names another plugin is
// refused, and promotion makes the candidate's address the plugin's
// endpoint on every replica.
func TestRemoteCanaryByEndpoint(t *testing.T) {
	appID := uniqueApp(t, "rcanary")
	emu, emuAddr := emulator(t, appID)
	pki := testenv.NewPKI(t)
	coreCert, coreKey := pki.Issue(t, testenv.Cert{})
	echoCert, echoKey := pki.Issue(t, testenv.Cert{URIs: []string{"urn:larkway:plugin:echo"}})
	otherCert, otherKey := pki.Issue(t, testenv.Cert{URIs: []string{"urn:larkway:plugin:billing"}})
	dir := t.TempDir()
	echo := testenv.BuildPlugin(t, "./plugins/echo", dir)
	variant := testenv.BuildPlugin(t, "./core/internal/app/testdata/echovariant", dir) // replies "echo2: …"
	stable := startRemote(t, []string{echo}, echoCert, echoKey, pki.CAFile)
	candidate := startRemote(t, []string{variant}, echoCert, echoKey, pki.CAFile)
	impostor := startRemote(t, []string{variant}, otherCert, otherKey, pki.CAFile)
	plugins := remotePlugin("echo", []string{stable.addr}, pki.CAFile, coreCert, coreKey)
	f := &releaseFixture{appID: appID, emu: emu, chatOfID: map[string]string{}}
	for i := range 2 {
		f.cores = append(f.cores, runCore(t, clusterYAML(t, appID, emuAddr, appID+":", fmt.Sprintf("rcanary-r%d", i), plugins)))
	}
	endpoints := func() map[string]string { // replica → the endpoint its stable version dials
		_, out := f.cores[0].adminCall(t, http.MethodGet, "/v1/plugins/echo", nil)
		p, _ := out["plugin"].(map[string]any)
		reps, _ := p["replicas"].(map[string]any)
		got := map[string]string{}
		for id, r := range reps {
			spec, _ := r.(map[string]any)["spec"].(map[string]any)
			rem, _ := spec["remote"].(map[string]any)
			got[id], _ = rem["address"].(string)
		}
		return got
	}

	code, out := f.cores[0].adminCall(t, http.MethodPost, "/v1/plugins/echo/canary", map[string]any{"address": impostor.addr, "percent": 10})
	if code != http.StatusConflict || !strings.Contains(fmt.Sprint(out["error"]), "names billing") {
		t.Fatalf("canary at an impostor: %d %v", code, out)
	}
	if rel := f.release(t)["release"]; rel != nil {
		t.Fatalf("a refused canary is desired: %v", rel)
	}
	code, out = f.cores[1].adminCall(t, http.MethodPost, "/v1/plugins/echo/canary", map[string]any{"address": candidate.addr, "percent": 10})
	if code != http.StatusOK {
		t.Fatalf("canary: %d %v", code, out)
	}
	f.canarySlice(t, "rc", func(v string) string {
		return "the " + map[string]string{"1": "stable", "2": "candidate"}[v] + " endpoint"
	})
	for id, ep := range endpoints() {
		if ep != stable.addr {
			t.Fatalf("replica %s dials %s during the canary, want the stable %s", id, ep, stable.addr)
		}
	}

	if code, out = f.cores[0].adminCall(t, http.MethodPost, "/v1/plugins/echo/promote", nil); code != http.StatusOK {
		t.Fatalf("promote: %d %v", code, out)
	}
	testenv.Eventually(t, 30*time.Second, "not every replica dials the candidate's address", func() bool {
		eps := endpoints()
		return len(eps) == 2 && eps["rcanary-r0"] == candidate.addr && eps["rcanary-r1"] == candidate.addr
	})
	if last, _ := f.release(t)["last"].(map[string]any); last["result"] != "promoted" {
		t.Fatalf("last release %v", last)
	}
	// The old endpoint is gone: every chat is answered by the candidate's.
	_ = stable.cmd.Process.Kill()
	f.post(t, 2, chatsN("rc", 200))
	for id, v := range f.answered(t) {
		if strings.HasSuffix(id, "_2") && v != "2" {
			t.Errorf("%s, after the promotion, answered by the stable endpoint", id)
		}
	}
}
