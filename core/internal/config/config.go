// Package config is the core's typed configuration: decoded strictly from
// YAML (an unknown key is an error naming it), defaulted, and validated as a
// whole before anything starts. Secrets may come from the environment
// (`*_env` fields) and are never logged.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole core configuration. See config.example.yaml.
type Config struct {
	// Listen is the address of the Lark-facing HTTP server.
	Listen string `yaml:"listen"`
	// LogLevel is debug, info, warn or error.
	LogLevel string   `yaml:"log_level"`
	Bus      Bus      `yaml:"bus"`
	Redis    Redis    `yaml:"redis"`
	Apps     []App    `yaml:"apps"`
	Plugins  []Plugin `yaml:"plugins"`
	Dispatch Dispatch `yaml:"dispatch"`
	Ingest   Ingest   `yaml:"ingest"`
	Admin    Admin    `yaml:"admin"`
	// ReplicaID names this core replica in the cluster registry (default
	// hostname-pid).
	ReplicaID   string      `yaml:"replica_id"`
	Supervision Supervision `yaml:"supervision"`
	Cluster     Cluster     `yaml:"cluster"`
	Telemetry   Telemetry   `yaml:"telemetry"`
	Actions     Actions     `yaml:"actions"`
	Metrics     Metrics     `yaml:"metrics"`
	// PluginState serves the state store to remote plugins.
	PluginState PluginState `yaml:"plugin_state"`
}

// PluginState serves the plugin state store to remote plugins over mutual
// TLS (docs/operations.md, "Remote plugins"): each call acts on the state of
// the plugin its client certificate names.
type PluginState struct {
	// Listen is the address (empty: not served; remote plugins then have
	// no state store).
	Listen string `yaml:"listen"`
	// TLS: ca_file verifies the plugins' certificates; cert_file and
	// key_file are the core's.
	TLS PluginTLS `yaml:"tls"`
}

// Metrics serves Prometheus metrics on a listener of their own: their
// labels name apps, plugins and rejection reasons, which the Lark-facing
// listener must not tell whoever reaches the webhook.
type Metrics struct {
	// Listen is the metrics address (default 127.0.0.1:8093, loopback).
	// Kubernetes pods set 0.0.0.0:8093 so Prometheus can scrape them.
	Listen string `yaml:"listen"`
}

// Actions tunes how plugin actions reach the Lark OpenAPI.
type Actions struct {
	RateLimits RateLimits `yaml:"rate_limits"`
}

// RateLimits are the client-side limits kept across every replica sharing
// Redis (0 means Lark's documented limit).
type RateLimits struct {
	// Disabled sends as fast as actions come (an unlimited emulator,
	// benchmarks). Never in production: Lark then refuses with 99991400.
	Disabled bool `yaml:"disabled"`
	// AppPerSecond and AppPerMinute per app and API (Lark: 50/s, 1000/min).
	AppPerSecond int `yaml:"app_per_second"`
	AppPerMinute int `yaml:"app_per_minute"`
	// PerChat and PerUser messages per second (Lark: 5/s each).
	PerChat int `yaml:"per_chat_per_second"`
	PerUser int `yaml:"per_user_per_second"`
}

// Telemetry configures tracing.
type Telemetry struct {
	Tracing Tracing `yaml:"tracing"`
}

// Tracing exports OpenTelemetry traces over OTLP/HTTP (off by default).
type Tracing struct {
	Enabled bool `yaml:"enabled"`
	// Endpoint is the collector's host:port (OTLP/HTTP, e.g. 127.0.0.1:4318).
	Endpoint string `yaml:"endpoint"`
	// Insecure sends without TLS.
	Insecure bool `yaml:"insecure"`
	// SampleRatio of new traces to record, 0..1 (default 1).
	SampleRatio float64 `yaml:"sample_ratio"`
}

// Admin configures the admin API (larkway plugin …, larkway dlq …).
type Admin struct {
	// Listen enables the API on this address; empty disables it. An address
	// that is not loopback (127.0.0.0/8, ::1, localhost) needs TLS: the API
	// can execute plugin files and read dead letters.
	Listen string `yaml:"listen"`
	// Token is one operator token (Authorization: Bearer TOKEN), kept for
	// compatibility; it is logged as the principal "admin.token". Prefer
	// Tokens, which carry a name and a role.
	Token    string `yaml:"token"`
	TokenEnv string `yaml:"token_env"`
	// Tokens are static bearer tokens, each with a name and a role.
	Tokens []AdminToken `yaml:"tokens"`
	// JWT also accepts signed JWTs as bearer tokens.
	JWT AdminJWT `yaml:"jwt"`
	// TLS serves the API over HTTPS (mutual TLS with client_ca_file).
	TLS AdminTLS `yaml:"tls"`
	// PluginDir is the only directory swaps may take plugin files from
	// (symlinks and .. resolved). Empty: the directory of the plugin's
	// configured path.
	PluginDir string `yaml:"plugin_dir"`
	// Console is the web console served beside the API on admin.listen.
	Console AdminConsole `yaml:"console"`
}

