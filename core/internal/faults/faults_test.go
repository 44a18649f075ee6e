//go:build faults

// Package faults breaks things on purpose — kill -9 the core, kill plugin
// processes, stop Pulsar and Redis, storm the Lark emulator with faults —
// and proves nothing is lost and nothing is sent twice. The tests stop and
// start the shared broker, so they run alone, after the main suite:
// `make test` runs `go test -tags faults ./core/internal/faults`.
package faults

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/bench"
	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
)

// rig is an emulator, a built core binary and config, and a load of events
// retried until accepted, as Lark retries.
type rig struct {
	t      *testing.T
	emu    *larkemu.Emulator
	bin    string
	cfg    string
	appID  string
	dir    string
	core   *testenv.Core
	coreMu sync.Mutex

	mu       sync.Mutex
	accepted map[string]bool
	// codes counts webhook answers by status while a fault is active.
	faultOn   bool
	faultOK   int
	fault503  int
	stop      chan struct{}
	senders   sync.WaitGroup
	sentCount int

	// encryptKey, when set, makes the senders encrypt and sign every
	// attempt afresh, as Lark does.
	encryptKey string
	// limit, when positive, bounds the distinct events sent; started counts
	// them.
	limit   int64
	started atomic.Int64
}

// rigOptions change the core the rig runs.
type rigOptions struct {
	// bus is the YAML of the bus section (default: the shared Pulsar).
	bus        string
	encryptKey string
	// noRedis leaves Redis out: the stores are in-process, or beside the
	// embedded bus on disk.
	noRedis bool
}

func newRig(t *testing.T) *rig { return newRigWith(t, rigOptions{}) }

