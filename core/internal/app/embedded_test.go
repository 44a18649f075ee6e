package app_test

import (
	"bytes"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/bench"
	"github.com/larkway/larkway/core/internal/testenv"
)

// A single machine without Redis on the embedded bus: after a restart on
// the same data directory, a replayed signed request is still refused, a
// Lark re-push of an event already answered posts no second reply, and new
// events flow.
func TestEmbeddedBusSurvivesRestart(t *testing.T) {
	appID := uniqueApp(t, "embedded")
	emu, emuAddr := emulator(t, appID)
	echo := testenv.BuildPlugin(t, "./plugins/echo", t.TempDir())
	ba := bench.App{ID: appID, VerificationToken: "vt", EncryptKey: "embedded-ek"}
	yaml := fmt.Sprintf(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
bus: {kind: embedded, embedded: {dir: %q}}
apps:
  - {id: %s, secret: secret, verification_token: vt, encrypt_key: %s, base_url: "http://%s"}
plugins:
  - {name: echo, path: %s}
dispatch: {retry_backoff: 100ms}
actions: {rate_limits: {disabled: true}}
`, filepath.Join(t.TempDir(), "bus"), appID, ba.EncryptKey, emuAddr, echo)
	send := func(c *runningCore, body []byte, h http.Header) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "http://"+c.addr+"/lark/events", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	seal := func(plain string) ([]byte, http.Header) {
		t.Helper()
		body, h, err := bench.Seal(ba, []byte(plain))
		if err != nil {
			t.Fatal(err)
		}
		return body, h
	}

	c := runCore(t, yaml)
	first := messageEvent(appID, "ev-1", "om_emb_1", "oc_emb", "hello")
	body, h := seal(first)
	if code := send(c, body, h); code != http.StatusOK {
		t.Fatalf("webhook answered %d", code)
	}
	testenv.Eventually(t, 30*time.Second, "no reply reached the emulator", func() bool { return len(emu.Messages()) == 1 })
	if err := c.stop(); err != nil {
		t.Fatalf("core stopped with %v", err)
	}

	c = runCore(t, yaml)
	if code := send(c, body, h); code != http.StatusUnauthorized {
		t.Errorf("a replayed request after the restart answered %d, want 401", code)
	}
	body, h = seal(strings.Replace(first, `"ev-1"`, `"ev-1-retry"`, 1)) // Lark's re-push: sealed afresh
	if code := send(c, body, h); code != http.StatusOK {
		t.Fatalf("the re-push answered %d", code)
	}
	body, h = seal(messageEvent(appID, "ev-2", "om_emb_2", "oc_emb", "second"))
	if code := send(c, body, h); code != http.StatusOK {
		t.Fatalf("webhook answered %d", code)
	}
	testenv.Eventually(t, 30*time.Second, "second reply missing", func() bool { return len(emu.Messages()) >= 2 })
	if err := c.stop(); err != nil {
		t.Fatalf("core stopped with %v", err)
	}
	msgs := emu.Messages()
	if len(msgs) != 2 || msgs[0].ParentID != "om_emb_1" || msgs[1].ParentID != "om_emb_2" {
		t.Fatalf("emulator recorded %+v, want one reply to om_emb_1 then one to om_emb_2", msgs)
	}
}