// AdminConsole configures the web console (core/internal/console): on by
// default wherever the admin API is.
type AdminConsole struct {
	// Disabled turns the console off; the API stays.
	Disabled bool `yaml:"disabled"`
	// SessionTTL is how long a browser login lasts (default 12h).
	SessionTTL Duration `yaml:"session_ttl"`
	// PlaygroundURL, if set, is linked from every console page (the
	// playground is served by `larkway emulator --playground-core`).
	PlaygroundURL string `yaml:"playground_url"`
}

// AdminToken is a static admin bearer token: exactly one of Token,
// TokenEnv (an environment variable) or TokenFile (a file, trailing
// whitespace trimmed).
type AdminToken struct {
	// Name is logged as the principal of every change made with it.
	Name      string `yaml:"name"`
	Token     string `yaml:"token"`
	TokenEnv  string `yaml:"token_env"`
	TokenFile string `yaml:"token_file"`
	// Role is viewer (GET only) or operator (also swap, rollback, drain,
	// enable/disable, dead-letter replay and purge).
	Role string `yaml:"role"`
}

// AdminJWT verifies JWT bearer tokens (RS256, ES256 or EdDSA only) against
// a JWK Set; exp is required, nbf is honoured, iss and aud must match.
type AdminJWT struct {
	// JWKSFile or JWKSURL (https) holds the verification keys; set one.
	// The URL is re-read hourly and when a token names an unknown key.
	JWKSFile string `yaml:"jwks_file"`
	JWKSURL  string `yaml:"jwks_url"`
	Issuer   string `yaml:"issuer"`
	Audience string `yaml:"audience"`
	// RoleClaim names the claim holding viewer or operator (default
	// "role"); a list of roles grants the highest one in it.
	RoleClaim string `yaml:"role_claim"`
}

// Enabled reports whether any JWT setting is given.
func (j AdminJWT) Enabled() bool {
	return j.JWKSFile != "" || j.JWKSURL != "" || j.Issuer != "" || j.Audience != ""
}

// AdminTLS is the admin API's server certificate and, optionally, the CA
// that client certificates must chain to.
type AdminTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile turns on mutual TLS: clients must present a certificate
	// signed by one of these CAs.
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled reports whether the API is served over TLS.
func (t AdminTLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != "" }

// IsLoopbackHost reports whether host is localhost or a loopback IP
// (127.0.0.0/8, ::1). An empty host (all interfaces) is not.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Supervision tunes plugin supervision.
type Supervision struct {
	RestartBackoff    Duration `yaml:"restart_backoff"`
	RestartBackoffMax Duration `yaml:"restart_backoff_max"`
	QuarantineAfter   int      `yaml:"quarantine_after"`
	QuarantineWindow  Duration `yaml:"quarantine_window"`
	HealthInterval    Duration `yaml:"health_interval"`
	HealthTimeout     Duration `yaml:"health_timeout"`
	HealthFailures    int      `yaml:"health_failures"`
	ProbationWindow   Duration `yaml:"probation_window"`
	DrainTimeout      Duration `yaml:"drain_timeout"`
}

// Cluster tunes cluster-wide reconciliation.
type Cluster struct {
	// ReconcileInterval between reconcile passes and heartbeats.
	ReconcileInterval Duration `yaml:"reconcile_interval"`
}

// Bus selects the event bus.
type Bus struct {
	// Kind is "embedded" (single machine, durable: an fsynced log on local
	// disk), "memory" (single process, non-durable: events live in RAM and
	// a crash loses them; for tests and benchmarks) or "pulsar". A config
	// file served without it gets embedded (see Load); a config built in
	// code (Parse) gets memory.
	Kind     string   `yaml:"kind"`
	Memory   Memory   `yaml:"memory"`
	Embedded Embedded `yaml:"embedded"`
	Pulsar   Pulsar   `yaml:"pulsar"`
}

// Embedded configures the durable single-machine bus.
type Embedded struct {
	// Dir holds the bus's store (created if missing). Required for kind
	// embedded; on a local disk, never a network file system.
	Dir       string            `yaml:"dir"`
	Retention EmbeddedRetention `yaml:"retention"`
	// MinFreeMB is the free disk below which webhooks get 503 instead of
	// events being stored (default 256).
	MinFreeMB int `yaml:"min_free_mb"`
}

// EmbeddedRetention bounds the history kept once every plugin has handled
// it (for replay). Events a plugin has not handled are never deleted.
type EmbeddedRetention struct {
	// Age of the oldest history kept (default 24h).
	Age Duration `yaml:"age"`
	// SizeMB bounds each topic's history (default 1024).
	SizeMB int `yaml:"size_mb"`
}

// Memory configures the non-durable in-process bus.
type Memory struct {
	// BudgetMB is the core's whole memory: its container's limit less
	// what the plugins (processes of their own) use. `larkway serve` makes it the Go memory limit
	// (unless GOMEMLIMIT is set), and past two thirds of it, or once the
	// events plugins have not handled yet hold three quarters of it,
	// webhooks get 503 and Lark retries later (default 256: about
	// 100 000 typical events, 20 s of a 5 000 events/s peak).
	BudgetMB int `yaml:"budget_mb"`
	// MaxRetainedMB is the key budget_mb replaced: it bounded the events
	// held, not the process, which ran 1.4–1.7x over it. Set, it fails
	// validation with an error naming budget_mb.
	MaxRetainedMB int `yaml:"max_retained_mb"`
}