func newRigWith(t *testing.T, o rigOptions) *rig {
	t.Helper()
	r := &rig{t: t, accepted: map[string]bool{}, stop: make(chan struct{}), dir: t.TempDir(), encryptKey: o.encryptKey}
	r.appID = fmt.Sprintf("cli_fault_%d", time.Now().UnixNano())
	r.emu = larkemu.New(larkemu.Options{Apps: map[string]string{r.appID: "secret"}, Unlimited: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = r.emu.Serve(ctx, ln) }()
	t.Cleanup(cancel)
	r.bin = testenv.BuildPlugin(t, "./core/cmd/larkway", r.dir)
	echo := testenv.BuildPlugin(t, "./plugins/echo", r.dir)
	r.cfg = filepath.Join(r.dir, "larkway.yaml")
	busYAML := o.bus
	if busYAML == "" {
		busYAML = fmt.Sprintf("{kind: pulsar, pulsar: {url: %q, operation_timeout: 2s}}", testenv.PulsarURL(t))
	}
	redisYAML := fmt.Sprintf("{addr: %q, key_prefix: \"%s:\"}", testenv.RedisAddr(t), r.appID)
	if o.noRedis {
		redisYAML = "{}"
	}
	yaml := fmt.Sprintf(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
bus: %s
redis: %s
apps:
  - {id: %s, secret: secret, verification_token: vt, encrypt_key: %q, base_url: "http://%s"}
plugins:
  - {name: echo, path: %s}
dispatch: {retry_backoff: 100ms, deadline: 2s, action_timeout: 5s, max_attempts: 50}
ingest: {publish_timeout: 1s}
supervision: {restart_backoff: 50ms, restart_backoff_max: 500ms, quarantine_after: 1000}
actions: {rate_limits: {disabled: true}}
`, busYAML, redisYAML, r.appID, o.encryptKey, ln.Addr(), echo)
	if err := os.WriteFile(r.cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) start() {
	c := testenv.StartCore(r.t, r.bin, r.cfg)
	r.coreMu.Lock()
	r.core = c
	r.coreMu.Unlock()
}

func (r *rig) addr() string {
	r.coreMu.Lock()
	defer r.coreMu.Unlock()
	return r.core.Addr
}

// load starts n senders posting distinct events until stopped.
func (r *rig) load(n int) {
	for s := range n {
		r.senders.Add(1)
		go func() {
			defer r.senders.Done()
			for i := 0; ; i++ {
				select {
				case <-r.stop:
					return
				default:
				}
				if r.limit > 0 && r.started.Add(1) > r.limit {
					return
				}
				id := fmt.Sprintf("om_f_%d_%d", s, i)
				body := fmt.Sprintf(`{"schema":"2.0","header":{"event_id":"ev_%s","token":"vt","create_time":"1700000000000","event_type":"im.message.receive_v1","app_id":%q},
"event":{"sender":{"sender_id":{"open_id":"ou_1"},"sender_type":"user"},"message":{"message_id":%q,"chat_id":"oc_%d","chat_type":"group","message_type":"text","content":"{\"text\":\"f\"}"}}}`,
					id, r.appID, id, i%20)
				var giveUp time.Time // set once the load stops
				for {
					resp, err := r.post(body)
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						r.mu.Lock()
						if r.faultOn {
							switch resp.StatusCode {
							case 200:
								r.faultOK++
							case 503:
								r.fault503++
							}
						}
						r.mu.Unlock()
						if resp.StatusCode == 200 {
							r.mu.Lock()
							r.accepted[id] = true
							r.sentCount++
							r.mu.Unlock()
							break
						}
					}
					// Lark retries an event until it is acknowledged, so the
					// sender finishes the one it holds even once the load stops:
					// an event stored before its 503 or its dropped connection
					// (kill -9 between store and answer) is then accepted on a
					// later attempt, and deduplicated, not left answered but
					// never accepted. It gives up only after a minute.
					if giveUp.IsZero() {
						select {
						case <-r.stop:
							giveUp = time.Now().Add(time.Minute)
						case <-time.After(50 * time.Millisecond):
						}
					} else if time.Now().After(giveUp) {
						return
					} else {
						<-time.After(50 * time.Millisecond)
					}
				}
			}
		}()
	}
}

// post sends one attempt of an event, sealed afresh when the app has an
// Encrypt Key (a new IV, timestamp and nonce per attempt, as Lark re-pushes).
func (r *rig) post(plain string) (*http.Response, error) {
	body, h, err := bench.Seal(bench.App{ID: r.appID, VerificationToken: "vt", EncryptKey: r.encryptKey}, []byte(plain))
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+r.addr()+"/lark/events", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header = h
	return http.DefaultClient.Do(req)
}

func (r *rig) replies() map[string]int {
	got := map[string]int{}
	for _, m := range r.emu.Messages() {
		got[m.ParentID]++
	}
	return got
}

func (r *rig) waitReplies(more int, why string) {
	r.t.Helper()
	base := len(r.emu.Messages())
	testenv.Eventually(r.t, 60*time.Second, why, func() bool { return len(r.emu.Messages()) >= base+more })
}

// finish stops the load and asserts every accepted event was answered
// exactly once.
func (r *rig) finish() {
	r.t.Helper()
	close(r.stop)
	r.senders.Wait()
	r.mu.Lock()
	ids := make([]string, 0, len(r.accepted))
	for id := range r.accepted {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	testenv.Eventually(r.t, 120*time.Second, "not every accepted event was answered", func() bool {
		got := r.replies()
		for _, id := range ids {
			if got[id] == 0 {
				return false
			}
		}
		return true
	})
	got := r.replies()
	for _, id := range ids {
		if got[id] != 1 {
			r.t.Errorf("%s answered %d times", id, got[id])
		}
	}
	for id := range got {
		if !r.accepted[id] {
			r.t.Errorf("reply to %s, an event never accepted", id)
		}
	}
	r.t.Logf("%d events accepted, each answered exactly once", len(ids))
}

// kill -9 the core (and its plugins) at random points under load, restart
// it: every accepted event is answered exactly once.
func TestKill9CoreUnderLoad(t *testing.T) {
	r := newRig(t)
	r.start()
	r.load(8)
	for round := range 3 {
		r.waitReplies(50+rand.IntN(200), fmt.Sprintf("round %d: no progress", round))
		if err := r.core.Kill(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-r.core.Done
		r.start()
	}
	r.waitReplies(100, "no progress after the last restart")
	r.finish()
}

// The embedded bus keeps every event answered 200 through kill -9: the
// core is killed three times while 3 000 signed, encrypted events are sent,
// restarted on the same data directory, and every event answered 200 gets
// exactly one reply. The dedup markers are in Redis, or (a single machine
// without Redis) beside the bus on disk.
func TestKill9CoreEmbeddedBus(t *testing.T) {
	for _, tc := range []struct {
		name    string
		noRedis bool
	}{
		{"dedup in Redis", false},
		{"dedup on disk", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRigWith(t, rigOptions{
				bus:        fmt.Sprintf("{kind: embedded, embedded: {dir: %q}}", filepath.Join(t.TempDir(), "bus")),
				encryptKey: "fault-encrypt-key",
				noRedis:    tc.noRedis,
			})
			r.limit = 3000
			r.start()
			r.load(8)
			for round := range 3 {
				r.waitReplies(100+rand.IntN(400), fmt.Sprintf("round %d: no progress", round))
				if err := r.core.Kill(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				<-r.core.Done
				r.start()
			}
			r.senders.Wait() // the senders stop on their own after 3 000 events
			r.finish()
			if len(r.accepted) != int(r.limit) {
				t.Errorf("%d of %d events accepted", len(r.accepted), r.limit)
			}
		})
	}
}

// Plugin processes killed repeatedly lose nothing.
func TestKillPluginsRepeatedly(t *testing.T) {
	r := newRig(t)
	r.start()
	r.load(8)
	for round := range 5 {
		r.waitReplies(100, fmt.Sprintf("round %d: no progress", round))
		out, err := exec.Command("pgrep", "-P", strconv.Itoa(r.core.Cmd.Process.Pid)).Output()
		if err != nil {
			t.Fatalf("no plugin process found: %v", err)
		}
		for _, f := range strings.Fields(string(out)) {
			pid, _ := strconv.Atoi(f)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	r.waitReplies(100, "no progress after the last kill")
	r.finish()
}

func script(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(testenv.ModuleRoot(t), "scripts", name), args...)
	cmd.Env = append(os.Environ(), "LARKWAY_PULSAR_KEEP_DATA=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// With Pulsar down the webhook answers 503 (never 200 for an event it
// could not store), and everything completes once the broker is back.
func TestPulsarDownMidRun(t *testing.T) {
	r := newRig(t)
	r.start()
	r.load(4)
	r.waitReplies(100, "no progress before the outage")
	script(t, "pulsar.sh", "stop")
	r.mu.Lock()
	r.faultOn = true
	r.mu.Unlock()
	testenv.Eventually(t, 30*time.Second, "webhook never answered 503 during the outage", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.fault503 > 10
	})
	r.mu.Lock()
	okDuring := r.faultOK
	r.faultOn = false
	r.mu.Unlock()
	script(t, "pulsar.sh", "start")
	if okDuring > 0 {
		// Requests in flight when the broker went away may have been stored
		// just before: they are checked like every other accepted event.
		t.Logf("%d events accepted while the broker was stopping", okDuring)
	}
	r.waitReplies(100, "no progress after the broker came back")
	r.finish()
}

// With Redis down events are still stored (Pulsar is up) and wait; nothing
// is handled twice, and everything completes once Redis is back.
func TestRedisDownMidRun(t *testing.T) {
	r := newRig(t)
	r.start()
	r.load(4)
	r.waitReplies(100, "no progress before the outage")
	script(t, "redis.sh", "stop")
	time.Sleep(2 * time.Second) // the outage itself: nothing to wait for
	script(t, "redis.sh", "start")
	r.waitReplies(100, "no progress after Redis came back")
	r.finish()
}

// Lark fault storms — 5xx, 429 with reset headers, token invalidation —
// lose nothing and never post twice.
func TestEmulatorFaultStorms(t *testing.T) {
	r := newRig(t)
	r.start()
	r.load(4)
	r.waitReplies(50, "no progress before the storms")
	for _, storm := range []larkemu.Faults{
		{ErrorRate: 0.5},
		{RateLimitStorm: 2 * time.Second},
		{InvalidateTokens: true},
	} {
		r.emu.SetFaults(storm)
		time.Sleep(3 * time.Second) // the storm itself: nothing to wait for
		r.emu.SetFaults(larkemu.Faults{})
		r.waitReplies(50, fmt.Sprintf("no progress after %+v", storm))
	}
	r.finish()
}
