package app_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/testenv"
)

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
			appID := uniqueApp(t, "e2e_"+kind)
			emu, emuAddr := emulator(t, appID)
			echo := testenv.BuildPlugin(t, "./plugins/echo", t.TempDir())
			busYAML := "bus: {kind: memory}"
			if kind == "pulsar" {
				busYAML = fmt.Sprintf("bus: {kind: pulsar, pulsar: {url: %q}}", testenv.PulsarURL(t))
			}
			s := runCore(t, fmt.Sprintf(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
%s
apps:
  - {id: %s, secret: secret, verification_token: vt, base_url: "http://%s"}
plugins:
  - {name: echo, path: %s}
dispatch: {retry_backoff: 100ms}
actions: {rate_limits: {disabled: true}}
`, busYAML, appID, emuAddr, echo))
			post := func(body string) {
				t.Helper()
				if code, err := s.post(body); err != nil || code != http.StatusOK {
					t.Fatalf("webhook answered %d %v", code, err)
				}
			}
			body := messageEvent(appID, "ev-1", "om_e2e_1", "oc_e2e", "hello")
			post(body)
			testenv.Eventually(t, 30*time.Second, "no reply reached the emulator", func() bool { return len(emu.Messages()) > 0 })
			// Lark re-pushes the same event, then a second event follows in
			// the same chat (so it is handled after the re-push).
			post(strings.Replace(body, `"ev-1"`, `"ev-1-retry"`, 1))
			post(messageEvent(appID, "ev-2", "om_e2e_2", "oc_e2e", "second"))
			testenv.Eventually(t, 30*time.Second, "second reply missing", func() bool { return len(emu.Messages()) >= 2 })
			if err := s.stop(); err != nil {
				t.Fatalf("core stopped with %v", err)
			}
			msgs := emu.Messages()
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
