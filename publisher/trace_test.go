package publisher_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cartworker/cartworker/publisher"
)

func traceparent(sc trace.SpanContext) string {
	return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
}

func newRecorder(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { require.NoError(t, tp.Shutdown(context.Background())) })
	return tp, exp
}

// By default the caller's span context is sent as W3C trace context, in the
// header spelling Go's propagation.HeaderCarrier writes, and no span is
// made.
func TestPublishSendsCallersTraceContext(t *testing.T) {
	e := newEnv(t, "")
	p := newPublisher(t, e)
	tp, exp := newRecorder(t)

	c, span := tp.Tracer("test").Start(ctx(t), "checkout")
	r, err := p.AddItem(c, "c-1", coffee())
	require.NoError(t, err)
	span.End()

	m := e.stored(t, r.Seq)
	require.Equal(t, traceparent(span.SpanContext()), m.Header.Get("Traceparent"))
	require.Len(t, exp.GetSpans(), 1, "only the caller's span: the publisher made none")

	// Without a span in the context nothing is added.
	r, err = p.AddItem(ctx(t), "c-1", coffee())
	require.NoError(t, err)
	m = e.stored(t, r.Seq)
	require.Empty(t, m.Header.Get("Traceparent"))
	require.Empty(t, m.Header.Get("traceparent"))
}

// With a TracerProvider every publish is a producer span, a child of the
// caller's, whose context the command carries.
func TestPublishWithTracerProviderMakesProducerSpan(t *testing.T) {
	e := newEnv(t, "")
	tp, exp := newRecorder(t)
	p := newPublisher(t, e, publisher.WithTracerProvider(tp))

	c, parent := tp.Tracer("test").Start(ctx(t), "checkout")
	r, err := p.AddItem(c, "c-1", coffee())
	require.NoError(t, err)
	parent.End()

	spans := exp.GetSpans()
	require.Len(t, spans, 2)
	send := spans[0]
	require.Equal(t, "send cart.cmd.{cart_id}.{type}", send.Name)
	require.Equal(t, trace.SpanKindProducer, send.SpanKind)
	require.Equal(t, parent.SpanContext().SpanID(), send.Parent.SpanID())
	got := map[attribute.Key]string{}
	for _, kv := range send.Attributes {
		got[kv.Key] = kv.Value.String()
	}
	require.Equal(t, "nats", got["messaging.system"])
	require.Equal(t, "send", got["messaging.operation.type"])
	require.Equal(t, "cart.cmd.c-1.add-item", got["messaging.destination.name"])
	require.Equal(t, r.CommandID, got["messaging.message.id"])
	require.Equal(t, "c-1", got["cartworker.cart_id"])

	m := e.stored(t, r.Seq)
	require.Equal(t, traceparent(send.SpanContext), m.Header.Get("Traceparent"))
}

// WithPropagator replaces the W3C default, here by one that adds baggage.
func TestPublishWithPropagator(t *testing.T) {
	e := newEnv(t, "")
	tp, _ := newRecorder(t)
	p := newPublisher(t, e, publisher.WithPropagator(propagation.NewCompositeTextMapPropagator(
		propagation.TraceContext{}, propagation.Baggage{})))

	member, err := baggage.NewMember("tenant", "T1")
	require.NoError(t, err)
	bag, err := baggage.New(member)
	require.NoError(t, err)
	c, span := tp.Tracer("test").Start(baggage.ContextWithBaggage(ctx(t), bag), "checkout")
	defer span.End()
	r, err := p.AddItem(c, "c-1", coffee())
	require.NoError(t, err)
	m := e.stored(t, r.Seq)
	require.Equal(t, traceparent(span.SpanContext()), m.Header.Get("Traceparent"))
	require.Equal(t, "tenant=T1", m.Header.Get("Baggage"))
}
