package pluginhost

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
	w := newLineLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	w.setAttrs("plugin", "echo")
	_, _ = w.Write([]byte(`{"level":"ERROR","msg":"boom","k":1}` + "\nplain "))
	_, _ = w.Write([]byte("text\n\n"))
	_, _ = w.Write([]byte(strings.Repeat("x", maxLine+10)))
	out := buf.String()
	for _, want := range []string{`"level":"ERROR","msg":"boom","plugin":"echo","k":1`, `"msg":"plain text"`} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in\n%s", want, out)
		}
	}
	if strings.Count(out, "\n") != 3 {
		t.Errorf("want 3 records (json, plain, oversized flush), got:\n%s", out)
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
