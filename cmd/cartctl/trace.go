package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"

	"go.opentelemetry.io/otel/trace"
)

// traced returns ctx carrying a new W3C trace, sampled, so that the
// commands cartctl publishes under it carry a traceparent: the worker's and
// daprd's spans then join one trace an operator can look up by the id
// printed on w. A ctx that already carries a span context is kept as it is.
//
// cartctl exports no span of its own: the trace's root is this context,
// which the worker's consumer span names as its parent.
func traced(ctx context.Context, w io.Writer) context.Context {
	if trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	var tid trace.TraceID
	var sid trace.SpanID
	// crypto/rand.Read never fails (Go 1.24+), and an all-zero id would
	// only make the context invalid, never wrong.
	_, _ = rand.Read(tid[:])
	_, _ = rand.Read(sid[:])
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
	fmt.Fprintf(w, "trace id: %s\n", tid)
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}