// Pulsar configures the Pulsar bus.
type Pulsar struct {
	// URL is the broker service URL, e.g. pulsar://127.0.0.1:6650.
	URL string `yaml:"url"`
	// OperationTimeout bounds each publish and lookup.
	OperationTimeout Duration `yaml:"operation_timeout"`
	// AdminURL is the broker's HTTP admin endpoint, read for backlog
	// metrics (default: http://<url host>:8080).
	AdminURL string `yaml:"admin_url"`
	// Batching lets concurrent publishes of one chat share a broker entry
	// (key-based batching, 1 ms delay). Default false: every event is its
	// own entry, which cost the core and the broker less CPU per event and
	// answered Lark sooner on the bench (bench/README.md, "Pulsar."). With
	// it, run the broker with acknowledgmentAtBatchIndexLevelEnabled=true
	// so a nack redelivers one message, not its batch.
	Batching bool `yaml:"batching"`
	// DisableBatching was replaced by Batching (batching is now off unless
	// asked for); set at all, it fails validation naming both keys.
	DisableBatching *bool `yaml:"disable_batching"`
}

// Redis configures the shared store. Empty Addr means in-process stores
// (single replica only).
type Redis struct {
	Addr     string `yaml:"addr"`
	Password string `yaml:"password"`
	// PasswordEnv names an environment variable holding the password.
	PasswordEnv string `yaml:"password_env"`
	DB          int    `yaml:"db"`
	// KeyPrefix prefixes every key larkway writes (default "larkway:").
	KeyPrefix string `yaml:"key_prefix"`
}

// App is one Lark app the core serves.
type App struct {
	// ID is the app id (cli_...).
	ID string `yaml:"id"`
	// Secret is the app secret; prefer SecretEnv.
	Secret    string `yaml:"secret"`
	SecretEnv string `yaml:"secret_env"`
	// VerificationToken is checked on every event.
	VerificationToken    string `yaml:"verification_token"`
	VerificationTokenEnv string `yaml:"verification_token_env"`
	// EncryptKey enables signature checks and decryption.
	EncryptKey    string `yaml:"encrypt_key"`
	EncryptKeyEnv string `yaml:"encrypt_key_env"`
	// EventPath is the webhook path for events (default /lark/events).
	EventPath string `yaml:"event_path"`
	// CardPath is the legacy card callback URL path (card.action.trigger_v1).
	// Empty (the default) serves no legacy card URL: it is on only where an
	// app configures it.
	CardPath string `yaml:"card_path"`
	// LongConnection receives events over Lark's WebSocket instead of (or
	// beside) the webhook.
	LongConnection LongConnection `yaml:"long_connection"`
	// BaseURL is the OpenAPI base URL (default https://open.feishu.cn).
	BaseURL string `yaml:"base_url"`
	// Timeout bounds each OpenAPI call.
	Timeout Duration `yaml:"timeout"`
}

// LongConnection configures Lark's long-connection (WebSocket) mode.
type LongConnection struct {
	Enabled bool `yaml:"enabled"`
	// Connections to keep open (1..50; Lark sends each event to one).
	Connections int `yaml:"connections"`
}

// Plugin is one plugin file to run.
type Plugin struct {
	// Name must equal the name the plugin's manifest declares; it names the
	// plugin's bus subscription and is how admins address it.
	Name string `yaml:"name"`
	// Path of the executable.
	Path string `yaml:"path"`
	// Args for it.
	Args []string `yaml:"args"`
	// SHA256 pins the file (hex); strongly recommended.
	SHA256 string `yaml:"sha256"`
	// Files pins more files the plugin runs — an interpreter's script, the
	// modules it imports — checked at every launch like SHA256
	// (`larkway plugin pin` prints them).
	Files []PluginFile `yaml:"files"`
	// Env is the plugin's environment beyond PATH, HOME, LANG, LC_*, TZ
	// and TMPDIR (nothing else of the core's is passed): KEY=VALUE sets
	// KEY, a bare KEY passes the core's own value of KEY.
	Env []string `yaml:"env"`
	// Disabled keeps the entry but does not run it.
	Disabled bool `yaml:"disabled"`
	// Remote dials the plugin as its own deployment instead of launching a
	// file; an entry has either path or remote.
	Remote *PluginRemote `yaml:"remote"`
}

// PluginRemote is a plugin served by its own deployment, dialled over
// mutual TLS (docs/operations.md, "Remote plugins").
type PluginRemote struct {
	// Address is host:port, dns:///host:port, or a comma-separated list;
	// every address a name resolves to is one instance.
	Address string `yaml:"address"`
	// TLS: ca_file verifies the instances' certificates (which must carry
	// the URI SAN urn:larkway:plugin:NAME); cert_file and key_file are the
	// core's client certificate; server_name, if set, must also be a DNS
	// name of the instances' certificates.
	TLS PluginTLS `yaml:"tls"`
	// ResolveInterval between re-resolving the address and health-checking
	// every instance (default 10s).
	ResolveInterval Duration `yaml:"resolve_interval"`
}

// PluginTLS are PEM files of a mutual TLS connection.
type PluginTLS struct {
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
}

