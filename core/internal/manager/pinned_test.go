package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/pluginhost"
	"github.com/larkway/larkway/core/internal/testenv"
)

// logRecorder keeps every record's message and attributes.
type logRecorder struct {
	mu    *sync.Mutex
	recs  *[]map[string]string
	attrs []slog.Attr
}

func newLogRecorder() *logRecorder {
	return &logRecorder{mu: &sync.Mutex{}, recs: &[]map[string]string{}}
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := map[string]string{"msg": r.Message, "level": r.Level.String()}
	for _, a := range h.attrs {
		rec[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { rec[a.Key] = a.Value.String(); return true })
	h.mu.Lock()
	*h.recs = append(*h.recs, rec)
	h.mu.Unlock()
	return nil
}

func (h *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr{}, h.attrs...), as...)
	return &c
}

func (h *logRecorder) WithGroup(string) slog.Handler { return h }

func (h *logRecorder) find(match func(map[string]string) bool) map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range *h.recs {
		if match(r) {
			return r
		}
	}
	return nil
}

// realLauncher starts real plugin processes through pluginhost, as the core
// does, and keeps the last instance started.
type realLauncher struct {
	logger *slog.Logger
	mu     sync.Mutex
	last   *pluginhost.Instance
}

func (l *realLauncher) Launch(ctx context.Context, s Spec) (Instance, error) {
	files := make([]pluginhost.File, len(s.Files))
	for i, f := range s.Files {
		files[i] = pluginhost.File{Path: f.Path, SHA256: f.SHA256}
	}
	inst, err := pluginhost.Launch(ctx, pluginhost.Config{Path: s.Path, SHA256: s.SHA256, Files: files, Args: s.Args, Env: s.Env,
		StartTimeout: time.Minute}, l.logger)
	if errors.Is(err, pluginhost.ErrChecksum) {
		return nil, fmt.Errorf("%w: %w", ErrUnverified, err)
	}
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.last = inst
	l.mu.Unlock()
	return inst, nil
}

func (l *realLauncher) lastPID() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last.PID()
}

// A Python plugin runs pinned (interpreter and script); a swap is checked
// against its pins; and once its script is replaced on disk, the restart
// after a crash is refused and the plugin quarantined, saying which file.
func TestPinnedPythonPluginQuarantinedWhenScriptReplaced(t *testing.T) {
	py := testenv.PythonWithSDK(t)
	main := filepath.Join(testenv.ModuleRoot(t), "plugins", "py-echo", "main.py")
	dir := t.TempDir()
	script := filepath.Join(dir, "v1", "main.py")
	script2 := filepath.Join(dir, "v2", "main.py")
	for _, p := range []string{script, script2} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(main)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sum := func(p string) string {
		s, err := pluginhost.FileSHA256(p)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	rec := newLogRecorder()
	logger := slog.New(rec)
	launcher := &realLauncher{logger: logger}
	cfg := fast()
	cfg.HealthInterval = time.Second
	cfg.HealthTimeout = 5 * time.Second
	e := newEnvWith(t, cfg, launcher, logger)
	spec := Spec{Name: "py-echo", Path: py, SHA256: sum(py), Args: []string{script}, Files: []File{{Path: script, SHA256: sum(script)}}}
	e.startWithin(spec, time.Minute)
	first := e.publish("oc_py")
	e.exactlyOnce([]string{first})

	// A swap is checked against its own pins before anything runs.
	bad := Spec{Path: py, SHA256: sum(py), Args: []string{script2}, Files: []File{{Path: script2, SHA256: strings.Repeat("ab", 32)}}}
	err := e.mgr.Swap(context.Background(), "py-echo", bad)
	if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), script2) || !strings.Contains(err.Error(), sum(script2)) {
		t.Fatalf("swap to a mis-pinned script: %v", err)
	}
	if st := e.mgr.Status()[0]; st.State != StateServing || st.Spec.Args[0] != script {
		t.Fatalf("status after the refused swap %+v", st)
	}
	good := bad
	good.Files = []File{{Path: script2, SHA256: sum(script2)}}
	if err := e.mgr.Swap(context.Background(), "py-echo", good); err != nil {
		t.Fatalf("swap: %v", err)
	}
	if st := e.mgr.Status()[0]; st.Spec.Files[0].Path != script2 {
		t.Fatalf("status after the swap %+v", st)
	}

	// Replace the running version's script, then kill its process.
	pinned := sum(script2)
	if err := os.WriteFile(script2, []byte("import os\nos.system('echo owned')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(launcher.lastPID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "not quarantined", func() bool { return e.state() == StateQuarantined })
	st := e.mgr.Status()[0]
	for _, want := range []string{script2, "expected sha256 " + pinned, "actual " + sum(script2)} {
		if !strings.Contains(st.LastError, want) {
			t.Errorf("last error %q lacks %q", st.LastError, want)
		}
	}
	line := rec.find(func(r map[string]string) bool {
		return strings.HasPrefix(r["msg"], "plugin quarantined") && r["plugin"] == "py-echo" && strings.Contains(r["err"], script2)
	})
	if line == nil {
		t.Fatal("no log line saying the plugin was quarantined, naming the file")
	}
	t.Logf("log: %s err=%s", line["msg"], line["err"])
	// Quarantined, it holds its events until someone acts.
	id := e.publish("oc_py")
	if err := os.WriteFile(script2, mustRead(t, main), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.mgr.Enable(context.Background(), "py-echo"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "restored script not served", func() bool { return e.state() == StateServing })
	e.exactlyOnce([]string{first, id})
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
