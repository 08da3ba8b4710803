package consumer

import (
	"cmp"
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/telemetry"
)

// This file traces the worker, following OpenTelemetry's messaging
// conventions:
//
//   - every delivery is a consumer span, "process <prefix>.cmd.{cart_id}.{type}",
//     a child of the trace context its headers carry (the publisher's),
//     with the cart, the command type, the outcome, the delivery count and
//     the size of its batch;
//   - a cart's batch is applied in one read-modify-write, so each attempt
//     at it is one "apply" span, a child of the batch's first delivery
//     span and linked to every delivery span of the batch, each of which
//     links back to it; the state calls of the attempt (internal/statepool)
//     are its children. A batch of one is then a single chain: publisher,
//     process, apply, state call, daprd; the other commands of a larger
//     batch reach the state calls through their links;
//   - the outcome event and the dead letter carry the delivery span's
//     context, so that whoever reads them continues the trace.
//
// Without a TracerProvider, or with a no-op one (nothing exported), no span
// is made, and the delivery's "span" is the remote span context the command
// arrived with: that context, unchanged, reaches daprd, the event and the
// dead letter, and a command without one costs nothing more than before.

// tracerName is the instrumentation scope of the worker's spans.
const tracerName = "github.com/cartworker/cartworker/internal/consumer"

// applySpan names the span of one read-modify-write of a cart's batch.
const applySpan = "apply"

// tracing holds what the worker's spans share.
type tracing struct {
	// tracer is nil when spans are off.
	tracer trace.Tracer
	// template is the command subject with placeholders:
	// messaging.destination.template, and the span name's destination.
	template string
	// process is the name of every delivery's span.
	process string
}

func newTracing(cfg Config) tracing {
	template := cfg.Subjects.Command("{cart_id}", "{type}")
	t := tracing{template: template, process: "process " + template}
	if _, off := cfg.TracerProvider.(noop.TracerProvider); cfg.TracerProvider != nil && !off {
		t.tracer = cfg.TracerProvider.Tracer(tracerName)
	}
	return t
}

// consumerSpan starts a consumer span; one slice for every delivery.
var consumerSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}

// startDelivery starts the consumer span of msg, a child of the trace
// context its headers carry.
func (w *Worker) startDelivery(msg jetstream.Msg) trace.Span {
	ctx := telemetry.Extract(context.Background(), msg.Headers())
	if w.tracing.tracer == nil {
		return trace.SpanFromContext(ctx)
	}
	_, span := w.tracing.tracer.Start(ctx, w.tracing.process, consumerSpan...)
	return span
}

// endDelivery describes the settled delivery d on its span, of a batch of
// batch deliveries, and ends it.
func (w *Worker) endDelivery(d *delivery, batch int, outcome string) {
	if d.span == nil {
		return
	}
	if d.span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 14)
		attrs = append(attrs,
			semconv.MessagingSystemKey.String("nats"),
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("process"),
			semconv.MessagingDestinationName(w.subject(d.msg)),
			semconv.MessagingDestinationTemplate(w.tracing.template),
			semconv.MessagingBatchMessageCount(batch),
			attribute.String("cartworker.command.type", d.typ),
			attribute.String("cartworker.outcome", outcome),
		)
		if id := cmp.Or(d.cmd.ID, d.msg.Headers().Get(command.HeaderMsgID)); id != "" {
			attrs = append(attrs, semconv.MessagingMessageID(id))
		}
		if d.cmd.CartID != "" {
			attrs = append(attrs, attribute.String("cartworker.cart_id", d.cmd.CartID))
		}
		if d.md != nil {
			attrs = append(attrs,
				semconv.MessagingConsumerGroupName(d.md.Consumer),
				attribute.Int64("cartworker.delivery.count", int64(d.md.NumDelivered)),
				attribute.Int64("cartworker.stream.sequence", int64(d.md.Sequence.Stream)),
			)
		}
		d.span.SetAttributes(attrs...)
		// A rejection is the cart's answer, not a failure; these are.
		switch outcome {
		case LabelDeadLetter, LabelRetry, LabelInvalid:
			d.span.SetStatus(codes.Error, outcome)
		}
	}
	d.span.End()
}

// startApply starts the span of one attempt at applying the carts at
// pending: a child of the first delivery's span, linked both ways with the
// others'. It returns the context to call the Applier with and a func that
// ends the span with the attempt's results. Without spans the context only
// carries the first delivery's span context, and end does nothing.
func (w *Worker) startApply(ctx context.Context, carts [][]*delivery, pending []int) (context.Context, func([]cartcache.CartResult)) {
	first := carts[pending[0]][0]
	if w.tracing.tracer == nil {
		return traced(ctx, first), func([]cartcache.CartResult) {}
	}
	var links []trace.Link
	count := 0
	for _, i := range pending {
		count += len(carts[i])
		for _, d := range carts[i] {
			if sc := spanContext(d); d != first && sc.IsValid() {
				links = append(links, trace.Link{SpanContext: sc})
			}
		}
	}
	ctx, span := w.tracing.tracer.Start(traced(ctx, first), applySpan, trace.WithLinks(links...))
	if span.IsRecording() {
		attrs := []attribute.KeyValue{
			semconv.MessagingBatchMessageCount(count),
			attribute.Int("cartworker.carts", len(pending)),
		}
		if len(pending) == 1 {
			attrs = append(attrs, attribute.String("cartworker.cart_id", first.cmd.CartID))
		}
		span.SetAttributes(attrs...)
		for _, i := range pending {
			for _, d := range carts[i] {
				if d != first && d.span != nil {
					d.span.AddLink(trace.Link{SpanContext: span.SpanContext()})
				}
			}
		}
	}
	return ctx, func(results []cartcache.CartResult) {
		defer span.End()
		if !span.IsRecording() {
			return
		}
		for _, res := range results {
			if res.Err != nil {
				span.SetStatus(codes.Error, res.Err.Error())
				return
			}
		}
	}
}

// traced returns ctx carrying d's span, whose trace context the event and
// the dead letter of d are sent with.
func traced(ctx context.Context, d *delivery) context.Context {
	if d.span == nil || !d.span.SpanContext().IsValid() {
		return ctx
	}
	return trace.ContextWithSpan(ctx, d.span)
}

func spanContext(d *delivery) trace.SpanContext {
	if d.span == nil {
		return trace.SpanContext{}
	}
	return d.span.SpanContext()
}