// PluginFile pins one file a plugin runs to its SHA-256.
type PluginFile struct {
	Path   string `yaml:"path"`
	SHA256 string `yaml:"sha256"`
}

var (
	sha256RE  = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Dispatch tunes delivery to plugins.
type Dispatch struct {
	// Deadline is each delivery's time limit. The plugin's context ends at
	// it; the core gives up on the result up to a twentieth of it (100 ms at
	// most) later, then retries.
	Deadline Duration `yaml:"deadline"`
	// ActionTimeout bounds performing one result's actions (rate-limit waits
	// and retries included).
	ActionTimeout Duration `yaml:"action_timeout"`
	// MaxAttempts dead-letters an event after this many deliveries.
	MaxAttempts int `yaml:"max_attempts"`
	// MaxInFlight caps deliveries in flight per plugin when its manifest sets none.
	MaxInFlight int `yaml:"max_in_flight"`
	// RetryBackoff is the first redelivery delay; it doubles per attempt.
	RetryBackoff Duration `yaml:"retry_backoff"`
	// MaxRetryAfter caps the minimum delay a plugin may ask for with a
	// RETRY result's retry_after (RetryAfter in the SDKs): the retry is
	// redelivered after the longer of the backoff and retry_after capped at
	// this (default 1m, the backoff's own ceiling; at most 1h).
	MaxRetryAfter Duration `yaml:"max_retry_after"`
	// DoneTTL is how long a handled event is remembered for deduplication
	// (default 24h, longer than Lark's ~7.1 h retry window).
	DoneTTL Duration `yaml:"done_ttl"`
}

// Ingest tunes the webhook.
type Ingest struct {
	// MaxBodyBytes bounds a request body (default 1 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// PublishTimeout bounds the durable write before Lark gets a 503.
	PublishTimeout Duration `yaml:"publish_timeout"`
	// CardBudget is how long a card callback waits for the plugin's toast or
	// card before Lark gets {} (the card is then applied with a delayed
	// update).
	CardBudget Duration `yaml:"card_budget"`
	// MaxInFlight bounds the webhook requests read, verified, decrypted and
	// encoded at once; the rest wait parked for a slot, so a peak queues at
	// the bus rather than competing with dispatch for the cores (default:
	// the number of CPUs Go uses).
	MaxInFlight int `yaml:"max_in_flight"`
	// AdmissionWait bounds how long a webhook request waits, unread, for the
	// bus to have room and for a slot before it gets 503 with Retry-After
	// (default 500ms, less if publish_timeout leaves less of Lark's 3 s;
	// admission_wait + publish_timeout ≤ 2.8s).
	AdmissionWait Duration `yaml:"admission_wait"`
}

// Duration is a time.Duration written as "1.5s" in YAML.
type Duration time.Duration

// UnmarshalYAML parses Go duration syntax.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 500ms, 3s)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MaxConfigBytes bounds a config file.
const MaxConfigBytes = 1 << 20

// Load reads, decodes, defaults and validates a config file.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	defer f.Close()
	return parse(io.LimitReader(f, MaxConfigBytes+1), filepath.Dir(path))
}

// DefaultDataDir is where a config file served without bus.kind keeps the
// embedded bus, relative to the file's directory.
const DefaultDataDir = "larkway-data/bus"

// Parse decodes YAML strictly, applies defaults, resolves *_env secrets and
// validates.
//
// Parse is for configs built in code (tests, benchmarks): there an unset
// bus.kind means memory, the non-durable bus. Load, which `larkway serve`
// uses, makes it embedded, the durable one, in DefaultDataDir beside the
// file.
func Parse(r io.Reader) (*Config, error) { return parse(r, "") }

