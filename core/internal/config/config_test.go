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
		c.Dispatch.Deadline.D() != 10*time.Second || c.Ingest.MaxBodyBytes != 1<<20 || c.Metrics.Listen != "127.0.0.1:8093" {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestMaxRetryAfterDefault(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Dispatch.MaxRetryAfter.D(); got != time.Minute {
		t.Errorf("dispatch.max_retry_after defaults to %s, want 1m", got)
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
		{"max_retry_after too long", minimal + "dispatch:\n  max_retry_after: 2h\n", "dispatch.max_retry_after"},
		{"negative max_retry_after", minimal + "dispatch:\n  max_retry_after: -1s\n", "dispatch.max_retry_after"},
		{"duplicate path", "apps:\n  - {id: a, secret: s, verification_token: v}\n  - {id: b, secret: s, verification_token: v}\n", "used by another app or path"},
		{"bad sha", minimal + "plugins:\n  - name: x\n    path: /bin/x\n    sha256: abc\n", "64 hex"},
		{"plugin without name", minimal + "plugins:\n  - path: /bin/x\n", "plugins[0].name"},
		{"duplicate plugin", minimal + "plugins:\n  - {name: x, path: /a}\n  - {name: x, path: /b}\n", "duplicate"},
		{"missing env", "apps:\n  - {id: a, secret_env: LARKWAY_TEST_UNSET_VAR, verification_token: v}\n", "LARKWAY_TEST_UNSET_VAR"},
		{"not yaml", "{{{", "decoding config"},
		{"wrong type", minimal + "dispatch:\n  max_attempts: many\n", "line 7"},
		{"publish timeout too long", minimal + "ingest:\n  publish_timeout: 5s\n", "publish_timeout"},
		{"metrics on the webhook port", minimal + "listen: 0.0.0.0:8090\nmetrics: {listen: 127.0.0.1:8090}\n", "metrics.listen"},
		{"metrics on the admin port", minimal + "admin: {listen: 127.0.0.1:8092, token: 0123456789abcdef}\nmetrics: {listen: ':8092'}\n", "admin.listen"},
		{"metrics address without port", minimal + "metrics: {listen: localhost}\n", "metrics.listen"},
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
