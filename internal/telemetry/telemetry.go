package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"runtime/debug"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing is the worker's trace pipeline. Create it with New; Shutdown
// flushes and stops it.
type Tracing struct {
	provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider // nil when nothing is exported
	exp      *loggedExporter          // nil when nothing is exported
	cfg      Config
}

// New builds the pipeline cfg describes, which must pass Validate. It does
// not dial: the exporter connects on its first export, so a collector that
// is down costs spans, never the worker's start. Export failures are logged
// to log once per outage, not reported through OpenTelemetry's global error
// handler.
func New(cfg Config, log *slog.Logger) (*Tracing, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if !cfg.Exporting() {
		return &Tracing{provider: noop.NewTracerProvider(), cfg: cfg}, nil
	}
	sampler, err := cfg.sampler()
	if err != nil {
		return nil, err
	}
	exp, err := newExporter(cfg)
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL, resourceAttrs(cfg)...))
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	logged := newLoggedExporter(exp, log, cfg.tracesURL())
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(logged),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sampler),
	)
	return &Tracing{provider: tp, sdk: tp, exp: logged, cfg: cfg}, nil
}

// TracerProvider is the provider the worker's parts make spans with: the
// SDK's when exporting, else a no-op one that still hands on the trace
// context it is given.
func (t *Tracing) TracerProvider() trace.TracerProvider { return t.provider }

// Exporting reports whether spans are sent anywhere.
func (t *Tracing) Exporting() bool { return t.sdk != nil }

// LogValue describes the pipeline for the start-up log line.
func (t *Tracing) LogValue() slog.Value {
	if t.sdk == nil {
		return slog.GroupValue(slog.Bool("exporting", false))
	}
	return slog.GroupValue(
		slog.Bool("exporting", true),
		slog.String("endpoint", redactURL(t.cfg.tracesURL())),
		slog.String("protocol", t.cfg.TracesProtocol),
		slog.String("sampler", t.cfg.Sampler),
		slog.String("service_name", t.cfg.ServiceName),
	)
}

// Flush exports the spans ended so far, within ctx.
func (t *Tracing) Flush(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	return t.sdk.ForceFlush(ctx)
}

// redactURL hides a password in a URL's user info.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	return u.Redacted()
}

// Shutdown exports the spans still buffered and stops the exporter, within
// ShutdownTimeout (or ctx's sooner deadline). When that runs out, the
// export under way is cancelled and what is left is dropped, so that a
// collector that does not answer holds nothing up for long. Spans ended
// after Shutdown are dropped. It is safe to call more than once.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.ShutdownTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, t.exp.abort)
	defer stop()
	if err := t.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry: flush spans to %s: %w", t.cfg.tracesURL(), err)
	}
	return nil
}

// newExporter returns the OTLP exporter of cfg's protocol, pointed at its
// traces URL. The exporters read the other OTEL_EXPORTER_OTLP_* variables
// (headers, timeout, certificates, compression) from the environment
// themselves.
func newExporter(cfg Config) (sdktrace.SpanExporter, error) {
	// Neither constructor dials, so no context of ours is held.
	ctx := context.Background()
	if cfg.TracesProtocol == ProtocolGRPC {
		return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(cfg.tracesURL()))
	}
	return otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(cfg.tracesURL()))
}

// resourceAttrs names the service; the build's module version, when it
// has one, is its version.
func resourceAttrs(cfg Config) []attribute.KeyValue {
	attrs := []attribute.KeyValue{semconv.ServiceName(cfg.ServiceName)}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		attrs = append(attrs, semconv.ServiceVersion(bi.Main.Version))
	}
	return attrs
}

// loggedExporter logs a failing export once, when the failures start, and
// once more when exports recover, instead of handing every failure to
// OpenTelemetry's global error handler, which would print each one to
// stderr outside the worker's structured log. Once aborted, by a shutdown
// that ran out of time, it cancels the export under way and drops the rest.
type loggedExporter struct {
	sdktrace.SpanExporter
	log     *slog.Logger
	url     string
	failing atomic.Bool

	aborted context.Context
	abort   context.CancelFunc
}

func newLoggedExporter(exp sdktrace.SpanExporter, log *slog.Logger, url string) *loggedExporter {
	e := &loggedExporter{SpanExporter: exp, log: log, url: url}
	e.aborted, e.abort = context.WithCancel(context.Background())
	return e
}

func (e *loggedExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if e.aborted.Err() != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(e.aborted, cancel)
	defer stop()
	err := e.SpanExporter.ExportSpans(ctx, spans)
	if err != nil {
		if !e.failing.Swap(true) {
			e.log.Warn("trace export failed; spans are dropped until it recovers", "endpoint", e.url, "spans", len(spans), "err", err)
		}
		return nil
	}
	if e.failing.Swap(false) {
		e.log.Info("trace export recovered", "endpoint", e.url)
	}
	return nil
}
