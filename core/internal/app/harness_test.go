package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/app"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
)

// emulator runs a Lark emulator for app on loopback until the test ends.
func emulator(t *testing.T, appID string) (*larkemu.Emulator, string) {
	t.Helper()
	emu := larkemu.New(larkemu.Options{Apps: map[string]string{appID: "secret"}, Unlimited: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = emu.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return emu, ln.Addr().String()
}

// runningCore is one in-process core replica.
type runningCore struct {
	app     *app.Core
	addr    string
	admin   string
	metrics string
	reg     *prometheus.Registry

	once sync.Once
	err  error
	stop func() error
}

const testAdminToken = "cluster-test-admin-token"

// runCore starts a core from yaml and waits until its plugins serve.
func runCore(t *testing.T, yaml string) *runningCore {
	t.Helper()
	cfg, err := config.Parse(strings.NewReader(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg := prometheus.NewRegistry()
	a, err := app.Build(context.Background(), cfg, app.Deps{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})), Registry: reg, Version: "test"})
	if err != nil {
		t.Fatalf("building the core: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	c := &runningCore{app: a, reg: reg}
	c.stop = func() error {
		c.once.Do(func() { cancel(); c.err = <-done })
		return c.err
	}
	t.Cleanup(func() {
		if err := c.stop(); err != nil {
			t.Errorf("core stopped with %v", err)
		}
	})
	c.addr, c.metrics, c.admin = a.Addr(), a.MetricsAddr(), a.AdminAddr()
	testenv.Eventually(t, 60*time.Second, "core never served", func() bool { return a.Ready() && a.PluginsServing() })
	return c
}

func (c *runningCore) post(body string) (int, error) {
	resp, err := http.Post("http://"+c.addr+"/lark/events", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// adminCall calls the admin API and decodes the answer.
func (c *runningCore) adminCall(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, "http://"+c.admin+path, rd)
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// pluginPaths maps replica id → the plugin's running spec path, per the admin API.
func (c *runningCore) pluginPaths(t *testing.T, plugin string) map[string]string {
	t.Helper()
	_, out := c.adminCall(t, http.MethodGet, "/v1/plugins/"+plugin, nil)
	p, _ := out["plugin"].(map[string]any)
	reps, _ := p["replicas"].(map[string]any)
	paths := map[string]string{}
	for id, r := range reps {
		rm, _ := r.(map[string]any)
		spec, _ := rm["spec"].(map[string]any)
		if rm["state"] == "serving" {
			paths[id], _ = spec["path"].(string)
		}
	}
	return paths
}

// repliesByParent counts the emulator's replies per replied-to message.
func repliesByParent(emu *larkemu.Emulator) map[string]int {
	out := map[string]int{}
	for _, m := range emu.Messages() {
		out[m.ParentID]++
	}
	return out
}

// maxLoadSeconds bounds a load run's offered events to rate × this.
const maxLoadSeconds = 8

// loadResult is what a load run got accepted, and over how long.
type loadResult struct {
	ids     []string
	elapsed time.Duration
}

// load posts events at about rate per second across cores until stop is
// closed; it returns the message ids it got a 200 for. A non-200 is retried,
// as Lark would.
func load(t *testing.T, cores []*runningCore, appID string, rate int, stop <-chan struct{}) <-chan loadResult {
	t.Helper()
	out := make(chan loadResult, 1)
	go func() {
		start := time.Now()
		var ids []string
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		n := 0
		var wg sync.WaitGroup
		var mu sync.Mutex
		sem := make(chan struct{}, 64)
		for {
			select {
			case <-stop:
				elapsed := time.Since(start)
				wg.Wait()
				out <- loadResult{ids: ids, elapsed: elapsed}
				return
			case <-tick.C:
			}
			// Pace by elapsed time, not ticks, so the offered rate holds;
			// at most maxLoadSeconds of load, so a slow (race-enabled,
			// shared) machine is not buried in backlog.
			for due := min(int(float64(rate)*time.Since(start).Seconds()), rate*maxLoadSeconds); n < due; {
				n++
				id := fmt.Sprintf("om_load_%d", n)
				body := messageEvent(appID, "ev_"+id, id, fmt.Sprintf("oc_load_%d", n%50), "load "+id)
				c := cores[n%len(cores)]
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					var lastCode int
					var lastErr error
					for attempt := 0; attempt < 50; attempt++ {
						code, err := c.post(body)
						lastCode, lastErr = code, err
						if err == nil && code == http.StatusOK {
							mu.Lock()
							ids = append(ids, id)
							mu.Unlock()
							return
						}
						time.Sleep(20 * time.Millisecond) // Lark's retry, compressed
					}
					t.Errorf("event %s never accepted (last: %d %v)", id, lastCode, lastErr)
				}()
			}
		}
	}()
	return out
}