// parse is Parse; a non-empty fileDir is the directory of the config file
// being served.
func parse(r io.Reader, fileDir string) (*Config, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if len(b) > MaxConfigBytes {
		return nil, fmt.Errorf("reading config: larger than %d bytes", MaxConfigBytes)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("decoding config: %w", err)
	}
	if err := checkShape(&doc); err != nil {
		return nil, fmt.Errorf("decoding config: %w", err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decoding config: %w", err)
	}
	if fileDir != "" && c.Bus.Kind == "" {
		// Served without a bus named: the durable one, so that an event
		// answered 200 survives a crash.
		c.Bus.Kind = "embedded"
		if c.Bus.Embedded.Dir == "" {
			c.Bus.Embedded.Dir = filepath.Join(fileDir, DefaultDataDir)
		}
	}
	c.applyDefaults()
	if err := c.resolveSecrets(); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) applyDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8090"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.Metrics.Listen == "" {
		c.Metrics.Listen = "127.0.0.1:8093"
	}
	if c.Bus.Memory.BudgetMB == 0 {
		c.Bus.Memory.BudgetMB = 256
	}
	if c.Bus.Kind == "" {
		c.Bus.Kind = "memory"
	}
	if c.Bus.Embedded.Retention.Age == 0 {
		c.Bus.Embedded.Retention.Age = Duration(24 * time.Hour)
	}
	if c.Bus.Embedded.Retention.SizeMB == 0 {
		c.Bus.Embedded.Retention.SizeMB = 1024
	}
	if c.Bus.Embedded.MinFreeMB == 0 {
		c.Bus.Embedded.MinFreeMB = 256
	}
	if c.Bus.Pulsar.AdminURL == "" && c.Bus.Pulsar.URL != "" {
		if u, err := url.Parse(c.Bus.Pulsar.URL); err == nil && u.Hostname() != "" {
			c.Bus.Pulsar.AdminURL = "http://" + net.JoinHostPort(u.Hostname(), "8080")
		}
	}
	if c.Bus.Pulsar.OperationTimeout == 0 {
		c.Bus.Pulsar.OperationTimeout = Duration(5 * time.Second)
	}
	for i := range c.Apps {
		a := &c.Apps[i]
		if a.EventPath == "" {
			a.EventPath = "/lark/events"
		}
		if a.LongConnection.Connections == 0 {
			a.LongConnection.Connections = 1
		}
		if a.BaseURL == "" {
			a.BaseURL = "https://open.feishu.cn"
		}
		if a.Timeout == 0 {
			a.Timeout = Duration(10 * time.Second)
		}
	}
	if c.Dispatch.Deadline == 0 {
		c.Dispatch.Deadline = Duration(10 * time.Second)
	}
	if c.Dispatch.ActionTimeout == 0 {
		c.Dispatch.ActionTimeout = Duration(30 * time.Second)
	}
	if c.Dispatch.MaxAttempts == 0 {
		c.Dispatch.MaxAttempts = 5
	}
	if c.Dispatch.MaxInFlight == 0 {
		c.Dispatch.MaxInFlight = 64
	}
	if c.Dispatch.RetryBackoff == 0 {
		c.Dispatch.RetryBackoff = Duration(time.Second)
	}
	if c.Dispatch.MaxRetryAfter == 0 {
		c.Dispatch.MaxRetryAfter = Duration(time.Minute)
	}
	if c.Dispatch.DoneTTL == 0 {
		c.Dispatch.DoneTTL = Duration(24 * time.Hour)
	}
	if c.Redis.KeyPrefix == "" {
		c.Redis.KeyPrefix = "larkway:"
	}
	if c.ReplicaID == "" {
		host, _ := os.Hostname()
		c.ReplicaID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Telemetry.Tracing.SampleRatio == 0 {
		c.Telemetry.Tracing.SampleRatio = 1
	}
	if c.Cluster.ReconcileInterval == 0 {
		c.Cluster.ReconcileInterval = Duration(2 * time.Second)
	}
	if c.Ingest.MaxBodyBytes == 0 {
		c.Ingest.MaxBodyBytes = 1 << 20
	}
	if c.Ingest.CardBudget == 0 {
		c.Ingest.CardBudget = Duration(2 * time.Second)
	}
	if c.Ingest.PublishTimeout == 0 {
		c.Ingest.PublishTimeout = Duration(2 * time.Second)
	}
	if c.Admin.Console.SessionTTL == 0 {
		c.Admin.Console.SessionTTL = Duration(12 * time.Hour)
	}
	if c.Ingest.AdmissionWait == 0 {
		c.Ingest.AdmissionWait = Duration(max(min(500*time.Millisecond, 2800*time.Millisecond-c.Ingest.PublishTimeout.D()), time.Millisecond))
	}
	if c.Ingest.MaxInFlight == 0 {
		c.Ingest.MaxInFlight = runtime.GOMAXPROCS(0)
	}
	if c.Admin.JWT.Enabled() && c.Admin.JWT.RoleClaim == "" {
		c.Admin.JWT.RoleClaim = "role"
	}
}

func (c *Config) resolveSecrets() error {
	get := func(field, env string, dst *string) error {
		if env == "" {
			return nil
		}
		v, ok := os.LookupEnv(env)
		if !ok {
			return fmt.Errorf("config: %s: environment variable %s is not set", field, env)
		}
		*dst = v
		return nil
	}
	for i := range c.Apps {
		a := &c.Apps[i]
		p := fmt.Sprintf("apps[%d]", i)
		if err := get(p+".secret_env", a.SecretEnv, &a.Secret); err != nil {
			return err
		}
		if err := get(p+".verification_token_env", a.VerificationTokenEnv, &a.VerificationToken); err != nil {
			return err
		}
		if err := get(p+".encrypt_key_env", a.EncryptKeyEnv, &a.EncryptKey); err != nil {
			return err
		}
	}
	if err := get("admin.token_env", c.Admin.TokenEnv, &c.Admin.Token); err != nil {
		return err
	}
	for i := range c.Admin.Tokens {
		if err := c.Admin.Tokens[i].resolve(fmt.Sprintf("admin.tokens[%d]", i), get); err != nil {
			return err
		}
	}
	return get("redis.password_env", c.Redis.PasswordEnv, &c.Redis.Password)
}

// maxTokenFileBytes bounds an admin token file.
const maxTokenFileBytes = 4 << 10

