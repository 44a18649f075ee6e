package app_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/app"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
)

// stack is a running emulator + core with the real echo plugin process.
type stack struct {
	emu   *larkemu.Emulator
	addr  string
	appID string
	stop  func() error
}

func startStack(t *testing.T, busKind string) *stack {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	appID := fmt.Sprintf("cli_e2e_%s_%d", busKind, time.Now().UnixNano())

	emu := larkemu.New(larkemu.Options{Apps: map[string]string{appID: "secret"}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	emuDone := make(chan error, 1)
	go func() { emuDone <- emu.Serve(ctx, ln) }()

	echo := testenv.BuildPlugin(t, "./plugins/echo", t.TempDir())
	yaml := fmt.Sprintf(`
listen: 127.0.0.1:0
bus:
  kind: %s
  pulsar:
    url: %s
apps:
  - id: %s
    secret: secret
    verification_token: vt
    base_url: http://%s
plugins:
  - name: echo
    path: %s
dispatch:
  retry_backoff: 100ms
`, busKind, pulsarURL(t, busKind), appID, ln.Addr(), echo)
	cfg, err := config.Parse(strings.NewReader(yaml))
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a := app.New(cfg, logger, prometheus.NewRegistry(), "test")
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(ctx) }()
	actx, acancel := context.WithTimeout(ctx, 30*time.Second)
	defer acancel()
	addr, err := a.Addr(actx)
	if err != nil {
		t.Fatalf("core did not listen: %v", err)
	}
	testenv.Eventually(t, 60*time.Second, "core never became ready", a.Ready)
	s := &stack{emu: emu, addr: addr, appID: appID}
	var stopped bool
	s.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		err := <-runDone
		if e := <-emuDone; e != nil && !errors.Is(e, http.ErrServerClosed) && !errors.Is(e, context.Canceled) {
			t.Errorf("emulator: %v", e)
		}
		return err
	}
	t.Cleanup(func() { _ = s.stop() })
	return s
}

func pulsarURL(t *testing.T, kind string) string {
	if kind != "pulsar" {
		return ""
	}
	return testenv.PulsarURL(t)
}

func (s *stack) post(t *testing.T, body string) int {
	t.Helper()
	resp, err := http.Post("http://"+s.addr+"/lark/events", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func messageEvent(appID, eventID, messageID, chat, text string) string {
	return fmt.Sprintf(`{"schema":"2.0","header":{"event_id":%q,"token":"vt","create_time":"1700000000000","event_type":"im.message.receive_v1","tenant_key":"t","app_id":%q},
"event":{"sender":{"sender_id":{"open_id":"ou_1"},"sender_type":"user"},"message":{"message_id":%q,"chat_id":%q,"chat_type":"group","message_type":"text","content":%q}}}`,
		eventID, appID, messageID, chat, fmt.Sprintf(`{"text":%q}`, text))
}

// One event posted to the webhook yields exactly one reply in the emulator,
// through the bus and a real plugin process — and a Lark retry of the same
// event does not post a second one.
func TestEndToEnd(t *testing.T) {
	for _, kind := range []string{"memory", "pulsar"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := startStack(t, kind)
			body := messageEvent(s.appID, "ev-1", "om_e2e_1", "oc_e2e", "hello")
			if code := s.post(t, body); code != http.StatusOK {
				t.Fatalf("webhook answered %d", code)
			}
			testenv.Eventually(t, 30*time.Second, "no reply reached the emulator", func() bool { return len(s.emu.Messages()) > 0 })
			// Lark re-pushes the same event: the reply's idempotency key is
			// derived from the message id, so Lark executes it once.
			if code := s.post(t, strings.Replace(body, `"ev-1"`, `"ev-1-retry"`, 1)); code != http.StatusOK {
				t.Fatalf("retry answered %d", code)
			}
			// Wait until the retry has been processed (a second, independent
			// event goes through after it, in the same chat, in order).
			if code := s.post(t, messageEvent(s.appID, "ev-2", "om_e2e_2", "oc_e2e", "second")); code != http.StatusOK {
				t.Fatalf("second event answered %d", code)
			}
			testenv.Eventually(t, 30*time.Second, "second reply missing", func() bool { return len(s.emu.Messages()) >= 2 })
			if err := s.stop(); err != nil {
				t.Fatalf("core stopped with %v", err)
			}
			msgs := s.emu.Messages()
			if len(msgs) != 2 {
				t.Fatalf("emulator recorded %d messages, want 2: %+v", len(msgs), msgs)
			}
			if msgs[0].ParentID != "om_e2e_1" || msgs[0].MsgType != "text" || !strings.Contains(msgs[0].Content, "echo: hello") {
				t.Errorf("first reply %+v", msgs[0])
			}
			if msgs[1].ParentID != "om_e2e_2" || !strings.Contains(msgs[1].Content, "echo: second") {
				t.Errorf("second reply %+v", msgs[1])
			}
		})
	}
}
