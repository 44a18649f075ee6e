package lark

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
)

// responseMeta records the status and headers of the last HTTP response of
// one SDK call. The SDK drops them when it cannot decode a body (non-JSON
// 5xx, 504), and they are needed to classify that failure.
type responseMeta struct {
	status int
	header http.Header
}

type responseMetaKey struct{}

func withResponseMeta(ctx context.Context, m *responseMeta) context.Context {
	return context.WithValue(ctx, responseMetaKey{}, m)
}

// observingTransport fills the request context's responseMeta. RoundTrip
// runs on the goroutine that called http.Client.Do, so the write needs no
// lock.
type observingTransport struct {
	next http.RoundTripper
}

func (t observingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if m, ok := r.Context().Value(responseMetaKey{}).(*responseMeta); ok && resp != nil {
		m.status = resp.StatusCode
		m.header = resp.Header
	}
	return resp, err
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// wrapped transport.
func (t observingTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// sdkLogger adapts the SDK's logger interface to slog. The SDK logs method
// and path at debug level (LogReqAtDebug stays off, so no headers or
// tokens), and timeouts at info.
type sdkLogger struct {
	l *slog.Logger
}

func (s sdkLogger) Debug(ctx context.Context, args ...any) { s.log(ctx, slog.LevelDebug, args) }
func (s sdkLogger) Info(ctx context.Context, args ...any)  { s.log(ctx, slog.LevelInfo, args) }
func (s sdkLogger) Warn(ctx context.Context, args ...any)  { s.log(ctx, slog.LevelWarn, args) }
func (s sdkLogger) Error(ctx context.Context, args ...any) { s.log(ctx, slog.LevelError, args) }

func (s sdkLogger) log(ctx context.Context, level slog.Level, args []any) {
	if !s.l.Enabled(ctx, level) {
		return
	}
	s.l.Log(ctx, level, fmt.Sprint(args...), "source", "oapi-sdk-go")
}
