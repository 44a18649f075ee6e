// Package testenv locates the real services integration tests run against.
//
// `make test` starts Redis and Pulsar (scripts/) and exports their addresses.
// A test that needs a service and cannot reach it fails with a message saying
// how to start it: an integration test never skips silently.
package testenv

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// PulsarURL is the broker service URL (LARKWAY_PULSAR_URL, default
// pulsar://127.0.0.1:6650). The test fails if the broker is not ready.
func PulsarURL(t testing.TB) string {
	t.Helper()
	url := env("LARKWAY_PULSAR_URL", "pulsar://127.0.0.1:6650")
	admin := PulsarAdminURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, admin+"/admin/v2/namespaces/public/default", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("Pulsar is not reachable at %s (%v): run `make test`, or `scripts/pulsar.sh start` and set LARKWAY_PULSAR_URL", admin, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("Pulsar at %s is not ready (namespace public/default: HTTP %d)", admin, resp.StatusCode)
	}
	return url
}

// PulsarAdminURL is the broker's HTTP admin URL (LARKWAY_PULSAR_ADMIN_URL,
// default http://127.0.0.1:8080).
func PulsarAdminURL(t testing.TB) string {
	t.Helper()
	return strings.TrimRight(env("LARKWAY_PULSAR_ADMIN_URL", "http://127.0.0.1:8080"), "/")
}

// RedisAddr is the Redis address (LARKWAY_REDIS_ADDR, default 127.0.0.1:6379).
// The test fails if nothing listens there.
func RedisAddr(t testing.TB) string {
	t.Helper()
	addr := env("LARKWAY_REDIS_ADDR", "127.0.0.1:6379")
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("Redis is not reachable at %s (%v): run `make test`, or `scripts/redis.sh start` and set LARKWAY_REDIS_ADDR", addr, err)
	}
	c.Close()
	return addr
}

// Name returns a name unique to this test run, for topics, subscriptions and
// Redis key prefixes, so tests can run in parallel on one broker.
func Name(t testing.TB, prefix string) string {
	t.Helper()
	r := strings.NewReplacer("/", "-", " ", "-", "#", "-")
	return prefix + "-" + strings.ToLower(r.Replace(t.Name())) + "-" + time.Now().Format("150405.000000000")
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Eventually polls cond every 10 ms until it holds, failing the test with
// the reason after timeout. It is how tests wait for asynchronous effects
// without fixed sleeps.
func Eventually(t testing.TB, timeout time.Duration, reason string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, reason)
		}
		<-tick.C
	}
}

// BuildPlugin compiles the Go package at pkg (relative to the repository
// root, e.g. "./plugins/echo") into dir and returns the binary's path. It
// builds in the package's directory, so the package's own module decides (the
// plugins are a module of their own) with or without the workspace.
func BuildPlugin(t testing.TB, pkg, dir string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = filepath.Join(ModuleRoot(t), filepath.FromSlash(pkg))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, b)
	}
	return out
}

// ModuleRoot is the repository root: the directory of go.work, above every
// module of the repository (tests run in their package's directory).
func ModuleRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatalf("getting the working directory: %v", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		if filepath.Dir(dir) == dir {
			t.Fatalf("no go.work in %s or above: testenv needs the larkway repository", wd)
		}
	}
}

// PythonWithSDK is the venv Python that sdk/python/test.sh creates
// (LARKWAY_PYENV, default .tools/pyenv), with this repository's Python SDK
// installed. A test that needs it fails, saying how to create it, when it
// is missing: a Python plugin test must never skip silently.
func PythonWithSDK(t testing.TB) string {
	t.Helper()
	root := ModuleRoot(t)
	env := os.Getenv("LARKWAY_PYENV")
	if env == "" {
		env = ".tools/pyenv"
	}
	if !filepath.IsAbs(env) {
		env = filepath.Join(root, env)
	}
	py := filepath.Join(env, "bin", "python")
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("the Python SDK's venv is missing (%s): run sdk/python/test.sh (or make test) to create it before go test", py)
	}
	out, err := exec.Command(py, "-c", "import larkway, sys; larkway.State; print(larkway.__file__)").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import this repository's Python SDK: run sdk/python/test.sh (or make test) to install it:\n%s", py, out)
	}
	if want := filepath.Join(root, "sdk", "python"); !strings.HasPrefix(strings.TrimSpace(string(out)), want) {
		t.Fatalf("%s imports larkway from %s, not from %s: run sdk/python/test.sh (or make test) to install this repository's SDK", py, strings.TrimSpace(string(out)), want)
	}
	return py
}

// LogBuffer collects log output written from several goroutines.
type LogBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
