package telemetry_test

import (
	"context"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/cartworker/cartworker/internal/telemetry/telemetrytest"
)

// BenchmarkCommandSpans is what exporting costs per command of a batch of
// one: the spans the worker makes (process, apply, a get and a save) with
// their attributes, batched and sent over OTLP/HTTP to an in-process sink,
// whose own work is counted too. The batcher blocks rather than drops when
// its queue is full (the worker's drops), so that every span is paid for.
func BenchmarkCommandSpans(b *testing.B) {
	sink := telemetrytest.NewSink(false)
	srv := httptest.NewServer(sink)
	defer srv.Close()
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(srv.URL+telemetrytest.TracesPath))
	if err != nil {
		b.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithBlocking()))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tracer := tp.Tracer("bench")
	consumer := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	client := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
	processAttrs := []attribute.KeyValue{
		attribute.String("messaging.system", "nats"), attribute.String("messaging.operation.type", "process"),
		attribute.String("messaging.operation.name", "process"), attribute.String("messaging.destination.name", "cart.cmd.c-1.add-item"),
		attribute.String("messaging.destination.template", "cart.cmd.{cart_id}.{type}"), attribute.Int("messaging.batch.message_count", 1),
		attribute.String("cartworker.command.type", "add-item"), attribute.String("cartworker.outcome", "applied"),
		attribute.String("messaging.message.id", "CMDIDCMDIDCMDIDCMDID"), attribute.String("cartworker.cart_id", "c-1"),
		attribute.String("messaging.consumer.group.name", "cart-worker-p07"), attribute.Int64("cartworker.delivery.count", 1),
		attribute.Int64("cartworker.stream.sequence", 123456),
	}
	callAttrs := []attribute.KeyValue{
		attribute.String("rpc.system.name", "grpc"), attribute.String("rpc.method", "dapr.proto.runtime.v1.Dapr/GetState"),
		attribute.String("rpc.response.status_code", "OK"), attribute.String("server.address", "127.0.0.1"), attribute.Int("server.port", 50001),
	}
	b.ReportAllocs()
	for b.Loop() {
		ctx, process := tracer.Start(context.Background(), "process cart.cmd.{cart_id}.{type}", consumer...)
		ctx, apply := tracer.Start(ctx, "apply")
		apply.SetAttributes(attribute.String("cartworker.cart_id", "c-1"), attribute.Int("messaging.batch.message_count", 1))
		for range 2 {
			_, call := tracer.Start(ctx, "dapr.proto.runtime.v1.Dapr/GetState", client...)
			call.SetAttributes(callAttrs...)
			call.End()
		}
		apply.End()
		process.SetAttributes(processAttrs...)
		process.End()
	}
	if err := tp.ForceFlush(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(sink.Count())/float64(b.N), "spans/op")
}
