package conformance_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/app"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/pluginhost"
	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
)

// language is one SDK under test: how the core runs its test plugin.
type language struct {
	name   string // "go", "python"
	plugin string // the manifest name
	// launch starts the plugin process (pluginhost and the core's config).
	launch pluginhost.Config
	// remote: the same plugin file serves on its own address with mutual
	// TLS, and the core dials it (plugins[].remote) instead of launching it.
	remote bool
}

// start runs the language's plugin (itself, when remote) and a core using it.
func (l language) start(t *testing.T) *stack {
	t.Helper()
	if !l.remote {
		return startStack(t, l.yaml(), "")
	}
	pki := testenv.NewPKI(t)
	coreCert, coreKey := pki.Issue(t, testenv.Cert{})
	cert, key := pki.Issue(t, testenv.Cert{URIs: []string{"urn:larkway:plugin:" + l.plugin}})
	listen, stateAddr := freeAddr(t), freeAddr(t)
	logs := &testenv.LogBuffer{}
	cmd := exec.Command(l.launch.Path, append(l.launch.Args, "--listen", listen, "--tls-cert", cert, "--tls-key", key,
		"--client-ca", pki.CAFile, "--state-address", stateAddr)...)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	testenv.Eventually(t, 30*time.Second, "the remote plugin never listened: "+logs.String(), func() bool {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	entry := fmt.Sprintf("  - name: %s\n    remote: {address: %q, tls: {ca_file: %s, cert_file: %s, key_file: %s}}", l.plugin, listen, pki.CAFile, coreCert, coreKey)
	extra := fmt.Sprintf("plugin_state:\n  listen: %s\n  tls: {ca_file: %s, cert_file: %s, key_file: %s}\n", stateAddr, pki.CAFile, coreCert, coreKey)
	s := startStack(t, entry, extra)
	s.pluginLogs = logs
	return s
}

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

// yaml is the plugin's entry in the core's config.
func (l language) yaml() string {
	args, _ := json.Marshal(l.launch.Args)
	return fmt.Sprintf("  - {name: %s, path: %q, args: %s}", l.plugin, l.launch.Path, args)
}

// languages builds the Go test plugin and locates the Python one.
func languages(t *testing.T) []language {
	t.Helper()
	root := testenv.ModuleRoot(t)
	goLaunch := pluginhost.Config{Path: testenv.BuildPlugin(t, "./core/internal/conformance/testdata/goplugin", t.TempDir())}
	pyLaunch := pluginhost.Config{Path: testenv.PythonWithSDK(t), Args: []string{filepath.Join(root, "core/internal/conformance/testdata/pyplugin/main.py")}}
	return []language{
		{name: "go", plugin: "conf-go", launch: goLaunch},
		{name: "python", plugin: "conf-py", launch: pyLaunch},
		{name: "go-remote", plugin: "conf-go", launch: goLaunch, remote: true},
		{name: "python-remote", plugin: "conf-py", launch: pyLaunch, remote: true},
	}
}

// logRecord is one log record of the core (plugin stderr lines included,
// re-logged under plugin=<name>).
type logRecord struct {
	msg   string
	attrs map[string]string
}

// logRecorder is a slog.Handler keeping info-and-above records, and writing
// errors to stderr.
type logRecorder struct {
	mu    *sync.Mutex
	recs  *[]logRecord
	attrs []slog.Attr
	out   slog.Handler
}

func newLogRecorder() *logRecorder {
	return &logRecorder{mu: &sync.Mutex{}, recs: &[]logRecord{},
		out: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})}
}

func (h *logRecorder) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *logRecorder) Handle(ctx context.Context, r slog.Record) error {
	rec := logRecord{msg: r.Message, attrs: map[string]string{}}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { rec.attrs[a.Key] = a.Value.String(); return true })
	h.mu.Lock()
	*h.recs = append(*h.recs, rec)
	h.mu.Unlock()
	if r.Level >= slog.LevelError {
		return h.out.WithAttrs(h.attrs).Handle(ctx, r)
	}
	return nil
}

