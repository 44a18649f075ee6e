package pluginhost

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
)

// maxLine bounds a buffered partial line so a plugin writing without
// newlines cannot grow the host's memory.
const maxLine = 64 << 10

// lineLogger re-emits a plugin's stderr through the core's logger, one record
// per line: JSON lines (slog or hclog) keep their level, message and fields;
// other lines are logged as-is at info, except that a Go panic or fatal
// error and every plain line after it are errors (the stack trace).
//
// The core's logger already carries the plugin's name (plugin) and, once
// described, its version; a field of the plugin's own under one of those
// keys is renamed field_KEY, so no record has a key twice.
type lineLogger struct {
	mu      sync.Mutex
	logger  *slog.Logger
	buf     bytes.Buffer
	inPanic bool
}

// reservedKeys are the keys the core's records of a plugin carry.
var reservedKeys = map[string]bool{"plugin": true, "plugin_path": true, "version": true, "source": true}

func newLineLogger(l *slog.Logger) *lineLogger { return &lineLogger{logger: l} }

func (w *lineLogger) setAttrs(args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.logger = w.logger.With(args...)
}

func (w *lineLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.buf.Write(p)
			if w.buf.Len() > maxLine {
				w.emit(w.buf.Bytes())
				w.buf.Reset()
			}
			break
		}
		w.buf.Write(p[:i])
		w.emit(w.buf.Bytes())
		w.buf.Reset()
		p = p[i+1:]
	}
	return n, nil
}

func (w *lineLogger) emit(line []byte) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return
	}
	var rec map[string]any
	if line[0] != '{' || json.Unmarshal(line, &rec) != nil {
		if bytes.HasPrefix(line, []byte("panic: ")) || bytes.HasPrefix(line, []byte("fatal error: ")) {
			w.inPanic = true
		}
		if w.inPanic {
			w.logger.Error(string(line))
			return
		}
		w.logger.Info(string(line))
		return
	}
	level := slog.LevelInfo
	msg := ""
	attrs := make([]any, 0, 2*len(rec))
	for k, v := range rec {
		switch k {
		case "level", "@level":
			s, _ := v.(string)
			switch strings.ToLower(s) {
			case "debug", "trace":
				level = slog.LevelDebug
			case "warn", "warning":
				level = slog.LevelWarn
			case "error":
				level = slog.LevelError
			}
		case "msg", "@message":
			msg, _ = v.(string)
		case "time", "@timestamp":
		default:
			if reservedKeys[k] {
				k = "field_" + k
			}
			attrs = append(attrs, k, v)
		}
	}
	w.logger.Log(context.Background(), level, msg, attrs...)
}
