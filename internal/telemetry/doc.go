// Package telemetry sets up the worker's OpenTelemetry tracing and carries
// W3C trace context (traceparent, tracestate) in NATS headers.
//
// New builds the trace pipeline from the standard OTEL_* settings (Config):
// an OTLP exporter over HTTP/protobuf or gRPC, a batching span processor
// and a sampler, owned by the returned Tracing until Shutdown flushes it.
// Nothing is registered globally: the TracerProvider is handed to the parts
// that make spans (the consumer, the state client), and W3C trace context is
// always propagated with propagation.TraceContext, which daprd understands.
//
// Without an endpoint, or with OTEL_SDK_DISABLED=true, nothing is exported
// and TracerProvider returns a no-op provider. Its tracers make no spans but,
// as the OpenTelemetry API specifies, hand on the span context they are
// given, so the trace context a command arrived with still reaches daprd,
// the outcome event and the dead letter: daprd's spans join the publisher's
// trace either way.
//
// Carrier adapts NATS headers, whose names are case-sensitive, to the
// propagation API: it writes traceparent and tracestate in the canonical
// form Go's HTTP headers use ("Traceparent"), as propagation.HeaderCarrier
// over a nats.Header would, and reads that form or the lower-case one other
// languages' NATS clients write.
package telemetry