func (h *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

func (h *logRecorder) WithGroup(string) slog.Handler { return h }

// find reports whether a record with msg was logged with these attributes.
func (h *logRecorder) find(msg string, attrs map[string]string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range *h.recs {
		if r.msg != msg {
			continue
		}
		ok := true
		for k, v := range attrs {
			ok = ok && r.attrs[k] == v
		}
		if ok {
			return true
		}
	}
	return false
}

// attr returns attribute key of the first record with msg ("" if none).
func (h *logRecorder) attr(msg, key string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range *h.recs {
		if r.msg == msg {
			return r.attrs[key]
		}
	}
	return ""
}

// stack is an emulator and an in-process core (memory bus, in-process
// stores) with real plugin processes.
type stack struct {
	emu   *larkemu.Emulator
	addr  string
	appID string
	logs  *logRecorder
	stop  func() error
	// pluginLogs is a remote plugin's stderr (a launched one's lines are
	// re-logged by the core, in logs).
	pluginLogs *testenv.LogBuffer
}

// pluginLogged reports whether the plugin logged msg: re-logged by the core
// under plugin=name when launched, on its own stderr when remote.
func (s *stack) pluginLogged(msg, plugin string) bool {
	if s.pluginLogs != nil {
		return strings.Contains(s.pluginLogs.String(), msg)
	}
	return s.logs.find(msg, map[string]string{"plugin": plugin})
}

// startStack runs the emulator and a core with these plugin entries (and
// extra top-level config) and waits until every plugin serves.
func startStack(t *testing.T, plugins, extra string) *stack {
	t.Helper()
	appID := fmt.Sprintf("cli_conf_%d", time.Now().UnixNano())
	emu := larkemu.New(larkemu.Options{Apps: map[string]string{appID: "secret"}, Unlimited: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	emuCtx, emuCancel := context.WithCancel(context.Background())
	emuDone := make(chan struct{})
	go func() { defer close(emuDone); _ = emu.Serve(emuCtx, ln) }()

	yaml := fmt.Sprintf(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
apps:
  - {id: %s, secret: secret, verification_token: vt, base_url: "http://%s"}
plugins:
%s
dispatch:
  deadline: 2s
  retry_backoff: 100ms
supervision:
  restart_backoff: 50ms
%s`, appID, ln.Addr(), plugins, extra)
	cfg, err := config.Parse(strings.NewReader(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	logs := newLogRecorder()
	a, err := app.Build(context.Background(), cfg, app.Deps{Logger: slog.New(logs), Registry: prometheus.NewRegistry(), Version: "conformance"})
	if err != nil {
		t.Fatalf("building the core: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(ctx) }()
	s := &stack{emu: emu, appID: appID, logs: logs}
	var once sync.Once
	var stopErr error
	s.stop = func() error {
		once.Do(func() {
			cancel()
			stopErr = <-runDone
			emuCancel()
			<-emuDone
		})
		return stopErr
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("core stopped with %v", err)
		}
	})
	s.addr = a.Addr()
	testenv.Eventually(t, 60*time.Second, "the core never served its plugins", func() bool { return a.Ready() && a.PluginsServing() })
	return s
}

// post sends a webhook body and returns the status, the body and how long
// the core took to answer.
func (s *stack) post(t *testing.T, body string) (int, string, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := http.Post("http://"+s.addr+"/lark/events", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), time.Since(start)
}

// send posts a message event and requires the core to accept it.
func (s *stack) send(t *testing.T, messageID, chat, text string, mentions ...mention) {
	t.Helper()
	if code, body, _ := s.post(t, messageEvent(s.appID, "ev_"+messageID, messageID, chat, text, mentions...)); code != http.StatusOK {
		t.Fatalf("webhook answered %d %s", code, body)
	}
}

// replies are the bot's messages replying to parentID.
func (s *stack) replies(parentID string) []larkemu.Message {
	var out []larkemu.Message
	for _, m := range s.emu.Messages() {
		if m.ParentID == parentID {
			out = append(out, m)
		}
	}
	return out
}

// awaitReply waits for the first reply to parentID and returns it.
func (s *stack) awaitReply(t *testing.T, parentID string) larkemu.Message {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, "no reply to "+parentID, func() bool { return len(s.replies(parentID)) > 0 })
	return s.replies(parentID)[0]
}

// text decodes a text message's content.
func text(t *testing.T, m larkemu.Message) string {
	t.Helper()
	var c struct {
		Text string `json:"text"`
	}
	if m.MsgType != "text" || json.Unmarshal([]byte(m.Content), &c) != nil {
		t.Fatalf("message %s is not a text message: %s %s", m.MessageID, m.MsgType, m.Content)
	}
	return c.Text
}

// mention is an @-mention in a message event.
type mention struct{ key, name, openID string }

// messageEvent is a schema 2.0 im.message.receive_v1 text message; text
// holds the mention keys (@_user_1) as Lark sends them.
func messageEvent(appID, eventID, messageID, chat, text string, mentions ...mention) string {
	content, _ := json.Marshal(map[string]string{"text": text})
	ms := []any{}
	for _, m := range mentions {
		ms = append(ms, map[string]any{"key": m.key, "name": m.name, "id": map[string]string{"open_id": m.openID}})
	}
	b, _ := json.Marshal(map[string]any{
		"schema": "2.0",
		"header": map[string]string{"event_id": eventID, "token": "vt", "create_time": "1700000000000",
			"event_type": "im.message.receive_v1", "tenant_key": "t", "app_id": appID},
		"event": map[string]any{
			"sender": map[string]any{"sender_id": map[string]string{"open_id": "ou_sender"}, "sender_type": "user"},
			"message": map[string]any{"message_id": messageID, "chat_id": chat, "chat_type": "group",
				"message_type": "text", "content": string(content), "mentions": ms},
		},
	})
	return string(b)
}

// cardEvent is a schema 2.0 card.action.trigger callback: operator clicked
// a button carrying value on card messageID.
func cardEvent(appID, eventID, token, messageID, chat, operator string, value json.RawMessage) string {
	b, _ := json.Marshal(map[string]any{
		"schema": "2.0",
		"header": map[string]string{"event_id": eventID, "token": "vt", "create_time": "1700000000000",
			"event_type": "card.action.trigger", "tenant_key": "t", "app_id": appID},
		"event": map[string]any{
			"operator": map[string]string{"open_id": operator},
			"token":    token,
			"action":   map[string]any{"value": value, "tag": "button"},
			"host":     "im_message",
			"context":  map[string]string{"open_message_id": messageID, "open_chat_id": chat},
		},
	})
	return string(b)
}

// buttonValues returns the value of every button in a card's JSON.
func buttonValues(t *testing.T, card string) []json.RawMessage {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(card), &v); err != nil {
		t.Fatalf("card is not JSON: %v\n%s", err, card)
	}
	var out []json.RawMessage
	var walk func(any)
	walk = func(x any) {
		switch x := x.(type) {
		case map[string]any:
			if x["tag"] == "button" {
				b, _ := json.Marshal(x["value"])
				out = append(out, b)
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(v)
	return out
}
