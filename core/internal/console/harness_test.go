package console_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"

	"github.com/larkway/larkway/core/internal/app"
	"github.com/larkway/larkway/core/internal/apptest"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/dlq"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
	"github.com/larkway/larkway/core/larkemu/playground"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

const (
	operatorToken = "operator-token-0123456789"
	viewerToken   = "viewer-token-0123456789ab"
	appID         = "cli_console"
	verifyToken   = "console-verification-token"
	encryptKey    = "console-encrypt-key"
)

// stack is a Lark emulator with the playground, and a core with the echo
// and approval plugins and the admin API and console.
type stack struct {
	core       *app.Core
	emu        *larkemu.Emulator
	emuURL     string // the emulator and playground
	consoleURL string
	pluginDir  string
	echoPath   string
	prefix     string // Redis key prefix ("" without Redis)
	redisAddr  string
}

// startStack runs the stack; withRedis keeps the core's stores in Redis
// (the dead-letter test writes one there).
func startStack(t *testing.T, withRedis bool) *stack {
	t.Helper()
	s := &stack{pluginDir: t.TempDir()}
	s.echoPath = testenv.BuildPlugin(t, "./plugins/echo", s.pluginDir)
	approval := testenv.BuildPlugin(t, "./plugins/approval", s.pluginDir)

	// The emulator's address first (the core's config names it); it serves
	// once the core's address is known, which the playground posts to.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.emuURL = "http://" + ln.Addr().String()

	redisYAML := ""
	if withRedis {
		s.redisAddr = testenv.RedisAddr(t)
		s.prefix = testenv.Name(t, "console") + ":"
		redisYAML = fmt.Sprintf("redis: {addr: %q, key_prefix: %q}", s.redisAddr, s.prefix)
	}
	yaml := fmt.Sprintf(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
%s
apps:
  - {id: %s, secret: s, verification_token: %s, encrypt_key: %s, base_url: %q}
plugins:
  - {name: echo, path: %q}
  - {name: approval, path: %q}
admin:
  listen: 127.0.0.1:0
  tokens:
    - {name: ops, token: %s, role: operator}
    - {name: watcher, token: %s, role: viewer}
  console: {playground_url: %q}
dispatch: {deadline: 5s, retry_backoff: 100ms}
supervision: {restart_backoff: 50ms, probation_window: 200ms}
`, redisYAML, appID, verifyToken, encryptKey, s.emuURL, s.echoPath, approval, operatorToken, viewerToken, s.emuURL+"/playground")
	cfg, err := config.Parse(strings.NewReader(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	// Registered before the core's cleanup, so it runs after it: the
	// emulator outlives the core's drain.
	stopEmu := func() {}
	t.Cleanup(func() { stopEmu() })
	s.core = apptest.Start(t, cfg, nil)
	testenv.Eventually(t, 60*time.Second, "the plugins never served", s.core.PluginsServing)
	s.consoleURL = "http://" + s.core.AdminAddr()

	pcfg := playground.Config{EventURL: "http://" + s.core.Addr() + "/lark/events", AppID: appID,
		VerificationToken: verifyToken, EncryptKey: encryptKey, ConsoleURL: s.consoleURL}
	s.emu = larkemu.New(larkemu.Options{Unlimited: true, Wrap: func(e *larkemu.Emulator, h http.Handler) http.Handler {
		p, err := playground.New(pcfg, e, nil)
		if err != nil {
			t.Errorf("playground: %v", err)
			return h
		}
		return p.Handler(h)
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.emu.Serve(ctx, ln) }()
	stopEmu = func() { cancel(); <-done }
	return s
}

// client is an HTTP client that keeps cookies and does not follow
// redirects (tests look at them).
func client(t *testing.T) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// do makes a request with an optional bearer token and form, returning the
// status and body.
func do(t *testing.T, c *http.Client, method, u, bearer string, form url.Values) (int, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// newVersion writes a second echo binary into the plugin directory (the
// same program with bytes appended, so its hash differs) and returns its
// path and sha256.
func (s *stack) newVersion(t *testing.T) (string, string) {
	t.Helper()
	b, err := os.ReadFile(s.echoPath)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, []byte("\nconsole-test-v2\n")...)
	p := filepath.Join(s.pluginDir, "echo-v2")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return p, hex.EncodeToString(sum[:])
}

// browser starts Debian's Chromium headless, with the flags this closed
// network needs, and returns a chromedp context for it.
func browser(t *testing.T) context.Context {
	t.Helper()
	bin := os.Getenv("LARKWAY_CHROMIUM")
	if bin == "" {
		for _, name := range []string{"chromium", "chromium-browser"} {
			if p, err := exec.LookPath(name); err == nil {
				bin = p
				break
			}
		}
	}
	if bin == "" {
		t.Fatal("Chromium is not installed: run scripts/chromium.sh install (make test does), or set LARKWAY_CHROMIUM to its binary")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	// A bound on the whole test's browsing; a wait that never ends fails.
	ctx, tcancel := context.WithTimeout(ctx, 10*time.Minute)
	t.Cleanup(func() { tcancel(); cancel(); acancel() })
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("starting Chromium (%s): %v", bin, err)
	}
	return ctx
}

// run runs browser actions, failing the test with what was being done.
func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action) {
	t.Helper()
	// Each step has a minute: a page that never shows what is awaited
	// fails here rather than at the test's deadline.
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := chromedp.Run(sctx, actions...); err != nil {
		var loc string
		_ = chromedp.Run(ctx, chromedp.Location(&loc))
		var html string
		_ = chromedp.Run(ctx, chromedp.OuterHTML("body", &html, chromedp.ByQuery))
		if len(html) > 4000 {
			html = html[:4000]
		}
		t.Fatalf("%s: %v\nat %s:\n%s", what, err, loc, html)
	}
}

// screenshot saves the page under docs/img/ (shown in the README).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	var png []byte
	run(t, ctx, "taking screenshot "+name, chromedp.FullScreenshot(&png, 100))
	// The README's pictures are refreshed on request (make screenshots):
	// a screenshot differs at every run (clock, ids), and a test run must
	// not leave the tree modified. Otherwise they go to the test's own dir,
	// taken all the same so a page that cannot be rendered still fails.
	dir := t.TempDir()
	if os.Getenv("LARKWAY_SCREENSHOTS") == "1" {
		dir = filepath.Join(testenv.ModuleRoot(t), "docs", "img")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// login logs the browser in with token.
func login(t *testing.T, ctx context.Context, s *stack, token string) {
	t.Helper()
	run(t, ctx, "logging in",
		chromedp.Navigate(s.consoleURL+"/login"),
		chromedp.WaitVisible("#token", chromedp.ByID),
		chromedp.SendKeys("#token", token, chromedp.ByID),
		chromedp.Submit("#token", chromedp.ByID),
		chromedp.WaitVisible("#who", chromedp.ByID),
	)
}

// addDeadLetter indexes a dead letter of echo in the core's Redis: a text
// message messageID saying text, as the dispatcher would after the last
// failed delivery.
func (s *stack) addDeadLetter(t *testing.T, id, messageID, text string) {
	t.Helper()
	content, _ := json.Marshal(map[string]string{"text": text})
	ev := &pluginv1.Event{EventId: "ev_" + id, EventType: "im.message.receive_v1", AppId: appID, ChatId: "oc_dlq",
		DedupKey: "ev_" + id, Sender: &pluginv1.UserId{OpenId: "ou_dlq"},
		Payload: &pluginv1.Event_Message{Message: &pluginv1.Message{MessageId: messageID, ChatId: "oc_dlq", ChatType: "group",
			MessageType: "text", ContentJson: string(content), Text: text}}}
	m, err := envelope.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.dlqStore(t).Add(context.Background(), dlq.Entry{ID: id, Plugin: "echo", Topic: envelope.Topic(appID), Key: m.Key,
		Reason: "handler failed 5 times: test failure", EventID: "ev_" + id, EventType: "im.message.receive_v1",
		Payload: m.Payload, Properties: m.Properties, DeadAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

// deadLetters counts echo's dead letters.
func (s *stack) deadLetters(t *testing.T) int {
	t.Helper()
	n, err := s.dlqStore(t).Count(context.Background(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (s *stack) dlqStore(t *testing.T) *dlq.Redis {
	t.Helper()
	if s.redisAddr == "" {
		t.Fatal("this stack has no Redis: startStack(t, true)")
	}
	rc := redis.NewClient(&redis.Options{Addr: s.redisAddr})
	t.Cleanup(func() { _ = rc.Close() })
	return dlq.NewRedis(rc, s.prefix+"dlq:")
}
