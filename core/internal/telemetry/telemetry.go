// Package telemetry sets up OpenTelemetry tracing (off by default) and
// carries trace context through the bus and into plugins, so one trace runs
// from the webhook through the bus and the plugin to the Lark API call.
package telemetry

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Config selects tracing.
type Config struct {
	// Enabled turns tracing on.
	Enabled bool
	// Endpoint is the OTLP/HTTP collector, host:port (e.g. 127.0.0.1:4318).
	Endpoint string
	// Insecure sends without TLS.
	Insecure bool
	// SampleRatio of new traces recorded (0..1).
	SampleRatio float64
	// ServiceVersion is reported as service.version.
	ServiceVersion string
}

// Provider returns the tracer provider for cfg and its shutdown (which
// flushes spans). Disabled tracing gives a no-op provider.
func Provider(ctx context.Context, cfg Config) (trace.TracerProvider, func(context.Context) error, error) {
	if !cfg.Enabled {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(cfg.Endpoint), otlptracehttp.WithTimeout(5 * time.Second)}
	if cfg.Insecure {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("creating OTLP exporter: %w", err)
	}
	tp := NewSDKProvider(sdktrace.NewBatchSpanProcessor(exp), cfg.SampleRatio, cfg.ServiceVersion)
	return tp, tp.Shutdown, nil
}

// NewSDKProvider builds an SDK provider around sp (tests pass an in-memory
// recorder).
func NewSDKProvider(sp sdktrace.SpanProcessor, ratio float64, version string) *sdktrace.TracerProvider {
	res := resource.NewSchemaless(semconv.ServiceName("larkway"), semconv.ServiceVersion(version))
	return sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sp), sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))))
}

// propagator is W3C trace context, the format plugins in every language read.
var propagator = propagation.TraceContext{}

// NoSpan stands in for a span where tracing is off: callers skip starting
// spans then, as building span options allocates on every call.
var NoSpan = trace.SpanFromContext(context.Background())

// Inject writes ctx's span context into m (bus message properties or a
// delivery's trace_context), creating m if needed.
func Inject(ctx context.Context, m map[string]string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	propagator.Inject(ctx, propagation.MapCarrier(m))
	return m
}

// Extract returns ctx continuing the span context in m, if any.
func Extract(ctx context.Context, m map[string]string) context.Context {
	if len(m) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier(m))
}
