package statepool_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
)

// newRecorder returns a TracerProvider that keeps every ended span in
// memory, and the exporter holding them.
func newRecorder(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { require.NoError(t, tp.Shutdown(context.Background())) })
	return tp, exp
}

// traceparent is the W3C header of sc.
func traceparent(sc trace.SpanContext) string {
	return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
}

func attrs(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes {
		m[kv.Key] = kv.Value
	}
	return m
}

// Every state call is a client span, a child of the caller's span, and
// daprd receives that span's trace context, so that its own span of the
// call joins the caller's trace.
func TestStateCallsAreClientSpans(t *testing.T) { protocols(t, testStateCallsAreClientSpans) }

func testStateCallsAreClientSpans(t *testing.T, p statepool.Protocol) {
	tp, exp := newRecorder(t)
	f := newFake(t)
	c := newClient(t, f, statepool.Config{Protocol: p, TracerProvider: tp})

	ctx, parent := tp.Tracer("test").Start(context.Background(), "apply")
	require.NoError(t, c.Save(ctx, "k1", []byte(`{"a":1}`), statepool.SaveOptions{}))
	e, err := c.Get(ctx, "k1")
	require.NoError(t, err)
	require.NoError(t, c.Delete(ctx, "k1", e.ETag))
	require.NoError(t, c.Check(ctx))
	parent.End()

	wantNames := map[statepool.Protocol][]string{
		statepool.ProtocolHTTP: {
			"POST /v1.0/state/{storeName}", "GET /v1.0/state/{storeName}/{key}",
			"DELETE /v1.0/state/{storeName}/{key}", "GET /v1.0/metadata",
		},
		statepool.ProtocolGRPC: {
			"dapr.proto.runtime.v1.Dapr/SaveState", "dapr.proto.runtime.v1.Dapr/GetState",
			"dapr.proto.runtime.v1.Dapr/DeleteState", "dapr.proto.runtime.v1.Dapr/GetMetadata",
		},
	}[p]
	spans := exp.GetSpans()
	require.Len(t, spans, 5, "four calls and the parent")
	sent := map[string][]string{}
	for _, op := range []string{daprfake.OpSave, daprfake.OpGet, daprfake.OpDelete, daprfake.OpMetadata} {
		sent[op] = f.Traceparents(op)
		require.Len(t, sent[op], 1, "%s: daprd got no trace context", op)
	}
	for i, op := range []string{daprfake.OpSave, daprfake.OpGet, daprfake.OpDelete, daprfake.OpMetadata} {
		s := spans[i]
		require.Equal(t, wantNames[i], s.Name)
		require.Equal(t, trace.SpanKindClient, s.SpanKind)
		require.Equal(t, parent.SpanContext().SpanID(), s.Parent.SpanID(), "%s: child of the caller's span", s.Name)
		require.Equal(t, parent.SpanContext().TraceID(), s.SpanContext.TraceID())
		require.Equal(t, traceparent(s.SpanContext), sent[op][0], "%s: daprd gets the client span's context", s.Name)
		require.Equal(t, codes.Unset, s.Status.Code, s.Name)
		a := attrs(s)
		require.Equal(t, "127.0.0.1", a["server.address"].AsString(), s.Name)
		require.Positive(t, a["server.port"].AsInt64(), s.Name)
		if p == statepool.ProtocolGRPC {
			require.Equal(t, "grpc", a["rpc.system.name"].AsString())
			require.Equal(t, s.Name, a["rpc.method"].AsString())
			require.Equal(t, "OK", a["rpc.response.status_code"].AsString())
		} else {
			require.Positive(t, a["http.response.status_code"].AsInt64())
			require.NotEmpty(t, a["http.request.method"].AsString())
			require.NotEmpty(t, a["url.template"].AsString())
		}
	}
}

// A failed call ends its span in error.
func TestFailedStateCallSpanIsError(t *testing.T) { protocols(t, testFailedStateCallSpanIsError) }

func testFailedStateCallSpanIsError(t *testing.T, p statepool.Protocol) {
	tp, exp := newRecorder(t)
	f := newFake(t)
	c := newClient(t, f, statepool.Config{Protocol: p, TracerProvider: tp})
	f.FailNext(1, http.StatusInternalServerError)

	_, err := c.Get(context.Background(), "k1")
	require.Error(t, err)
	spans := exp.GetSpans()
	require.Len(t, spans, 1)
	require.Equal(t, codes.Error, spans[0].Status.Code)
	require.NotEmpty(t, attrs(spans[0])["error.type"].AsString())
	require.False(t, spans[0].Parent.IsValid(), "no caller span: a root span")
}

// Without a TracerProvider no span is made, but daprd still receives the
// caller's trace context, so that its spans join the caller's trace.
func TestStateCallsForwardTraceContextWithoutTracer(t *testing.T) {
	protocols(t, testStateCallsForwardTraceContextWithoutTracer)
}

func testStateCallsForwardTraceContextWithoutTracer(t *testing.T, p statepool.Protocol) {
	f := newFake(t)
	c := newClient(t, f, statepool.Config{Protocol: p})

	// A span context as the consumer extracts it from a command.
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x0a, 0xf7, 0x65, 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
		SpanID:     trace.SpanID{0xb7, 0xad, 0x6b, 0x71, 1, 2, 3, 4},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), sc)
	require.NoError(t, c.Save(ctx, "k1", []byte(`{"a":1}`), statepool.SaveOptions{}))
	_, err := c.Get(ctx, "k1")
	require.NoError(t, err)
	require.Equal(t, []string{traceparent(sc)}, f.Traceparents(daprfake.OpSave))
	require.Equal(t, []string{traceparent(sc)}, f.Traceparents(daprfake.OpGet))

	// No trace context, nothing sent: daprd starts its own trace, if any.
	_, err = c.Get(context.Background(), "k1")
	require.NoError(t, err)
	require.Len(t, f.Traceparents(daprfake.OpGet), 1)
}
