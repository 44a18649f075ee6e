package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
)

// SIGTERM under load loses nothing: the core stops taking events (503, so
// Lark retries), finishes what it holds, stops its plugins and exits 0; a
// new process picks up what was stored but not yet handled; every accepted
// event is answered exactly once.
func TestSIGTERMUnderLoadLosesNothing(t *testing.T) {
	pulsarURL, redisAddr := testenv.PulsarURL(t), testenv.RedisAddr(t)
	dir := t.TempDir()
	bin := testenv.BuildPlugin(t, "./core/cmd/larkway", dir)
	echo := testenv.BuildPlugin(t, "./plugins/echo", dir)
	appID := fmt.Sprintf("cli_sigterm_%d", time.Now().UnixNano())
	emu := larkemu.New(larkemu.Options{Apps: map[string]string{appID: "secret"}, Unlimited: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = emu.Serve(ctx, ln) }()
	cfgPath := filepath.Join(dir, "larkway.yaml")
	cfg := fmt.Sprintf(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
bus: {kind: pulsar, pulsar: {url: %q}}
redis: {addr: %q, key_prefix: "%s:"}
apps:
  - {id: %s, secret: secret, verification_token: vt, base_url: "http://%s"}
plugins:
  - {name: echo, path: %s}
dispatch: {retry_backoff: 100ms}
actions: {rate_limits: {disabled: true}}
`, pulsarURL, redisAddr, appID, appID, ln.Addr(), echo)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testenv.StartCore(t, bin, cfgPath)

	// Steady load from 8 senders; each event is retried until accepted,
	// as Lark would, across the restart.
	var mu sync.Mutex
	accepted := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	addr := func() string { mu.Lock(); defer mu.Unlock(); return p.Addr }
	for s := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("om_term_%d_%d", s, i)
				body := fmt.Sprintf(`{"schema":"2.0","header":{"event_id":"ev_%s","token":"vt","create_time":"1700000000000","event_type":"im.message.receive_v1","app_id":%q},
"event":{"sender":{"sender_id":{"open_id":"ou_1"},"sender_type":"user"},"message":{"message_id":%q,"chat_id":"oc_%d","chat_type":"group","message_type":"text","content":"{\"text\":\"t\"}"}}}`,
					id, appID, id, i%10)
				for {
					resp, err := http.Post("http://"+addr()+"/lark/events", "application/json", strings.NewReader(body))
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode == 200 {
							mu.Lock()
							accepted[id] = true
							mu.Unlock()
							break
						}
					}
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
				}
			}
		}()
	}
	testenv.Eventually(t, 30*time.Second, "no replies before SIGTERM", func() bool { return len(emu.Messages()) > 200 })
	if err := p.Kill(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.Done:
		if err != nil {
			t.Fatalf("core exited with %v after SIGTERM\n%s", err, p.Logs())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("core did not exit after SIGTERM\n%s", p.Logs())
	}
	if !strings.Contains(p.Logs(), `"msg":"draining"`) || !strings.Contains(p.Logs(), `"msg":"stopped"`) {
		t.Errorf("no ordered drain in the logs:\n%s", p.Logs())
	}
	// A new process takes over; the senders' retries reach it.
	p2 := testenv.StartCore(t, bin, cfgPath)
	mu.Lock()
	p.Addr = p2.Addr
	mu.Unlock()
	atRestart := len(emu.Messages())
	testenv.Eventually(t, 30*time.Second, "no replies after the restart", func() bool { return len(emu.Messages()) > atRestart+100 })
	close(stop)
	wg.Wait()
	mu.Lock()
	ids := make([]string, 0, len(accepted))
	for id := range accepted {
		ids = append(ids, id)
	}
	mu.Unlock()
	testenv.Eventually(t, 60*time.Second, "not every accepted event answered", func() bool {
		got := map[string]int{}
		for _, m := range emu.Messages() {
			got[m.ParentID]++
		}
		for _, id := range ids {
			if got[id] == 0 {
				return false
			}
		}
		return true
	})
	got := map[string]int{}
	for _, m := range emu.Messages() {
		got[m.ParentID]++
	}
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("%s answered %d times", id, got[id])
		}
	}
	t.Logf("%d events accepted across SIGTERM and restart, each answered once", len(ids))
	_ = p2.Kill(syscall.SIGTERM)
	<-p2.Done
}
