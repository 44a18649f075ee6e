package config

import (
	"os"
	"path/filepath"
	"reflect"
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

// A config file served without bus.kind gets the durable embedded bus in a
// data directory beside the file; one that names a bus keeps it.
func TestServedConfigDefaultsToEmbeddedBus(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, yaml, kind, dataDir string
	}{
		{"no bus", minimal, "embedded", filepath.Join(dir, DefaultDataDir)},
		{"only a dir", minimal + "bus: {embedded: {dir: /srv/bus}}\n", "embedded", "/srv/bus"},
		{"memory named", minimal + "bus: {kind: memory}\n", "memory", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "larkway.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if c.Bus.Kind != tc.kind || c.Bus.Embedded.Dir != tc.dataDir {
				t.Errorf("bus = %s in %q, want %s in %q", c.Bus.Kind, c.Bus.Embedded.Dir, tc.kind, tc.dataDir)
			}
		})
	}
}

func TestEmbeddedBusDefaults(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal + "bus:\n  kind: embedded\n  embedded: {dir: /var/lib/larkway/bus}\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := c.Bus.Embedded
	if e.Dir != "/var/lib/larkway/bus" || e.Retention.Age.D() != 24*time.Hour || e.Retention.SizeMB != 1024 || e.MinFreeMB != 256 {
		t.Errorf("embedded bus defaults not applied: %+v", e)
	}
}

// The legacy card URL is served only where an app configures card_path.
func TestCardPathOptIn(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"off by default", minimal, ""},
		{"configured", minimal + "    card_path: /lark/cards\n", "/lark/cards"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Apps[0].CardPath; got != tt.want {
				t.Fatalf("card_path %q, want %q", got, tt.want)
			}
		})
	}
}