// resolve fills Token from TokenEnv or TokenFile; exactly one source.
func (t *AdminToken) resolve(p string, get func(field, env string, dst *string) error) error {
	n := 0
	for _, s := range []string{t.Token, t.TokenEnv, t.TokenFile} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("config: %s: give exactly one of token, token_env or token_file", p)
	}
	if t.TokenFile != "" {
		f, err := os.Open(t.TokenFile)
		if err != nil {
			return fmt.Errorf("config: %s.token_file: %w", p, err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
		if err != nil {
			return fmt.Errorf("config: %s.token_file: reading: %w", p, err)
		}
		if len(b) > maxTokenFileBytes {
			return fmt.Errorf("config: %s.token_file: larger than %d bytes", p, maxTokenFileBytes)
		}
		// Secret files usually end with a newline.
		t.Token = strings.TrimSpace(string(b))
		return nil
	}
	return get(p+".token_env", t.TokenEnv, &t.Token)
}

var (
	appIDRE      = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)
	pluginNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
)

// Validate checks the whole configuration and reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("config: "+format, a...)) }
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen %q: %v", c.Listen, err)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	switch c.Bus.Kind {
	case "memory":
	case "embedded":
		if c.Bus.Embedded.Dir == "" {
			bad("bus.embedded.dir is required when bus.kind is embedded")
		}
	case "pulsar":
		if u, err := url.Parse(c.Bus.Pulsar.URL); err != nil || (u.Scheme != "pulsar" && u.Scheme != "pulsar+ssl") || u.Host == "" {
			bad("bus.pulsar.url %q: want pulsar://host:port", c.Bus.Pulsar.URL)
		}
	default:
		bad("bus.kind %q: want embedded, memory or pulsar", c.Bus.Kind)
	}
	if c.Bus.Embedded.Retention.Age < 0 {
		bad("bus.embedded.retention.age %s: want a positive duration", c.Bus.Embedded.Retention.Age.D())
	}
	if c.Bus.Embedded.Retention.SizeMB < 0 {
		bad("bus.embedded.retention.size_mb %d: want a positive size", c.Bus.Embedded.Retention.SizeMB)
	}
	if c.Bus.Embedded.MinFreeMB < 0 {
		bad("bus.embedded.min_free_mb %d: want a positive size", c.Bus.Embedded.MinFreeMB)
	}
	if c.Bus.Pulsar.DisableBatching != nil {
		bad("bus.pulsar.disable_batching was replaced by bus.pulsar.batching, default false (one broker entry per event); " +
			"drop disable_batching, and set batching: true only to batch concurrent events of one chat")
	}
	if c.Bus.Memory.MaxRetainedMB != 0 {
		bad("bus.memory.max_retained_mb was replaced by bus.memory.budget_mb, the core's whole memory (the Go memory limit: the container's memory limit less the plugins'): "+
			"the old bound counted only the events held, and the process ran 1.4-1.7x over it (a max_retained_mb of %d is about a budget_mb of %d)",
			c.Bus.Memory.MaxRetainedMB, c.Bus.Memory.MaxRetainedMB*3/2)
	}
	if c.Bus.Memory.BudgetMB < 0 {
		bad("bus.memory.budget_mb %d: want a positive size", c.Bus.Memory.BudgetMB)
	}
	if c.Redis.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Redis.Addr); err != nil {
			bad("redis.addr %q: %v", c.Redis.Addr, err)
		}
	}
	if len(c.Apps) == 0 {
		bad("apps: at least one app is required")
	}
	ids, paths := map[string]bool{}, map[string]bool{}
	for i, a := range c.Apps {
		p := fmt.Sprintf("apps[%d]", i)
		if !appIDRE.MatchString(a.ID) {
			bad("%s.id %q: want the app id, e.g. cli_a1b2c3", p, a.ID)
		}
		if ids[a.ID] {
			bad("%s.id %q: duplicate", p, a.ID)
		}
		ids[a.ID] = true
		if a.Secret == "" {
			bad("%s: secret (or secret_env) is required", p)
		}
		if a.VerificationToken == "" {
			bad("%s: verification_token is required: it authenticates every event", p)
		}
		for field, path := range map[string]string{"event_path": a.EventPath, "card_path": a.CardPath} {
			if field == "card_path" && path == "" {
				continue // no legacy card URL
			}
			if !strings.HasPrefix(path, "/") {
				bad("%s.%s %q: must start with /", p, field, path)
			}
			if paths[path] {
				bad("%s.%s %q: used by another app or path; give each its own", p, field, path)
			}
			paths[path] = true
		}
		if n := a.LongConnection.Connections; n < 1 || n > 50 {
			bad("%s.long_connection.connections %d: want 1..50 (Lark allows 50 per app)", p, n)
		}
		if u, err := url.Parse(a.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("%s.base_url %q: want http(s)://host", p, a.BaseURL)
		}
	}
	names := map[string]bool{}
	for i, pl := range c.Plugins {
		p := fmt.Sprintf("plugins[%d]", i)
		if !pluginNameRE.MatchString(pl.Name) {
			bad("%s.name %q: want lowercase letters, digits and dashes (the manifest's name)", p, pl.Name)
		}
		if names[pl.Name] {
			bad("%s.name %q: duplicate", p, pl.Name)
		}
		names[pl.Name] = true
		switch {
		case pl.Remote != nil && (pl.Path != "" || pl.SHA256 != "" || len(pl.Files) > 0 || len(pl.Args) > 0 || len(pl.Env) > 0):
			bad("%s: set either path (with sha256, files, args, env) or remote, not both", p)
		case pl.Remote != nil:
			r := pl.Remote
			if r.Address == "" {
				bad("%s.remote.address is required", p)
			}
			for _, a := range strings.Split(r.Address, ",") {
				if _, port, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimSpace(a), "dns:///")); r.Address != "" && (err != nil || port == "") {
					bad("%s.remote.address %q: want host:port, dns:///host:port, or a comma-separated list of them", p, a)
				}
			}
			for _, f := range []struct{ key, val string }{{"ca_file", r.TLS.CAFile}, {"cert_file", r.TLS.CertFile}, {"key_file", r.TLS.KeyFile}} {
				if f.val == "" {
					bad("%s.remote.tls.%s is required (remote plugins are dialled with mutual TLS only)", p, f.key)
				}
			}
			if d := r.ResolveInterval.D(); d != 0 && (d < time.Second || d > time.Hour) {
				bad("%s.remote.resolve_interval %s: want 1s..1h (default 10s)", p, d)
			}
		case pl.Path == "":
			bad("%s.path (or remote) is required", p)
		}
		if pl.SHA256 != "" && !sha256RE.MatchString(pl.SHA256) {
			bad("%s.sha256: want 64 hex digits", p)
		}
		pinned := map[string]bool{}
		for j, f := range pl.Files {
			fp := fmt.Sprintf("%s.files[%d]", p, j)
			if f.Path == "" {
				bad("%s.path is required", fp)
			} else if pinned[f.Path] {
				bad("%s.path %q: pinned twice", fp, f.Path)
			}
			pinned[f.Path] = true
			if !sha256RE.MatchString(f.SHA256) {
				bad("%s.sha256: want 64 hex digits (larkway plugin pin prints it)", fp)
			}
		}
		for _, e := range pl.Env {
			if k, _, _ := strings.Cut(e, "="); !envNameRE.MatchString(k) {
				bad("%s.env %q: want KEY=VALUE, or KEY to pass the core's own value", p, e)
			}
		}
	}
	if ps := c.PluginState; ps.Listen != "" {
		for _, f := range []struct{ key, val string }{{"ca_file", ps.TLS.CAFile}, {"cert_file", ps.TLS.CertFile}, {"key_file", ps.TLS.KeyFile}} {
			if f.val == "" {
				bad("plugin_state.tls.%s is required with plugin_state.listen", f.key)
			}
		}
	}
	if c.Dispatch.MaxAttempts < 1 || c.Dispatch.MaxAttempts > 100 {
		bad("dispatch.max_attempts %d: want 1..100", c.Dispatch.MaxAttempts)
	}
	if c.Dispatch.Deadline.D() < 10*time.Millisecond {
		bad("dispatch.deadline %s: too short", c.Dispatch.Deadline.D())
	}
	if c.Dispatch.ActionTimeout.D() < 100*time.Millisecond {
		bad("dispatch.action_timeout %s: too short", c.Dispatch.ActionTimeout.D())
	}
	if c.Dispatch.MaxInFlight < 1 {
		bad("dispatch.max_in_flight %d: want ≥ 1", c.Dispatch.MaxInFlight)
	}
	// A held retry stays unacknowledged on the bus meanwhile; an hour is
	// also the longest rate-limit reset Lark announces.
	if d := c.Dispatch.MaxRetryAfter.D(); d < 0 || d > time.Hour {
		bad("dispatch.max_retry_after %s: want 0 (default 1m) .. 1h", d)
	}
	if c.Ingest.MaxBodyBytes < 1024 || c.Ingest.MaxBodyBytes > 64<<20 {
		bad("ingest.max_body_bytes %d: want 1 KiB..64 MiB", c.Ingest.MaxBodyBytes)
	}
	if cb := c.Ingest.CardBudget.D(); cb <= 0 || cb > 2800*time.Millisecond {
		bad("ingest.card_budget %s: want > 0 and ≤ 2.8s (Lark waits 3 s)", cb)
	}
	if pt := c.Ingest.PublishTimeout.D(); pt <= 0 || pt > 2500*time.Millisecond {
		bad("ingest.publish_timeout %s: want > 0 and ≤ 2.5s (Lark waits 3 s)", pt)
	}
	if aw := c.Ingest.AdmissionWait.D(); aw <= 0 || aw+c.Ingest.PublishTimeout.D() > 2800*time.Millisecond {
		bad("ingest.admission_wait %s: want > 0 and admission_wait + publish_timeout ≤ 2.8s (Lark waits 3 s)", aw)
	}
	if c.Ingest.MaxInFlight < 1 || c.Ingest.MaxInFlight > 4096 {
		bad("ingest.max_in_flight %d: want 1..4096", c.Ingest.MaxInFlight)
	}
	if c.Admin.Listen != "" {
		errs = append(errs, c.Admin.validate()...)
	}
	if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
		bad("metrics.listen %q: %v", c.Metrics.Listen, err)
	} else if sameListener(c.Metrics.Listen, c.Listen) {
		bad("metrics.listen %q: must differ from listen (the Lark-facing listener serves no metrics)", c.Metrics.Listen)
	} else if c.Admin.Listen != "" && sameListener(c.Metrics.Listen, c.Admin.Listen) {
		bad("metrics.listen %q: must differ from admin.listen", c.Metrics.Listen)
	}
	if tr := c.Telemetry.Tracing; tr.Enabled {
		if _, _, err := net.SplitHostPort(tr.Endpoint); err != nil {
			bad("telemetry.tracing.endpoint %q: want host:port of an OTLP/HTTP collector", tr.Endpoint)
		}
	}
	if r := c.Telemetry.Tracing.SampleRatio; r < 0 || r > 1 {
		bad("telemetry.tracing.sample_ratio %v: want 0..1", r)
	}
	if rl := c.Actions.RateLimits; rl.AppPerSecond < 0 || rl.AppPerMinute < 0 || rl.PerChat < 0 || rl.PerUser < 0 {
		bad("actions.rate_limits: limits must not be negative")
	}
	if c.Dispatch.DoneTTL.D() < 8*time.Hour {
		bad("dispatch.done_ttl %s: must outlast Lark's ~7.1 h retry window (≥ 8h)", c.Dispatch.DoneTTL.D())
	}
	if c.Cluster.ReconcileInterval.D() < 100*time.Millisecond {
		bad("cluster.reconcile_interval %s: too short", c.Cluster.ReconcileInterval.D())
	}
	if strings.ContainsAny(c.ReplicaID, " *?[]\n") {
		bad("replica_id %q: no spaces or glob characters", c.ReplicaID)
	}
	sv := c.Supervision
	for name, d := range map[string]Duration{"restart_backoff": sv.RestartBackoff, "restart_backoff_max": sv.RestartBackoffMax,
		"quarantine_window": sv.QuarantineWindow, "health_interval": sv.HealthInterval, "health_timeout": sv.HealthTimeout,
		"probation_window": sv.ProbationWindow, "drain_timeout": sv.DrainTimeout} {
		if d < 0 {
			bad("supervision.%s: must not be negative", name)
		}
	}
	if sv.QuarantineAfter < 0 || sv.HealthFailures < 0 {
		bad("supervision: quarantine_after and health_failures must not be negative")
	}
	return errors.Join(errs...)
}

