package lark

import (
	"bytes"
	"context"
	"fmt"
	"io"
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

// maxResponseBody bounds a buffered OpenAPI response body.
const maxResponseBody = 8 << 20

// bufferingClient is the larkcore.HttpClient given to the SDK. It fills the
// request context's responseMeta and reads and closes the response body
// (at most maxResponseBody) before handing a buffered copy to the SDK.
//
// Buffering matters: on HTTP 504 the SDK returns ServerTimeoutError without
// closing the body, which would pin the connection and http.Client's
// timeout goroutine until the timeout fires. With the body read and closed
// here, nothing is left open whatever the SDK does. Do runs on the caller's
// goroutine, so writing the meta needs no lock.
type bufferingClient struct {
	c *http.Client
}

func (b bufferingClient) Do(r *http.Request) (*http.Response, error) {
	resp, err := b.c.Do(r)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading response body: %w", err)
	}
	if len(body) > maxResponseBody {
		return nil, fmt.Errorf("response body exceeds %d bytes", maxResponseBody)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	if m, ok := r.Context().Value(responseMetaKey{}).(*responseMeta); ok {
		m.status = resp.StatusCode
		m.header = resp.Header
	}
	return resp, nil
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