// Admission defaults: the wait leaves publish_timeout within Lark's 3 s
// (a config with the longest publish_timeout stays valid), one slot per
// CPU, and the memory bus holds a peak's worth.
func TestAdmissionDefaults(t *testing.T) {
	tests := []struct {
		name     string
		yaml     string
		wantWait time.Duration
	}{
		{"default publish timeout", minimal, 500 * time.Millisecond},
		{"longest publish timeout", minimal + "ingest:\n  publish_timeout: 2.5s\n", 300 * time.Millisecond},
		{"set", minimal + "ingest:\n  admission_wait: 100ms\n", 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Ingest.AdmissionWait.D(); got != tt.wantWait {
				t.Errorf("ingest.admission_wait = %s, want %s", got, tt.wantWait)
			}
			if c.Ingest.MaxInFlight != runtime.GOMAXPROCS(0) {
				t.Errorf("ingest.max_in_flight = %d, want GOMAXPROCS %d", c.Ingest.MaxInFlight, runtime.GOMAXPROCS(0))
			}
			if c.Bus.Memory.BudgetMB != 256 {
				t.Errorf("bus.memory.budget_mb = %d, want 256", c.Bus.Memory.BudgetMB)
			}
		})
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
		{"negative memory budget", minimal + "bus:\n  memory:\n    budget_mb: -1\n", "bus.memory.budget_mb"},
		{"replaced memory bound", minimal + "bus:\n  memory:\n    max_retained_mb: 256\n", "bus.memory.max_retained_mb was replaced by bus.memory.budget_mb"},
		{"pulsar without url", minimal + "bus:\n  kind: pulsar\n", "bus.pulsar.url"},
		{"replaced pulsar batching switch", minimal + "bus:\n  pulsar:\n    disable_batching: false\n", "bus.pulsar.disable_batching was replaced by bus.pulsar.batching"},
		{"embedded without dir", minimal + "bus:\n  kind: embedded\n", "bus.embedded.dir"},
		{"negative retention age", minimal + "bus:\n  kind: embedded\n  embedded: {dir: d, retention: {age: -1h}}\n", "bus.embedded.retention.age"},
		{"negative retention size", minimal + "bus:\n  kind: embedded\n  embedded: {dir: d, retention: {size_mb: -1}}\n", "bus.embedded.retention.size_mb"},
		{"negative free-space reserve", minimal + "bus:\n  kind: embedded\n  embedded: {dir: d, min_free_mb: -5}\n", "bus.embedded.min_free_mb"},
		{"unknown embedded key", minimal + "bus:\n  kind: embedded\n  embedded: {dir: d, retention: {age: 1h, bytes: 5}}\n", "bytes"},
		{"bad duration", minimal + "dispatch:\n  deadline: soon\n", "not a duration"},
		{"card path not absolute", minimal + "    card_path: lark/cards\n", "apps[0].card_path"},
		{"card path on the event path", minimal + "    card_path: /lark/events\n", "used by another app or path"},
		{"max_retry_after too long", minimal + "dispatch:\n  max_retry_after: 2h\n", "dispatch.max_retry_after"},
		{"negative max_retry_after", minimal + "dispatch:\n  max_retry_after: -1s\n", "dispatch.max_retry_after"},
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
		{"remote and path", minimal + "plugins:\n  - name: x\n    path: /bin/x\n    remote: {address: 'x:1', tls: {ca_file: c, cert_file: c, key_file: k}}\n", "plugins[0]: set either path"},
		{"remote without address", minimal + "plugins:\n  - name: x\n    remote: {tls: {ca_file: c, cert_file: c, key_file: k}}\n", "plugins[0].remote.address is required"},
		{"remote address without port", minimal + "plugins:\n  - name: x\n    remote: {address: 'a:1,dns:///b', tls: {ca_file: c, cert_file: c, key_file: k}}\n", `plugins[0].remote.address "dns:///b"`},
		{"remote without tls", minimal + "plugins:\n  - name: x\n    remote: {address: 'x:1', tls: {ca_file: c, cert_file: c}}\n", "plugins[0].remote.tls.key_file is required"},
		{"remote resolve too often", minimal + "plugins:\n  - name: x\n    remote: {address: 'x:1', resolve_interval: 10ms, tls: {ca_file: c, cert_file: c, key_file: k}}\n", "plugins[0].remote.resolve_interval"},
		{"unknown remote key", minimal + "plugins:\n  - name: x\n    remote: {adress: 'x:1'}\n", "plugins[0].remote.adress"},
		{"plugin state without tls", minimal + "plugin_state: {listen: ':7444'}\n", "plugin_state.tls.ca_file is required"},
		{"missing env", "apps:\n  - {id: a, secret_env: LARKWAY_TEST_UNSET_VAR, verification_token: v}\n", "LARKWAY_TEST_UNSET_VAR"},
		{"not yaml", "{{{", "decoding config"},
		{"wrong type", minimal + "dispatch:\n  max_attempts: many\n", "line 7"},
		{"publish timeout too long", minimal + "ingest:\n  publish_timeout: 5s\n", "publish_timeout"},
		{"admission wait past Lark's window", minimal + "ingest:\n  publish_timeout: 2s\n  admission_wait: 1s\n", "ingest.admission_wait"},
		{"negative admission wait", minimal + "ingest:\n  admission_wait: -1s\n", "ingest.admission_wait"},
		{"negative max in flight", minimal + "ingest:\n  max_in_flight: -1\n", "ingest.max_in_flight"},
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

func TestRemotePlugin(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal + `plugins:
  - name: triage
    remote:
      address: dns:///triage.plugins.svc.cluster.local:7443
      tls: {ca_file: /tls/ca.crt, cert_file: /tls/tls.crt, key_file: /tls/tls.key, server_name: triage.plugins.svc}
plugin_state:
  listen: ":7444"
  tls: {ca_file: /tls/ca.crt, cert_file: /tls/tls.crt, key_file: /tls/tls.key}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Plugins[0].Remote
	if r == nil || r.Address != "dns:///triage.plugins.svc.cluster.local:7443" || r.TLS.ServerName != "triage.plugins.svc" || r.ResolveInterval != 0 {
		t.Fatalf("remote %+v", r)
	}
	if c.PluginState.Listen != ":7444" || c.PluginState.TLS.KeyFile != "/tls/tls.key" {
		t.Fatalf("plugin_state %+v", c.PluginState)
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

// Typos and wrong kinds are answered with the YAML path and, for a typo,
// the key meant; never with Go type names.
func TestShapeErrorsNameThePath(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"top-level typo", minimal + "log_levl: debug\n", []string{`unknown key "log_levl"`, `did you mean "log_level"?`}},
		{"nested typo", minimal + "dispatch:\n  max_atempts: 3\n", []string{`"dispatch.max_atempts"`, `did you mean "max_attempts"?`}},
		{"typo in a list item", minimal + "plugins:\n  - name: x\n    path: /bin/x\n    sha265: abc\n", []string{`"plugins[0].sha265"`, `did you mean "sha256"?`}},
		{"typo in an app", "apps:\n  - id: a\n    secret: s\n    verification_tokn: v\n", []string{`"apps[0].verification_tokn"`, `"verification_token"`}},
		{"no suggestion for a stranger", minimal + "kubernetes: {}\n", []string{`unknown key "kubernetes"`}},
		{"wrong kind", minimal + "dispatch:\n  max_attempts: many\n", []string{"line 7", "dispatch.max_attempts", `want a whole number, got "many"`}},
		{"list where a mapping goes", minimal + "bus: [memory]\n", []string{"bus: want a mapping"}},
		{"mapping where a list goes", minimal + "plugins: {name: x}\n", []string{"plugins: want a list"}},
		{"bool", minimal + "actions:\n  rate_limits:\n    disabled: perhaps\n", []string{"actions.rate_limits.disabled", "want true or false"}},
		{"two at once", minimal + "listn: x\nbus:\n  kindd: memory\n", []string{`"listn"`, `"listen"`, `"bus.kindd"`, `"kind"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			for _, goName := range []string{"config.", "!!str", "unmarshal", "type "} {
				if strings.Contains(err.Error(), goName) {
					t.Errorf("error %q names Go internals (%q)", err, goName)
				}
			}
		})
	}
	if s := suggest("kubernetes", yamlFields(reflect.TypeOf(Config{}))); s != "" {
		t.Errorf("suggested %q for an unrelated key", s)
	}
}

