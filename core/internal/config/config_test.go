package config

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const minimal = `
apps:
  - id: cli_test
    secret: s
    verification_token: vt
`

func TestExampleConfigIsValid(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "..", "..", "config.example.yaml")
	t.Setenv("LARK_APP_SECRET", "secret")
	t.Setenv("LARK_VERIFICATION_TOKEN", "token")
	c, err := Load(path)
	if err != nil {
		t.Fatalf("config.example.yaml must stay valid: %v", err)
	}
	if c.Apps[0].Secret != "secret" || c.Apps[0].VerificationToken != "token" {
		t.Errorf("secrets from env not resolved: %+v", c.Apps[0])
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Bus.Kind != "memory" || c.Listen != "127.0.0.1:8090" || c.Apps[0].EventPath != "/lark/events" ||
		c.Dispatch.Deadline.D() != 10*time.Second || c.Ingest.MaxBodyBytes != 1<<20 {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // substring of the error
	}{
		{"unknown top-level key", minimal + "listn: x\n", "listn"},
		{"unknown nested key", minimal + "bus:\n  kind: memory\n  pulser: {}\n", "pulser"},
		{"unknown app key", "apps:\n  - id: cli_x\n    secret: s\n    verification_token: v\n    sekret: x\n", "sekret"},
		{"no apps", "listen: 127.0.0.1:1\n", "at least one app"},
		{"missing token", "apps:\n  - id: cli_x\n    secret: s\n", "verification_token is required"},
		{"bad bus kind", minimal + "bus:\n  kind: kafka\n", "bus.kind"},
		{"negative memory bound", minimal + "bus:\n  memory:\n    max_retained_mb: -1\n", "bus.memory.max_retained_mb"},
		{"pulsar without url", minimal + "bus:\n  kind: pulsar\n", "bus.pulsar.url"},
		{"bad duration", minimal + "dispatch:\n  deadline: soon\n", "not a duration"},
		{"duplicate path", "apps:\n  - {id: a, secret: s, verification_token: v}\n  - {id: b, secret: s, verification_token: v}\n", "used by another app or path"},
		{"bad sha", minimal + "plugins:\n  - name: x\n    path: /bin/x\n    sha256: abc\n", "64 hex"},
		{"file without path", minimal + "plugins:\n  - name: x\n    path: /bin/x\n    files: [{sha256: " + sha + "}]\n", "plugins[0].files[0].path is required"},
		{"file without sha", minimal + "plugins:\n  - name: x\n    path: /bin/x\n    files: [{path: main.py}]\n", "plugins[0].files[0].sha256: want 64 hex"},
		{"file sha too short", minimal + "plugins:\n  - name: x\n    path: /bin/x\n    files: [{path: main.py, sha256: " + sha[:63] + "}]\n", "plugins[0].files[0].sha256"},
		{"file sha not hex", minimal + "plugins:\n  - name: x\n    path: /bin/x\n    files: [{path: main.py, sha256: " + strings.Repeat("g", 64) + "}]\n", "plugins[0].files[0].sha256"},
		{"file pinned twice", minimal + "plugins:\n  - name: x\n    path: /bin/x\n    files: [{path: a.py, sha256: " + sha + "}, {path: a.py, sha256: " + sha + "}]\n", "plugins[0].files[1].path \"a.py\": pinned twice"},
		{"unknown file key", minimal + "plugins:\n  - name: x\n    path: /bin/x\n    files: [{path: a.py, sha: x}]\n", "sha"},
		{"bad env name", minimal + "plugins:\n  - name: x\n    path: /bin/x\n    env: [\"=v\"]\n", "plugins[0].env"},
		{"env name with space", minimal + "plugins:\n  - name: x\n    path: /bin/x\n    env: [\"MY VAR\"]\n", "plugins[0].env"},
		{"plugin without name", minimal + "plugins:\n  - path: /bin/x\n", "plugins[0].name"},
		{"duplicate plugin", minimal + "plugins:\n  - {name: x, path: /a}\n  - {name: x, path: /b}\n", "duplicate"},
		{"missing env", "apps:\n  - {id: a, secret_env: LARKWAY_TEST_UNSET_VAR, verification_token: v}\n", "LARKWAY_TEST_UNSET_VAR"},
		{"not yaml", "{{{", "decoding config"},
		{"wrong type", minimal + "dispatch:\n  max_attempts: many\n", "line 7"},
		{"publish timeout too long", minimal + "ingest:\n  publish_timeout: 5s\n", "publish_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

const sha = "0123456789abcdef0123456789abcdef0123456789ABCDEF0123456789abcdef"

func TestPluginPins(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal + `plugins:
  - name: py-echo
    path: .tools/pyenv/bin/python
    sha256: ` + sha + `
    args: [plugins/py-echo/main.py]
    files:
      - {path: plugins/py-echo/main.py, sha256: ` + sha + `}
    env: [LARKWAY_LOG_LEVEL=debug, OPENAI_API_KEY]
`))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Plugins[0]
	if len(p.Files) != 1 || p.Files[0] != (PluginFile{Path: "plugins/py-echo/main.py", SHA256: sha}) || len(p.Env) != 2 {
		t.Fatalf("plugin %+v", p)
	}
}

func TestOversizedConfig(t *testing.T) {
	big := minimal + "# " + strings.Repeat("x", MaxConfigBytes) + "\n"
	if _, err := Parse(strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("err = %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func FuzzParse(f *testing.F) {
	f.Add(minimal)
	f.Add("apps: [{id: a}]")
	f.Add("bus: {kind: pulsar, pulsar: {url: 'pulsar://x:1'}}")
	f.Fuzz(func(t *testing.T, s string) {
		// Any input: an error or a config that validates; never a panic.
		c, err := Parse(strings.NewReader(s))
		if err == nil && c.Validate() != nil {
			t.Fatalf("Parse accepted a config that does not validate")
		}
	})
}
