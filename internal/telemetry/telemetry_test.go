package telemetry_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/cartworker/cartworker/internal/setting"
	"github.com/cartworker/cartworker/internal/telemetry"
	"github.com/cartworker/cartworker/internal/telemetry/telemetrytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestValidateNamesTheField(t *testing.T) {
	for _, tt := range []struct {
		cfg   telemetry.Config
		field string
	}{
		{telemetry.Config{Endpoint: "collector:4318"}, "Endpoint"},
		{telemetry.Config{TracesEndpoint: "http://"}, "TracesEndpoint"},
		{telemetry.Config{Protocol: "http/json"}, "Protocol"},
		{telemetry.Config{TracesProtocol: "udp"}, "TracesProtocol"},
		{telemetry.Config{Sampler: "jaeger_remote"}, "Sampler"},
		{telemetry.Config{Sampler: telemetry.SamplerRatio, SamplerArg: "1.5"}, "SamplerArg"},
		{telemetry.Config{Sampler: telemetry.SamplerParentTraceIDRatio, SamplerArg: "half"}, "SamplerArg"},
		{telemetry.Config{ShutdownTimeout: -time.Second}, "ShutdownTimeout"},
		// Checked even when export is off, so a typo shows before it is on.
		{telemetry.Config{Disabled: true, Endpoint: "ftp://x"}, "Endpoint"},
	} {
		err := tt.cfg.Validate()
		require.Error(t, err, "%+v", tt.cfg)
		var fields []string
		rest := setting.Each(err, func(e *setting.Error) { fields = append(fields, e.Field) })
		require.Empty(t, rest)
		require.Equal(t, []string{tt.field}, fields, "%+v: %v", tt.cfg, err)
	}
	require.NoError(t, telemetry.Config{}.Validate())
	require.NoError(t, telemetry.Config{
		Endpoint: "https://collector:4318", Protocol: telemetry.ProtocolGRPC, TracesProtocol: telemetry.ProtocolHTTP,
		Sampler: telemetry.SamplerParentTraceIDRatio, SamplerArg: "0.25",
	}.Validate())
}

// Without an endpoint, or with the SDK disabled, nothing is exported and the
// provider is a no-op one, which hands on the span context it is given.
func TestNoEndpointExportsNothing(t *testing.T) {
	for _, cfg := range []telemetry.Config{{}, {Disabled: true, Endpoint: "http://127.0.0.1:1"}} {
		tr, err := telemetry.New(cfg, discard())
		require.NoError(t, err)
		require.False(t, tr.Exporting())
		_, isNoop := tr.TracerProvider().(noop.TracerProvider)
		require.True(t, isNoop)

		sc := remoteSpanContext()
		ctx, span := tr.TracerProvider().Tracer("t").Start(trace.ContextWithRemoteSpanContext(context.Background(), sc), "x")
		require.Equal(t, sc, span.SpanContext())
		require.Equal(t, sc, trace.SpanContextFromContext(ctx))
		require.NoError(t, tr.Shutdown(context.Background()))
	}
}

func TestExportsOverHTTP(t *testing.T) {
	sink := telemetrytest.NewSink(true)
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		sink.ServeHTTP(w, r)
	}))
	defer srv.Close()

	for _, cfg := range []telemetry.Config{
		{Endpoint: srv.URL},                          // base URL: /v1/traces appended
		{TracesEndpoint: srv.URL + "/custom/traces"}, // used as written
	} {
		tr, err := telemetry.New(cfg, discard())
		require.NoError(t, err)
		require.True(t, tr.Exporting())
		_, span := tr.TracerProvider().Tracer("t").Start(context.Background(), "work")
		span.End()
		// Shutdown flushes what the batcher holds.
		require.NoError(t, tr.Shutdown(context.Background()))
	}
	spans := sink.Spans()
	require.Len(t, spans, 2)
	for _, s := range spans {
		require.Equal(t, "work", s.Name)
		require.Equal(t, telemetry.DefaultServiceName, s.Service)
	}
	require.Equal(t, []string{"/v1/traces", "/custom/traces"}, paths)
}

// traceServer is an OTLP/gRPC receiver.
type traceServer struct {
	collectortrace.UnimplementedTraceServiceServer
	sink *telemetrytest.Sink
}

func (s traceServer) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	s.sink.Record(req)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func TestExportsOverGRPC(t *testing.T) {
	sink := telemetrytest.NewSink(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, traceServer{sink: sink})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	defer func() {
		srv.Stop()
		<-done
	}()

	tr, err := telemetry.New(telemetry.Config{
		Endpoint: "http://" + ln.Addr().String(), Protocol: telemetry.ProtocolGRPC, ServiceName: "svc",
	}, discard())
	require.NoError(t, err)
	_, span := tr.TracerProvider().Tracer("t").Start(context.Background(), "work")
	span.End()
	require.NoError(t, tr.Shutdown(context.Background()))
	spans := sink.Spans()
	require.Len(t, spans, 1)
	require.Equal(t, "svc", spans[0].Service)
}