func TestAdminConfig(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("file-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LARKWAY_TEST_ADMIN_TOKEN", "env-token-0123456789")
	const tok = "  token: operator-token-0123456789\n"
	const tlsKeys = "  tls: {cert_file: /etc/tls/tls.crt, key_file: /etc/tls/tls.key}\n"
	tests := []struct {
		name  string
		admin string
		want  []string // substrings of the error; none: valid
	}{
		{"loopback v4", "  listen: 127.0.0.1:8092\n" + tok, nil},
		{"loopback v4 elsewhere in 127/8", "  listen: 127.3.2.1:8092\n" + tok, nil},
		{"loopback v6", "  listen: '[::1]:8092'\n" + tok, nil},
		{"localhost", "  listen: localhost:8092\n" + tok, nil},
		{"all interfaces", "  listen: 0.0.0.0:8092\n" + tok, []string{"admin.listen", "admin.tls"}},
		{"empty host", "  listen: ':8081'\n" + tok, []string{"admin.listen", "admin.tls"}},
		{"all v6 interfaces", "  listen: '[::]:8092'\n" + tok, []string{"admin.listen", "admin.tls"}},
		{"private address", "  listen: 10.1.2.3:8092\n" + tok, []string{"admin.listen", "admin.tls"}},
		{"hostname", "  listen: admin.internal:8092\n" + tok, []string{"admin.listen", "admin.tls"}},
		{"all interfaces with TLS", "  listen: 0.0.0.0:8092\n" + tok + tlsKeys, nil},
		{"mutual TLS", "  listen: 0.0.0.0:8092\n" + tok + "  tls: {cert_file: /c, key_file: /k, client_ca_file: /ca}\n", nil},
		{"TLS without key", "  listen: 0.0.0.0:8092\n" + tok + "  tls: {cert_file: /c}\n", []string{"admin.tls: cert_file and key_file"}},
		{"client CA alone", "  listen: 0.0.0.0:8092\n" + tok + "  tls: {client_ca_file: /ca}\n", []string{"admin.tls: cert_file and key_file"}},
		{"unknown TLS key", "  listen: 0.0.0.0:8092\n" + tok + "  tls: {cert: /c}\n", []string{"cert"}},
		{"not host:port", "  listen: 8092\n" + tok, []string{"admin.listen"}},
		{"no credential", "  listen: 127.0.0.1:8092\n", []string{"no credential"}},
		{"short legacy token", "  listen: 127.0.0.1:8092\n  token: short\n", []string{"admin.token"}},
		{"legacy token from env", "  listen: 127.0.0.1:8092\n  token_env: LARKWAY_TEST_ADMIN_TOKEN\n", nil},
		{"tokens", "  listen: 127.0.0.1:8092\n  tokens:\n" +
			"    - {name: ci, token_env: LARKWAY_TEST_ADMIN_TOKEN, role: operator}\n" +
			"    - {name: dash, token_file: " + tokenFile + ", role: viewer}\n" +
			"    - {name: oncall, token: literal-token-0123456789, role: operator}\n", nil},
		{"token role missing", "  listen: 127.0.0.1:8092\n  tokens: [{name: a, token: literal-token-0123456789}]\n", []string{"admin.tokens[0].role"}},
		{"token role unknown", "  listen: 127.0.0.1:8092\n  tokens: [{name: a, token: literal-token-0123456789, role: admin}]\n", []string{"admin.tokens[0].role \"admin\""}},
		{"token without name", "  listen: 127.0.0.1:8092\n  tokens: [{token: literal-token-0123456789, role: viewer}]\n", []string{"admin.tokens[0].name"}},
		{"token duplicate name", "  listen: 127.0.0.1:8092\n  tokens:\n    - {name: a, token: literal-token-0123456789, role: viewer}\n    - {name: a, token: other-token-0123456789, role: viewer}\n", []string{"admin.tokens[1].name \"a\": duplicate"}},
		{"token given twice", "  listen: 127.0.0.1:8092\n  token: literal-token-0123456789\n  tokens: [{name: a, token: literal-token-0123456789, role: viewer}]\n", []string{"admin.tokens[0]: the same token"}},
		{"token short", "  listen: 127.0.0.1:8092\n  tokens: [{name: a, token: short, role: viewer}]\n", []string{"admin.tokens[0]: the token must have at least 16"}},
		{"token two sources", "  listen: 127.0.0.1:8092\n  tokens: [{name: a, token: literal-token-0123456789, token_env: LARKWAY_TEST_ADMIN_TOKEN, role: viewer}]\n", []string{"admin.tokens[0]: give exactly one"}},
		{"token no source", "  listen: 127.0.0.1:8092\n  tokens: [{name: a, role: viewer}]\n", []string{"admin.tokens[0]: give exactly one"}},
		{"token env unset", "  listen: 127.0.0.1:8092\n  tokens: [{name: a, token_env: LARKWAY_TEST_UNSET_VAR, role: viewer}]\n", []string{"admin.tokens[0].token_env", "LARKWAY_TEST_UNSET_VAR"}},
		{"token file missing", "  listen: 127.0.0.1:8092\n  tokens: [{name: a, token_file: " + filepath.Join(dir, "nope") + ", role: viewer}]\n", []string{"admin.tokens[0].token_file"}},
		{"jwt only", "  listen: 127.0.0.1:8092\n  jwt: {jwks_file: /jwks.json, issuer: https://idp, audience: larkway}\n", nil},
		{"jwt url", "  listen: 127.0.0.1:8092\n  jwt: {jwks_url: 'https://idp/.well-known/jwks.json', issuer: https://idp, audience: larkway}\n", nil},
		{"jwt plain http url", "  listen: 127.0.0.1:8092\n  jwt: {jwks_url: 'http://idp/jwks.json', issuer: https://idp, audience: larkway}\n", []string{"admin.jwt.jwks_url"}},
		{"jwt file and url", "  listen: 127.0.0.1:8092\n  jwt: {jwks_file: /j, jwks_url: 'https://idp/j', issuer: https://idp, audience: larkway}\n", []string{"admin.jwt: give exactly one of jwks_file or jwks_url"}},
		{"jwt no keys", "  listen: 127.0.0.1:8092\n  jwt: {issuer: https://idp, audience: larkway}\n", []string{"admin.jwt: give exactly one"}},
		{"jwt no issuer", "  listen: 127.0.0.1:8092\n  jwt: {jwks_file: /j, audience: larkway}\n", []string{"admin.jwt.issuer"}},
		{"jwt no audience", "  listen: 127.0.0.1:8092\n  jwt: {jwks_file: /j, issuer: https://idp}\n", []string{"admin.jwt.audience"}},
		{"disabled: nothing checked", "  listen: ''\n  tokens: [{name: a, token: literal-token-0123456789, role: viewer}]\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(minimal + "admin:\n" + tt.admin))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if c.Admin.JWT.Enabled() && c.Admin.JWT.RoleClaim != "role" {
					t.Errorf("role_claim default %q", c.Admin.JWT.RoleClaim)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want an error mentioning %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestAdminTokenSources(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("file-token-0123456789\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LARKWAY_TEST_ADMIN_TOKEN", "env-token-0123456789")
	c, err := Parse(strings.NewReader(minimal + "admin:\n  listen: 127.0.0.1:1\n  tokens:\n" +
		"    - {name: e, token_env: LARKWAY_TEST_ADMIN_TOKEN, role: operator}\n" +
		"    - {name: f, token_file: " + file + ", role: viewer}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Admin.Tokens; got[0].Token != "env-token-0123456789" || got[1].Token != "file-token-0123456789" {
		t.Fatalf("tokens %+v", got)
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1": true, "127.255.0.9": true, "::1": true, "localhost": true, "LOCALHOST": true,
		"": false, "0.0.0.0": false, "::": false, "10.0.0.1": false, "128.0.0.1": false, "example.com": false,
		"localhost.example.com": false, "::ffff:10.0.0.1": false,
	} {
		if got := IsLoopbackHost(host); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

// The web console is on with the admin API, its login lasting 12h unless
// admin.console.session_ttl says otherwise; a negative one is refused by
// name.
func TestAdminConsole(t *testing.T) {
	const admin = minimal + "admin: {listen: 127.0.0.1:8092, tokens: [{name: ops, token: 0123456789abcdef, role: operator}]%s}\n"
	c, err := Parse(strings.NewReader(strings.Replace(admin, "%s", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.Console.Disabled || c.Admin.Console.SessionTTL.D() != 12*time.Hour {
		t.Errorf("console defaults %+v, want on with a 12h session", c.Admin.Console)
	}
	c, err = Parse(strings.NewReader(strings.Replace(admin, "%s", ", console: {disabled: true, session_ttl: 30m, playground_url: http://x/playground}", 1)))
	if err != nil || !c.Admin.Console.Disabled || c.Admin.Console.SessionTTL.D() != 30*time.Minute || c.Admin.Console.PlaygroundURL != "http://x/playground" {
		t.Fatalf("console settings: %v %+v", err, c.Admin.Console)
	}
	if _, err := Parse(strings.NewReader(strings.Replace(admin, "%s", ", console: {session_ttl: -1m}", 1))); err == nil ||
		!strings.Contains(err.Error(), "admin.console.session_ttl") {
		t.Fatalf("negative session_ttl: %v, want an error naming admin.console.session_ttl", err)
	}
}
