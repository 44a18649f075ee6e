package pulsar

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	pulsarlog "github.com/apache/pulsar-client-go/pulsar/log"
)

// clientLogger adapts slog to the Pulsar client's logger. Unlike the client's
// own slog wrapper, WithField and WithFields only link their fields to the
// entry they extend: the client calls them on every message it hands to a
// consumer with a dead-letter policy (three WithFields for one Debug line),
// and slog.Logger.With clones the handler and formats the attributes at once,
// 22 allocations and ~1.5 µs per message on the bench machine whether or not
// debug is enabled. The fields reach slog only when a line is logged at an
// enabled level.
type clientLogger struct {
	l    *slog.Logger
	prev *clientLogger // the entry this one extends; nil at the root
	kv   []any         // this entry's own key, value pairs (WithFields)
	// key and val are WithField's pair, in the struct to save an allocation.
	key string
	val any
}

var _ pulsarlog.Logger = (*clientLogger)(nil)

func newClientLogger(l *slog.Logger) pulsarlog.Logger { return &clientLogger{l: l} }

// attrs are the key, value pairs of c and the entries it extends, oldest
// first.
func (c *clientLogger) attrs() []any {
	var chain []*clientLogger
	for e := c; e != nil; e = e.prev {
		chain = append(chain, e)
	}
	var kv []any
	for _, e := range slices.Backward(chain) {
		kv = append(kv, e.kv...)
		if e.key != "" {
			kv = append(kv, e.key, e.val)
		}
	}
	return kv
}

func fieldsKV(f pulsarlog.Fields) []any {
	kv := make([]any, 0, 2*len(f))
	for k, v := range f {
		kv = append(kv, k, v)
	}
	return kv
}

// SubLogger is long-lived (one per producer or consumer): its fields are
// bound to the slog logger once.
func (c *clientLogger) SubLogger(f pulsarlog.Fields) pulsarlog.Logger {
	return &clientLogger{l: c.l.With(append(c.attrs(), fieldsKV(f)...)...)}
}

func (c *clientLogger) WithFields(f pulsarlog.Fields) pulsarlog.Entry {
	return &clientLogger{l: c.l, prev: c, kv: fieldsKV(f)}
}

func (c *clientLogger) WithField(name string, value any) pulsarlog.Entry {
	return &clientLogger{l: c.l, prev: c, key: name, val: value}
}

func (c *clientLogger) WithError(err error) pulsarlog.Entry { return c.WithField("error", err) }

func (c *clientLogger) enabled(level slog.Level) bool {
	return c.l.Enabled(context.Background(), level)
}

func (c *clientLogger) emit(level slog.Level, msg string) {
	c.l.Log(context.Background(), level, msg, c.attrs()...)
}

func (c *clientLogger) logln(level slog.Level, args []any) {
	if c.enabled(level) {
		c.emit(level, fmt.Sprint(args...))
	}
}

func (c *clientLogger) logf(level slog.Level, format string, args []any) {
	if c.enabled(level) {
		c.emit(level, fmt.Sprintf(format, args...))
	}
}

func (c *clientLogger) Debug(args ...any)                 { c.logln(slog.LevelDebug, args) }
func (c *clientLogger) Info(args ...any)                  { c.logln(slog.LevelInfo, args) }
func (c *clientLogger) Warn(args ...any)                  { c.logln(slog.LevelWarn, args) }
func (c *clientLogger) Error(args ...any)                 { c.logln(slog.LevelError, args) }
func (c *clientLogger) Debugf(format string, args ...any) { c.logf(slog.LevelDebug, format, args) }
func (c *clientLogger) Infof(format string, args ...any)  { c.logf(slog.LevelInfo, format, args) }
func (c *clientLogger) Warnf(format string, args ...any)  { c.logf(slog.LevelWarn, format, args) }
func (c *clientLogger) Errorf(format string, args ...any) { c.logf(slog.LevelError, format, args) }
