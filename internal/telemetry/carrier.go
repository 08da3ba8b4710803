package telemetry

import (
	"context"
	"net/textproto"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// W3C trace context header names as written on NATS messages. NATS header
// names are case-sensitive; these are the forms propagation.HeaderCarrier
// writes into a nats.Header, which Go publishers using nats.go produce.
const (
	HeaderTraceparent = "Traceparent"
	HeaderTracestate  = "Tracestate"
)

// Carrier adapts a nats.Header to propagation.TextMapCarrier. Get finds a
// key in the canonical form or as written (the propagators ask for
// "traceparent", which other languages' NATS clients write in lower case);
// Set writes the canonical form and drops the other spelling, so a copied
// message never carries two trace contexts.
type Carrier nats.Header

var _ propagation.TextMapCarrier = Carrier(nil)

// Get returns the first value of key, "" if none.
func (c Carrier) Get(key string) string {
	if v := c[canonical(key)]; len(v) > 0 {
		return v[0]
	}
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set replaces key's values with value.
func (c Carrier) Set(key, value string) {
	k := canonical(key)
	if key != k {
		delete(c, key)
	}
	if lower := strings.ToLower(key); lower != k && lower != key {
		delete(c, lower)
	}
	c[k] = []string{value}
}

// Keys lists the header names.
func (c Carrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// canonical spares the two keys the propagator asks for on every message
// the allocation of textproto's canonicalisation.
func canonical(key string) string {
	switch key {
	case "traceparent":
		return HeaderTraceparent
	case "tracestate":
		return HeaderTracestate
	}
	return textproto.CanonicalMIMEHeaderKey(key)
}

// Inject writes ctx's span context into h, which must not be nil, as W3C
// trace context (the format daprd reads and forwards). It writes nothing
// when ctx carries no valid span context.
func Inject(ctx context.Context, h nats.Header) {
	propagation.TraceContext{}.Inject(ctx, Carrier(h))
}

// Header returns a new header holding ctx's trace context, or nil when ctx
// carries none, so that a message without one is sent as before.
func Header(ctx context.Context) nats.Header {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	h := make(nats.Header, 2)
	Inject(ctx, h)
	return h
}

// Extract returns ctx with the remote span context h carries, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, Carrier(h))
}

// IsTraceHeader reports whether name is a trace context header in either
// spelling.
func IsTraceHeader(name string) bool {
	switch name {
	case HeaderTraceparent, HeaderTracestate, "traceparent", "tracestate":
		return true
	}
	return false
}