// sameListener reports whether two listen addresses would bind the same
// port (port 0 picks a free one each time, so never clashes).
func sameListener(a, b string) bool {
	ah, ap, err1 := net.SplitHostPort(a)
	bh, bp, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || ap != bp || ap == "0" {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ah == bh || wild(ah) || wild(bh)
}

// adminTokenMin is the shortest static admin token accepted.
const adminTokenMin = 16

var adminTokenNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$`)

// validate checks the admin API's settings (when it is enabled).
func (a *Admin) validate() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("config: "+format, args...)) }
	host, _, err := net.SplitHostPort(a.Listen)
	if err != nil {
		bad("admin.listen %q: %v", a.Listen, err)
	} else if !IsLoopbackHost(host) && !a.TLS.Enabled() {
		bad("admin.listen %q is not a loopback address: set admin.tls (cert_file, key_file) to serve the admin API over TLS, or listen on 127.0.0.1", a.Listen)
	}
	if a.TLS.Enabled() {
		if a.TLS.CertFile == "" || a.TLS.KeyFile == "" {
			bad("admin.tls: cert_file and key_file are both required")
		}
	}
	if a.Console.SessionTTL < 0 {
		bad("admin.console.session_ttl %s: want > 0", time.Duration(a.Console.SessionTTL))
	}
	if a.Token == "" && len(a.Tokens) == 0 && !a.JWT.Enabled() {
		bad("admin: admin.listen is set but no credential is: give admin.tokens, admin.jwt or admin.token (or token_env)")
	}
	if a.Token != "" && len(a.Token) < adminTokenMin {
		bad("admin.token: at least %d characters", adminTokenMin)
	}
	names, values := map[string]bool{}, map[string]bool{a.Token: a.Token != ""}
	for i, t := range a.Tokens {
		p := fmt.Sprintf("admin.tokens[%d]", i)
		if !adminTokenNameRE.MatchString(t.Name) {
			bad("%s.name %q: want letters, digits and . _ @ - (it names the principal in logs)", p, t.Name)
		}
		if names[t.Name] {
			bad("%s.name %q: duplicate", p, t.Name)
		}
		names[t.Name] = true
		switch t.Role {
		case "viewer", "operator":
		default:
			bad("%s.role %q: want viewer or operator", p, t.Role)
		}
		if len(t.Token) < adminTokenMin {
			bad("%s: the token must have at least %d characters", p, adminTokenMin)
		} else if values[t.Token] {
			bad("%s: the same token is given twice", p)
		}
		values[t.Token] = true
	}
	if j := a.JWT; j.Enabled() {
		if (j.JWKSFile == "") == (j.JWKSURL == "") {
			bad("admin.jwt: give exactly one of jwks_file or jwks_url")
		}
		if j.JWKSURL != "" {
			if u, err := url.Parse(j.JWKSURL); err != nil || u.Scheme != "https" || u.Host == "" {
				bad("admin.jwt.jwks_url %q: want https://host/path", j.JWKSURL)
			}
		}
		if j.Issuer == "" {
			bad("admin.jwt.issuer is required: tokens from another issuer must not be accepted")
		}
		if j.Audience == "" {
			bad("admin.jwt.audience is required: tokens minted for another service must not be accepted")
		}
	}
	return errs
}