// The sampler setting is obeyed: always_off exports nothing.
func TestSamplerOff(t *testing.T) {
	sink := telemetrytest.NewSink(true)
	srv := httptest.NewServer(sink)
	defer srv.Close()
	tr, err := telemetry.New(telemetry.Config{Endpoint: srv.URL, Sampler: telemetry.SamplerAlwaysOff}, discard())
	require.NoError(t, err)
	_, span := tr.TracerProvider().Tracer("t").Start(context.Background(), "work")
	require.False(t, span.IsRecording())
	span.End()
	require.NoError(t, tr.Shutdown(context.Background()))
	require.Zero(t, sink.Count())
}

// A collector that never answers cannot hold shutdown beyond its timeout,
// and the failure is logged, not printed by OpenTelemetry's global handler.
func TestShutdownIsBoundedAndFailureLogged(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	var logs syncBuffer
	tr, err := telemetry.New(telemetry.Config{Endpoint: srv.URL, ShutdownTimeout: 300 * time.Millisecond},
		slog.New(slog.NewTextHandler(&logs, nil)))
	require.NoError(t, err)
	_, span := tr.TracerProvider().Tracer("t").Start(context.Background(), "work")
	span.End()
	start := time.Now()
	_ = tr.Shutdown(context.Background()) // an error or not, as the race falls
	require.Less(t, time.Since(start), 3*time.Second)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "trace export failed") },
		5*time.Second, 10*time.Millisecond, "logs: %s", logs.String())
}

// Failed exports are logged when they start and when they stop failing,
// not once per export.
func TestExportFailuresLoggedOncePerOutage(t *testing.T) {
	var mu sync.Mutex
	failing := true
	sink := telemetrytest.NewSink(false)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fail := failing
		mu.Unlock()
		if fail {
			// Not retryable, so each export fails at once.
			http.Error(w, "no", http.StatusBadRequest)
			return
		}
		sink.ServeHTTP(w, r)
	}))
	defer srv.Close()

	var logs syncBuffer
	tr, err := telemetry.New(telemetry.Config{Endpoint: srv.URL}, slog.New(slog.NewTextHandler(&logs, nil)))
	require.NoError(t, err)
	defer func() { require.NoError(t, tr.Shutdown(context.Background())) }()
	tracer := tr.TracerProvider().Tracer("t")
	export := func() {
		_, span := tracer.Start(context.Background(), "work")
		span.End()
		require.NoError(t, tr.Flush(context.Background()))
	}
	export()
	export()
	export()
	require.Equal(t, 1, strings.Count(logs.String(), "trace export failed"), logs.String())
	mu.Lock()
	failing = false
	mu.Unlock()
	export()
	export()
	require.Equal(t, 1, strings.Count(logs.String(), "trace export recovered"), logs.String())
	require.EqualValues(t, 2, sink.Count())
}

// syncBuffer is a bytes.Buffer safe for the exporter's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func remoteSpanContext() trace.SpanContext {
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:  trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled, Remote: true,
	})
}

func TestCarrier(t *testing.T) {
	sc := remoteSpanContext()
	want := "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"

	// Read in either spelling.
	for _, key := range []string{"Traceparent", "traceparent"} {
		h := nats.Header{key: []string{want}}
		got := trace.SpanContextFromContext(telemetry.Extract(context.Background(), h))
		require.True(t, got.IsValid(), key)
		require.Equal(t, sc.TraceID(), got.TraceID())
		require.Equal(t, sc.SpanID(), got.SpanID())
	}
	require.False(t, trace.SpanContextFromContext(telemetry.Extract(context.Background(), nil)).IsValid())

	// Written in the canonical spelling, replacing the other.
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), sc)
	h := nats.Header{"traceparent": []string{"00-old"}, "Other": []string{"x"}}
	telemetry.Inject(ctx, h)
	require.Equal(t, nats.Header{"Traceparent": []string{want}, "Other": []string{"x"}}, h)

	require.Equal(t, nats.Header{"Traceparent": []string{want}}, telemetry.Header(ctx))
	require.Nil(t, telemetry.Header(context.Background()), "no trace context, no header")

	require.True(t, telemetry.IsTraceHeader("Tracestate"))
	require.True(t, telemetry.IsTraceHeader("traceparent"))
	require.False(t, telemetry.IsTraceHeader("Nats-Msg-Id"))
	require.False(t, strings.Contains(want, " "))
}
