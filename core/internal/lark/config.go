package lark

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
)

// DefaultBaseURL is the Feishu OpenAPI origin. Lark (international) tenants
// use https://open.larksuite.com; tests and `make run` point BaseURL at
// core/larkemu.
const DefaultBaseURL = "https://open.feishu.cn"

// DefaultTimeout bounds one HTTP exchange with the OpenAPI (token fetch,
// send or reply) when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// DefaultDialTimeout bounds establishing a TCP connection when
// Config.DialTimeout is zero.
const DefaultDialTimeout = 5 * time.Second

// DefaultMaxIdleConnsPerHost is the keep-alive pool size when
// Config.MaxIdleConnsPerHost is zero.
const DefaultMaxIdleConnsPerHost = 64

// Config configures a Client. The zero values of BaseURL and Timeout select
// the defaults; AppID and AppSecret are required.
type Config struct {
	// AppID is the self-built app's ID (cli_…).
	AppID string
	// AppSecret is the app's secret. It is never logged.
	AppSecret string
	// BaseURL is the OpenAPI origin, without a trailing slash
	// (default DefaultBaseURL).
	BaseURL string
	// Timeout bounds each HTTP exchange, including reading the response body
	// (default DefaultTimeout). The caller's context may shorten it.
	Timeout time.Duration
	// DialTimeout bounds establishing a connection (default
	// DefaultDialTimeout).
	DialTimeout time.Duration
	// MaxIdleConnsPerHost is the keep-alive pool size (default
	// DefaultMaxIdleConnsPerHost).
	MaxIdleConnsPerHost int
}

// WithDefaults returns c with empty fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.BaseURL == "" {
		c.BaseURL = DefaultBaseURL
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.MaxIdleConnsPerHost == 0 {
		c.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	return c
}

// Validate reports every problem with c (after defaults) in one error.
func (c Config) Validate() error {
	var errs []error
	if c.AppID == "" {
		errs = append(errs, errors.New("lark: app_id is required"))
	}
	if c.AppSecret == "" {
		errs = append(errs, errors.New("lark: app_secret is required"))
	}
	if u, err := url.Parse(c.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("lark: base_url %q is not an absolute http(s) URL", c.BaseURL))
	} else if u.Path != "" || u.RawQuery != "" {
		errs = append(errs, fmt.Errorf("lark: base_url %q must be an origin without path or query", c.BaseURL))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("lark: timeout %s is negative", c.Timeout))
	}
	if c.DialTimeout < 0 {
		errs = append(errs, fmt.Errorf("lark: dial_timeout %s is negative", c.DialTimeout))
	}
	if c.MaxIdleConnsPerHost < 0 {
		errs = append(errs, fmt.Errorf("lark: max_idle_conns_per_host %d is negative", c.MaxIdleConnsPerHost))
	}
	return errors.Join(errs...)
}

// String redacts the secret so a Config can be printed safely.
func (c Config) String() string {
	return fmt.Sprintf("{AppID:%s AppSecret:%s BaseURL:%s Timeout:%s DialTimeout:%s MaxIdleConnsPerHost:%d}",
		c.AppID, redact(c.AppSecret), c.BaseURL, c.Timeout, c.DialTimeout, c.MaxIdleConnsPerHost)
}

// LogValue redacts the secret when a Config is logged with slog.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("app_id", c.AppID),
		slog.String("app_secret", redact(c.AppSecret)),
		slog.String("base_url", c.BaseURL),
		slog.Duration("timeout", c.Timeout),
		slog.Duration("dial_timeout", c.DialTimeout),
		slog.Int("max_idle_conns_per_host", c.MaxIdleConnsPerHost),
	)
}

func redact(s string) string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}
