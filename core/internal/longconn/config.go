package longconn

import (
	"errors"
	"fmt"
	"net/url"
	"time"
)

// MaxConnections is Lark's limit of long connections per app
// (docs/lark-facts.md#long-connection); the 51st handshake is refused with
// Handshake-Autherrcode 1000040350 (docs/lark-facts.md#handshake).
const MaxConnections = 50

// Bounds for the ping interval Lark's ClientConfig asks for (seconds on the
// wire; Lark sends values around 90–120 s). A zero or absurd value must not
// become a busy ping loop or a connection nobody checks for minutes.
const (
	MinServerPingInterval = 10 * time.Second
	MaxServerPingInterval = 2 * time.Minute
	// DefaultPingInterval applies until the server says otherwise.
	DefaultPingInterval = 2 * time.Minute
)

// Config tunes a Client. Zero values take the defaults noted.
type Config struct {
	// AppID and AppSecret of a self-built app (long connections are not
	// offered to marketplace apps).
	AppID     string
	AppSecret string
	// BaseURL is the OpenAPI origin (default https://open.feishu.cn; Lark
	// international: https://open.larksuite.com; tests: the emulator).
	BaseURL string
	// Connections is how many connections to keep open for the app (default
	// 1, at most MaxConnections). Lark sends each event to one of them at
	// random, so more connections add redundancy, not copies.
	Connections int

	// Workers bounds how many frames are handled at once, over all
	// connections (default 16). QueueSize bounds frames waiting for a worker
	// (default 256); a frame that finds the queue full is acked 500 at once
	// so Lark redelivers it later, and the connection's read loop never
	// blocks (it must keep reading pongs).
	Workers   int
	QueueSize int

	// PublishTimeout bounds one bus publish (default 2 s: Lark waits 3 s for
	// the ack). CardTimeout bounds one CardResponder call (default 2.5 s).
	PublishTimeout time.Duration
	CardTimeout    time.Duration

	// DiscoveryTimeout bounds the endpoint discovery POST (default 10 s).
	// HandshakeTimeout bounds the WebSocket handshake (default 10 s).
	// WriteTimeout bounds writing one frame (default 10 s).
	DiscoveryTimeout time.Duration
	HandshakeTimeout time.Duration
	WriteTimeout     time.Duration

	// PingInterval, when set, is the fixed ping period and the server's
	// ClientConfig.PingInterval is ignored. Zero follows the server, clamped
	// to [MinServerPingInterval, MaxServerPingInterval], DefaultPingInterval
	// until it answers.
	PingInterval time.Duration
	// LivenessTimeout is how long a connection may go without receiving any
	// frame (pongs included) before it is presumed half-open, closed and
	// replaced. It must exceed the ping interval; zero means 2.5 times the
	// ping interval in force.
	LivenessTimeout time.Duration

	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// connection attempts of one connection slot (defaults 1 s and 2 min);
	// each wait is drawn at random from the upper half of the current step.
	ReconnectMin time.Duration
	ReconnectMax time.Duration

	// MaxMessageBytes bounds an event's payload, reassembled from fragments
	// or not (default 4 MiB). A single WebSocket message larger than this
	// plus 64 KiB closes the connection.
	MaxMessageBytes int
	// FragmentTTL is how long the fragments of a message wait for the rest
	// (default 10 s). MaxPendingMessages bounds messages being reassembled
	// per connection (default 64); beyond it the oldest is dropped.
	FragmentTTL        time.Duration
	MaxPendingMessages int
}

// DefaultBaseURL is Feishu's OpenAPI origin.
const DefaultBaseURL = "https://open.feishu.cn"

// withDefaults returns c with zero values replaced by defaults.
func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d == 0 {
			*d = v
		}
	}
	if c.BaseURL == "" {
		c.BaseURL = DefaultBaseURL
	}
	defInt(&c.Connections, 1)
	defInt(&c.Workers, 16)
	defInt(&c.QueueSize, 256)
	defInt(&c.MaxMessageBytes, 4<<20)
	defInt(&c.MaxPendingMessages, 64)
	def(&c.PublishTimeout, 2*time.Second)
	def(&c.CardTimeout, 2500*time.Millisecond)
	def(&c.DiscoveryTimeout, 10*time.Second)
	def(&c.HandshakeTimeout, 10*time.Second)
	def(&c.WriteTimeout, 10*time.Second)
	def(&c.ReconnectMin, time.Second)
	def(&c.ReconnectMax, 2*time.Minute)
	def(&c.FragmentTTL, 10*time.Second)
	return c
}

// Validate reports the first problem with c (after defaults), naming the
// field. It never mentions the secret's value.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.AppID == "" {
		bad("AppID is required")
	}
	if c.AppSecret == "" {
		bad("AppSecret is required")
	}
	if u, err := url.Parse(c.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("BaseURL %q is not an http(s) URL", c.BaseURL)
	}
	if c.Connections < 1 || c.Connections > MaxConnections {
		bad("Connections %d is outside 1..%d (Lark's limit per app)", c.Connections, MaxConnections)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"Workers", c.Workers}, {"QueueSize", c.QueueSize}, {"MaxMessageBytes", c.MaxMessageBytes},
		{"MaxPendingMessages", c.MaxPendingMessages}} {
		if f.v < 0 {
			bad("%s %d is negative", f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"PublishTimeout", c.PublishTimeout}, {"CardTimeout", c.CardTimeout}, {"DiscoveryTimeout", c.DiscoveryTimeout},
		{"HandshakeTimeout", c.HandshakeTimeout}, {"WriteTimeout", c.WriteTimeout}, {"PingInterval", c.PingInterval},
		{"LivenessTimeout", c.LivenessTimeout}, {"ReconnectMin", c.ReconnectMin}, {"ReconnectMax", c.ReconnectMax},
		{"FragmentTTL", c.FragmentTTL}} {
		if f.v < 0 {
			bad("%s %s is negative", f.name, f.v)
		}
	}
	if c.ReconnectMax < c.ReconnectMin {
		bad("ReconnectMax %s is below ReconnectMin %s", c.ReconnectMax, c.ReconnectMin)
	}
	if c.LivenessTimeout > 0 {
		ping := c.PingInterval
		if ping == 0 {
			ping = MaxServerPingInterval // the longest the server may ask for
		}
		if c.LivenessTimeout <= ping {
			bad("LivenessTimeout %s must exceed the ping interval (%s)", c.LivenessTimeout, ping)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("longconn config: %w", errors.Join(errs...))
	}
	return nil
}

// serverPingInterval turns ClientConfig.PingInterval (seconds) into the
// interval to use: clamped, and the default when absent.
func serverPingInterval(seconds int) time.Duration {
	if seconds <= 0 {
		return DefaultPingInterval
	}
	d := time.Duration(seconds) * time.Second
	return min(max(d, MinServerPingInterval), MaxServerPingInterval)
}

// livenessFor is the liveness deadline for a ping interval.
func (c *Config) livenessFor(ping time.Duration) time.Duration {
	if c.LivenessTimeout > 0 {
		return c.LivenessTimeout
	}
	return ping * 5 / 2
}
