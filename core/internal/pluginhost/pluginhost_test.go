package pluginhost

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/larkway/larkway/core/internal/testenv"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

var (
	buildOnce sync.Once
	echoPath  string
	buildDir  string
)

func echoPlugin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() { echoPath = testenv.BuildPlugin(t, "./plugins/echo", buildDir) })
	return echoPath
}

func TestMain(m *testing.M) {
	// Made here, not on first use: tests point TMPDIR at their own
	// directories, which are removed when they end.
	var err error
	if buildDir, err = os.MkdirTemp("", "pluginhost-test"); err != nil {
		panic(err)
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestLaunchPinnedPlugin(t *testing.T) {
	path := echoPlugin(t)
	sum, err := FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := Launch(context.Background(), Config{Path: path, SHA256: sum}, discard())
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	defer inst.Close()
	if m := inst.Manifest(); m.GetName() != "echo" || m.GetVersion() == "" {
		t.Fatalf("manifest %v", m)
	}
	inst.Close()
	inst.Close() // idempotent
	testenv.Eventually(t, 10*time.Second, "plugin process did not exit", inst.Exited)
}

func TestLaunchRefusals(t *testing.T) {
	path := echoPlugin(t)
	notPlugin := filepath.Join(t.TempDir(), "not-a-plugin")
	if err := os.WriteFile(notPlugin, []byte("#!/bin/sh\necho hello\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	hang := filepath.Join(t.TempDir(), "hang")
	if err := os.WriteFile(hang, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{"wrong checksum refused before exec", Config{Path: path, SHA256: strings.Repeat("0", 64)}, ErrChecksum},
		{"malformed checksum", Config{Path: path, SHA256: "xyz"}, nil},
		{"missing file", Config{Path: filepath.Join(t.TempDir(), "nope"), SHA256: strings.Repeat("0", 64)}, nil},
		{"not a plugin", Config{Path: notPlugin, StartTimeout: 3 * time.Second}, nil},
		{"never handshakes", Config{Path: hang, StartTimeout: 500 * time.Millisecond}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst, err := Launch(context.Background(), tt.cfg, discard())
			if err == nil {
				inst.Close()
				t.Fatal("launched")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestValidateManifest(t *testing.T) {
	ok := func() *pluginv1.Manifest { return &pluginv1.Manifest{Name: "echo", Version: "1.0.0"} }
	tests := []struct {
		name   string
		mutate func(m *pluginv1.Manifest)
		valid  bool
	}{
		{"ok", func(*pluginv1.Manifest) {}, true},
		{"empty name", func(m *pluginv1.Manifest) { m.Name = "" }, false},
		{"uppercase name", func(m *pluginv1.Manifest) { m.Name = "Echo" }, false},
		{"name with slash", func(m *pluginv1.Manifest) { m.Name = "../x" }, false},
		{"no version", func(m *pluginv1.Manifest) { m.Version = "" }, false},
		{"huge in flight", func(m *pluginv1.Manifest) { m.MaxInFlight = 1 << 30 }, false},
		{"bad regexp", func(m *pluginv1.Manifest) {
			m.Subscriptions = []*pluginv1.Subscription{{TextPatterns: []string{"("}}}
		}, false},
		{"command without slash", func(m *pluginv1.Manifest) {
			m.Subscriptions = []*pluginv1.Subscription{{Commands: []string{"deploy"}}}
		}, false},
		{"unknown action", func(m *pluginv1.Manifest) { m.AllowedActions = []pluginv1.ActionKind{99} }, false},
		{"unspecified action", func(m *pluginv1.Manifest) { m.AllowedActions = []pluginv1.ActionKind{0} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ok()
			tt.mutate(m)
			if err := ValidateManifest(m); (err == nil) != tt.valid {
				t.Fatalf("err = %v", err)
			}
		})
	}
	if ValidateManifest(nil) == nil {
		t.Fatal("nil manifest accepted")
	}
}

func TestLineLogger(t *testing.T) {
	var buf bytes.Buffer
	w := newLineLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).With("plugin", "echo"))
	w.setAttrs("version", "1.0.0")
	_, _ = w.Write([]byte(`{"level":"ERROR","msg":"boom","k":1}` + "\nplain "))
	_, _ = w.Write([]byte("text\n\n"))
	_, _ = w.Write([]byte(`{"level":"INFO","msg":"mine","plugin":"other","version":"2"}` + "\n"))
	_, _ = w.Write([]byte(strings.Repeat("x", maxLine+10)))
	_, _ = w.Write([]byte("\npanic: oops\n\ngoroutine 1 [running]:\n"))
	out := buf.String()
	for _, want := range []string{
		`"level":"ERROR","msg":"boom","plugin":"echo","version":"1.0.0","k":1`,
		`"level":"INFO","msg":"plain text"`,
		`"msg":"mine","plugin":"echo","version":"1.0.0",`,
		`"level":"ERROR","msg":"panic: oops"`,
		`"level":"ERROR","msg":"goroutine 1 [running]:"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in\n%s", want, out)
		}
	}
	recs := checkRecords(t, out)
	if len(recs) != 6 {
		t.Fatalf("want 6 records (json, plain, json, oversized flush, 2 panic lines), got:\n%s", out)
	}
	if r := recs[2]; r["field_plugin"] != "other" || r["field_version"] != "2" {
		t.Errorf("the plugin's own plugin and version fields: %v", r)
	}
}

func hostilePlugin(t *testing.T) string {
	t.Helper()
	return testenv.BuildPlugin(t, "./core/internal/pluginhost/testdata/hostile", t.TempDir())
}

// Hostile plugins are refused at launch, within bounded time.
func TestHostileLaunches(t *testing.T) {
	path := hostilePlugin(t)
	tests := []struct {
		mode string
		want error
	}{
		{"hang-describe", context.DeadlineExceeded},
		{"bad-manifest", ErrManifest},
		{"garbage-stdout", nil},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			start := time.Now()
			inst, err := Launch(context.Background(), Config{Path: path, Env: []string{"HOSTILE_MODE=" + tt.mode},
				StartTimeout: 2 * time.Second, DescribeTimeout: 500 * time.Millisecond}, discard())
			if err == nil {
				inst.Close()
				t.Fatal("launched")
			}
			if tt.want != nil && !errors.Is(err, tt.want) && !strings.Contains(err.Error(), "DeadlineExceeded") {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("refusal took %s", d)
			}
		})
	}
}

// jsonLogger logs JSON at every level into a new buffer, naming the plugin
// as the manager's logger does.
func jsonLogger(name string) (*slog.Logger, *testenv.LogBuffer) {
	buf := &testenv.LogBuffer{}
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})).With("plugin", name), buf
}

// checkRecords fails unless every line of out is a JSON object with no key
// twice; it returns the records.
func checkRecords(t *testing.T, out string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for line := range strings.Lines(out) {
		dec := json.NewDecoder(strings.NewReader(line))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			t.Fatalf("not a JSON object: %q", line)
		}
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			k := tok.(string)
			if seen[k] {
				t.Errorf("key %q twice in %s", k, line)
			}
			seen[k] = true
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		recs = append(recs, rec)
	}
	return recs
}

type noState struct {
	pluginv1.UnimplementedStateServiceServer
}

// A plugin written without an SDK or go-plugin (testdata/bare, from
// sdk/README.md's steps) serves no broker: the core still offers it the
// state store, says so in a JSON line when go-plugin reports the refused
// stream (not always: see below), and writes nothing to
// the standard library's logger — which go-plugin's AcceptAndServe would,
// as plain text on the core's stderr. The plugin sees the core's version,
// and the core stops it through plugin.GRPCController/Shutdown.
func TestPluginWithoutSDK(t *testing.T) {
	var std testenv.LogBuffer
	prev, prevFlags := log.Writer(), log.Flags()
	log.SetOutput(&std)
	t.Cleanup(func() { log.SetOutput(prev); log.SetFlags(prevFlags) })

	path := testenv.BuildPlugin(t, "./core/internal/pluginhost/testdata/bare", t.TempDir())
	report := filepath.Join(t.TempDir(), "report")
	logger, out := jsonLogger("bare")
	inst, err := Launch(context.Background(), Config{Path: path, Env: []string{"BARE_REPORT=" + report},
		State: noState{}, CoreVersion: "9.8.7-test"}, logger)
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	defer inst.Close()
	// The plugin reports its DescribeRequest. Whether the core then logs
	// "state store not offered" depends on a race inside go-plugin: the
	// broker's first send can be taken before the plugin's refusal of
	// the stream arrives, and then the core waits for a dial that never
	// comes until Close. Either way nothing may reach the standard
	// logger, which is checked after Close, once the broker has ended.
	testenv.Eventually(t, 10*time.Second, "the plugin never reported its DescribeRequest", func() bool {
		b, err := os.ReadFile(report)
		return err == nil && len(b) > 0
	})
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var req pluginv1.DescribeRequest
	if err := protojson.Unmarshal([]byte(strings.TrimSpace(string(b))), &req); err != nil {
		t.Fatalf("report %q: %v", b, err)
	}
	if req.GetCoreVersion() != "9.8.7-test" || req.GetCoreContractVersion() != "v1" || req.GetStateBrokerId() == 0 || !req.GetAcceptsResultBatches() {
		t.Errorf("the plugin was described to with %v", &req)
	}
	inst.Close()
	testenv.Eventually(t, 10*time.Second, "plugin process did not exit", inst.Exited)
	if b, _ := os.ReadFile(report); !strings.HasSuffix(string(b), "shutdown\n") {
		t.Errorf("the core did not call plugin.GRPCController/Shutdown; report:\n%s", b)
	}
	if s := std.String(); s != "" {
		t.Errorf("written to the standard logger (plain text on the core's stderr):\n%s", s)
	}
	relogged := false
	for _, rec := range checkRecords(t, out.String()) {
		if rec["msg"] == "plugin failed to exit gracefully" {
			t.Errorf("the plugin was killed: %v", rec)
		}
		if rec["plugin"] != "bare" {
			t.Errorf("record does not name the plugin: %v", rec)
		}
		if rec["msg"] == "shutting down" {
			relogged = true
			if rec["version"] != "0.1.0" || rec["field_plugin"] != "mine" {
				t.Errorf("re-logged stderr line %v", rec)
			}
		}
	}
	if !relogged {
		t.Errorf("the plugin's stderr line was not re-logged:\n%s", out)
	}
}

// What the core checks of the certificate a plugin presents (sdk/README.md
// lists it): it need not be a CA, its key usage bits are not checked, nor
// need it carry extended key usages; but it must name localhost (SAN) and,
// if it lists extended key usages, server auth.
func TestPluginCertificates(t *testing.T) {
	path := testenv.BuildPlugin(t, "./core/internal/pluginhost/testdata/bare", t.TempDir())
	tests := []struct {
		cert    string
		refusal string // in the error; "" when accepted
	}{
		{"leaf", ""},
		{"ca", ""},
		{"no-eku", ""},
		{"crl-sign", ""},
		{"no-san", "use SANs"},
		{"client-only", "incompatible key usage"},
	}
	for _, tt := range tests {
		t.Run(tt.cert, func(t *testing.T) {
			inst, err := Launch(context.Background(), Config{Path: path, Env: []string{"BARE_CERT=" + tt.cert},
				StartTimeout: 5 * time.Second, DescribeTimeout: 2 * time.Second}, discard())
			if err == nil {
				inst.Close()
			}
			switch {
			case tt.refusal == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.refusal != "" && err == nil:
				t.Fatal("accepted")
			case tt.refusal != "" && !strings.Contains(err.Error(), tt.refusal):
				t.Fatalf("refused with %v, want %q", err, tt.refusal)
			}
		})
	}
}

// go-plugin's own messages name the executable under plugin_path, not a
// second plugin key beside the plugin's name.
func TestGoPluginMessagesNameThePath(t *testing.T) {
	path := hostilePlugin(t)
	logger, out := jsonLogger("hostile")
	inst, err := Launch(context.Background(), Config{Path: path}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	if err := syscall.Kill(inst.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the exit was not logged", func() bool {
		return strings.Contains(out.String(), `"msg":"plugin process exited"`)
	})
	for _, rec := range checkRecords(t, out.String()) {
		if rec["msg"] != "plugin process exited" {
			continue
		}
		if rec["plugin"] != "hostile" || rec["plugin_path"] == nil || rec["source"] != "go-plugin" || rec["level"] != "ERROR" {
			t.Errorf("record %v", rec)
		}
	}
}

func TestHCLogger(t *testing.T) {
	logger, out := jsonLogger("echo")
	h := newHCLogger(logger, "/opt/plugins/echo")
	h.Debug("below the level")
	h.With("id", 7).Error("plugin process exited", "plugin", "/opt/plugins/echo", "error", "boom", "lone")
	stderr := h.Named("echo")
	if stderr.GetLevel() != hclog.Off {
		t.Errorf("the stderr child's level is %v, want off", stderr.GetLevel())
	}
	stderr.Error("a stderr line the Stderr writer logs already")
	h.Named("stdio").Warn("stdio", "k", 1)
	recs := checkRecords(t, out.String())
	if len(recs) != 2 {
		t.Fatalf("want 2 records, got:\n%s", out)
	}
	if r := recs[0]; r["level"] != "ERROR" || r["plugin"] != "echo" || r["plugin_path"] != "/opt/plugins/echo" || r["id"] != float64(7) ||
		r["extra_value"] != "lone" || r["source"] != "go-plugin" {
		t.Errorf("record %v", r)
	}
	if r := recs[1]; r["level"] != "WARN" || r["module"] != "go-plugin.stdio" || r["k"] != float64(1) {
		t.Errorf("record %v", r)
	}
}
