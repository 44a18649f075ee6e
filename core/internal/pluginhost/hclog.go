package pluginhost

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
)

// hcLogger is the hclog.Logger go-plugin's host side logs through: each
// message becomes one slog record of the core's logger (so it is JSON like
// every other line), marked source=go-plugin.
//
// go-plugin names the plugin's executable under the key "plugin"; the
// core's logger already names the plugin there, so that key is renamed
// plugin_path. go-plugin also re-logs the plugin's stderr through a child
// named after the executable; those lines are dropped here because the
// Stderr writer (lineLogger) re-logs every line already, with the plugin's
// version and the line's own level and fields.
type hcLogger struct {
	l     *slog.Logger
	name  string
	level hclog.Level
	// mute is the child name whose messages are dropped (see above).
	mute    string
	dropped bool
	implied []any
}

// newHCLogger returns go-plugin's logger: warnings and errors only (its
// debug output repeats every plugin stderr line). exe is the file go-plugin
// executes, whose base name it gives the stderr child.
func newHCLogger(l *slog.Logger, exe string) hclog.Logger {
	return &hcLogger{l: l.With("source", "go-plugin"), name: "go-plugin", level: hclog.Warn, mute: filepath.Base(exe)}
}

func (h *hcLogger) Log(level hclog.Level, msg string, args ...any) {
	if h.dropped || level == hclog.Off || level < h.level {
		return
	}
	var sl slog.Level
	switch {
	case level <= hclog.Debug:
		sl = slog.LevelDebug
	case level == hclog.Info:
		sl = slog.LevelInfo
	case level == hclog.Warn:
		sl = slog.LevelWarn
	default:
		sl = slog.LevelError
	}
	if !h.l.Enabled(context.Background(), sl) {
		return
	}
	all := append(append(make([]any, 0, len(h.implied)+len(args)), h.implied...), args...)
	attrs := make([]slog.Attr, 0, len(all)/2+1)
	if h.name != "go-plugin" {
		attrs = append(attrs, slog.String("module", h.name))
	}
	for i := 0; i < len(all); i += 2 {
		if i+1 == len(all) { // hclog allows a lone value at the end
			attrs = append(attrs, slog.Any("extra_value", all[i]))
			break
		}
		k, ok := all[i].(string)
		if !ok {
			k = fmt.Sprint(all[i])
		}
		if k == "plugin" {
			k = "plugin_path"
		}
		attrs = append(attrs, slog.Any(k, all[i+1]))
	}
	h.l.LogAttrs(context.Background(), sl, msg, attrs...)
}

func (h *hcLogger) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hcLogger) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hcLogger) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hcLogger) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hcLogger) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hcLogger) IsTrace() bool { return !h.dropped && h.level <= hclog.Trace }
func (h *hcLogger) IsDebug() bool { return !h.dropped && h.level <= hclog.Debug }
func (h *hcLogger) IsInfo() bool  { return !h.dropped && h.level <= hclog.Info }
func (h *hcLogger) IsWarn() bool  { return !h.dropped && h.level <= hclog.Warn }
func (h *hcLogger) IsError() bool { return !h.dropped && h.level <= hclog.Error }

func (h *hcLogger) ImpliedArgs() []any { return h.implied }

func (h *hcLogger) With(args ...any) hclog.Logger {
	c := *h
	c.implied = append(append([]any(nil), h.implied...), args...)
	return &c
}

func (h *hcLogger) Name() string { return h.name }

func (h *hcLogger) Named(name string) hclog.Logger {
	c := *h
	c.name = h.name + "." + name
	c.dropped = h.dropped || (h.name == "go-plugin" && name == h.mute)
	return &c
}

func (h *hcLogger) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	return &c
}

func (h *hcLogger) SetLevel(level hclog.Level) { h.level = level }

// GetLevel reports Off for the muted child, so go-plugin skips parsing the
// lines it would only drop.
func (h *hcLogger) GetLevel() hclog.Level {
	if h.dropped {
		return hclog.Off
	}
	return h.level
}

func (h *hcLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

func (h *hcLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return newLineLogger(h.l)
}
