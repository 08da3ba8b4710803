package consumer_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/consumer"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
	cwpublisher "github.com/cartworker/cartworker/publisher"
)

// A command's trace goes from the publisher through the worker's delivery
// span and the apply span to the state calls and daprd, and on to the
// outcome event and the dead letter: publisher → consumer → statepool →
// daprfake, with spans kept in memory.
func TestTraceFollowsCommandToStateEventAndDeadLetter(t *testing.T) {
	e := newEnv(t)
	tp, exp := newSpanRecorder(t)
	e.startWorker(t, consumer.Config{TracerProvider: tp}, tracedCarts(t, e, tp))
	msgs := newHeaderLog(t, e.nc)
	pub := newTestPublisher(t, e)

	ctx, parent := tp.Tracer("test").Start(context.Background(), "checkout")
	r, err := pub.Cache(ctx, "tr1", cwpublisher.NewCart{TenantID: "T1", StoreCode: "S1", TerminalNo: 1})
	require.NoError(t, err)
	parent.End()
	ev := msgs.wait(t, subjects.Event("tr1", command.OutcomeApplied))

	process := waitSpan(t, exp, func(s tracetest.SpanStub) bool {
		return s.Name == "process cart.cmd.{cart_id}.{type}" && s.Parent.SpanID() == parent.SpanContext().SpanID()
	})
	require.Equal(t, trace.SpanKindConsumer, process.SpanKind)
	require.Equal(t, parent.SpanContext().TraceID(), process.SpanContext.TraceID())
	require.True(t, process.Parent.IsRemote(), "the parent came with the command")
	a := spanAttrs(process)
	require.Equal(t, "nats", a["messaging.system"])
	require.Equal(t, "process", a["messaging.operation.type"])
	require.Equal(t, "cart.cmd.tr1.cache", a["messaging.destination.name"])
	require.Equal(t, "cart.cmd.{cart_id}.{type}", a["messaging.destination.template"])
	require.Equal(t, r.CommandID, a["messaging.message.id"])
	require.Equal(t, "tr1", a["cartworker.cart_id"])
	require.Equal(t, "cache", a["cartworker.command.type"])
	require.Equal(t, consumer.LabelApplied, a["cartworker.outcome"])
	require.Equal(t, "1", a["cartworker.delivery.count"])
	require.Equal(t, "1", a["messaging.batch.message_count"])
	require.Equal(t, codes.Unset, process.Status.Code)

	apply := waitSpan(t, exp, func(s tracetest.SpanStub) bool {
		return s.Name == "apply" && s.Parent.SpanID() == process.SpanContext.SpanID()
	})
	require.Equal(t, "tr1", spanAttrs(apply)["cartworker.cart_id"])
	sent := append(e.fake.Traceparents(daprfake.OpGet), e.fake.Traceparents(daprfake.OpSave)...)
	// The cache command reads, then saves: client spans under apply, whose
	// contexts daprd received.
	var calls []string
	for _, s := range exp.GetSpans() {
		if s.Parent.SpanID() == apply.SpanContext.SpanID() {
			calls = append(calls, s.Name)
			require.Equal(t, trace.SpanKindClient, s.SpanKind)
			require.Contains(t, sent, traceparentOf(s.SpanContext), "daprd got the context of %s", s.Name)
		}
	}
	require.Contains(t, calls, "GET /v1.0/state/{storeName}/{key}")
	require.Contains(t, calls, "POST /v1.0/state/{storeName}")

	require.Equal(t, traceparentOf(process.SpanContext), ev.Header.Get("Traceparent"), "the event continues the delivery's trace")

	// A command that is no command: dead-lettered, with the trace.
	_, parent = tp.Tracer("test").Start(context.Background(), "bad publish")
	m := nats.NewMsg(subjects.Command("tr1", command.TypeAddItem))
	m.Data = []byte(`{"id":"tr-bad",`)
	m.Header.Set(command.HeaderMsgID, "tr-bad")
	m.Header.Set("traceparent", traceparentOf(parent.SpanContext())) // as other languages write it
	e.publishMsg(t, m)
	parent.End()
	rejected := msgs.wait(t, subjects.Event("tr1", command.OutcomeRejected))
	eventually(t, func() bool { return len(e.deadLetters(t)) == 1 }, waitFor, tick, "no dead letter")
	dl := e.deadLetters(t)[0]

	bad := waitSpan(t, exp, func(s tracetest.SpanStub) bool { return s.Parent.SpanID() == parent.SpanContext().SpanID() })
	require.Equal(t, consumer.LabelDeadLetter, spanAttrs(bad)["cartworker.outcome"])
	require.Equal(t, codes.Error, bad.Status.Code)
	require.Equal(t, traceparentOf(bad.SpanContext), dl.Header.Get("Traceparent"), "the dead letter continues the delivery's trace")
	require.Empty(t, dl.Header.Get("traceparent"), "one trace context, not two")
	require.Equal(t, traceparentOf(bad.SpanContext), rejected.Header.Get("Traceparent"))
	e.waitSettled(t)
}

// Nothing exported: no span is made, but the trace context a command came
// with still reaches daprd, the outcome event and the dead letter
// unchanged, so daprd's spans join the publisher's trace.
func TestTraceContextPropagatesWithoutExporter(t *testing.T) {
	e := newEnv(t)
	e.startWorker(t, consumer.Config{}, tracedCarts(t, e, nil))
	msgs := newHeaderLog(t, e.nc)
	pub := newTestPublisher(t, e)
	tp, _ := newSpanRecorder(t) // the publisher's process only

	ctx, parent := tp.Tracer("test").Start(context.Background(), "checkout")
	defer parent.End()
	want := traceparentOf(parent.SpanContext())
	_, err := pub.Cache(ctx, "tr2", cwpublisher.NewCart{TenantID: "T1", StoreCode: "S1", TerminalNo: 1})
	require.NoError(t, err)
	ev := msgs.wait(t, subjects.Event("tr2", command.OutcomeApplied))
	require.Equal(t, want, ev.Header.Get("Traceparent"))
	require.Contains(t, e.fake.Traceparents(daprfake.OpGet), want)
	require.Contains(t, e.fake.Traceparents(daprfake.OpSave), want)

	_, err = pub.AddItem(ctx, "tr2", item("A", 1, "10", "99")) // unknown tax code: rejected
	require.NoError(t, err)
	rejected := msgs.wait(t, subjects.Event("tr2", command.OutcomeRejected))
	require.Equal(t, want, rejected.Header.Get("Traceparent"))

	m := nats.NewMsg(subjects.Command("tr2", command.TypeAddItem))
	m.Data = []byte(`not json`)
	m.Header.Set(command.HeaderMsgID, "tr2-bad")
	m.Header.Set("Traceparent", want)
	e.publishMsg(t, m)
	eventually(t, func() bool { return len(e.deadLetters(t)) == 1 }, waitFor, tick, "no dead letter")
	require.Equal(t, want, e.deadLetters(t)[0].Header.Get("Traceparent"))

	// A command without trace context gets none, on its event or at daprd.
	before := len(e.fake.Traceparents(daprfake.OpGet))
	e.publishCmd(t, cacheCmd("tr3", ""))
	ev = msgs.wait(t, subjects.Event("tr3", command.OutcomeApplied))
	require.Nil(t, ev.Header)
	require.Len(t, e.fake.Traceparents(daprfake.OpGet), before)
	e.waitSettled(t)
}

// The commands of one cart applied together: each delivery has its span;
// the apply span is a child of the first and linked both ways with the
// others, which reach the state calls through those links.
func TestTraceLinksBatchedDeliveries(t *testing.T) {
	e := newEnv(t)
	tp, exp := newSpanRecorder(t)
	carts := tracedCarts(t, e, tp)
	hold := &holdFirst{Applier: carts, held: make(chan struct{}), release: make(chan struct{})}
	e.startWorker(t, consumer.Config{TracerProvider: tp}, hold)
	pub := newTestPublisher(t, e)

	_, err := pub.Cache(context.Background(), "tr4", cwpublisher.NewCart{TenantID: "T1", StoreCode: "S1", TerminalNo: 1})
	require.NoError(t, err)
	<-hold.held
	// Three add-items queue behind the held cache, each from its own trace.
	var parents []trace.SpanContext
	for i := range 3 {
		ctx, span := tp.Tracer("test").Start(context.Background(), fmt.Sprintf("add %d", i))
		_, err := pub.AddItem(ctx, "tr4", item(fmt.Sprintf("I%d", i), 1, "10", "01"))
		require.NoError(t, err)
		span.End()
		parents = append(parents, span.SpanContext())
	}
	eventually(t, func() bool { return e.consumerInfo(t).NumAckPending == 4 }, waitFor, tick, "the add-items were not delivered")
	close(hold.release)
	e.waitSettled(t)

	var deliveries []tracetest.SpanStub
	for _, p := range parents {
		deliveries = append(deliveries, waitSpan(t, exp, func(s tracetest.SpanStub) bool { return s.Parent.SpanID() == p.SpanID() }))
		require.Equal(t, p.TraceID(), deliveries[len(deliveries)-1].SpanContext.TraceID(), "each delivery stays in its publisher's trace")
	}
	apply := waitSpan(t, exp, func(s tracetest.SpanStub) bool {
		return s.Name == "apply" && s.Parent.SpanID() == deliveries[0].SpanContext.SpanID()
	})
	require.Equal(t, "3", spanAttrs(apply)["messaging.batch.message_count"], "the add-items were applied as one batch")
	var linked []trace.SpanID
	for _, l := range apply.Links {
		linked = append(linked, l.SpanContext.SpanID())
	}
	require.ElementsMatch(t, []trace.SpanID{deliveries[1].SpanContext.SpanID(), deliveries[2].SpanContext.SpanID()}, linked)
	for _, d := range deliveries {
		require.Equal(t, "3", spanAttrs(d)["messaging.batch.message_count"])
	}
	for _, d := range deliveries[1:] {
		require.Len(t, d.Links, 1)
		require.Equal(t, apply.SpanContext.SpanID(), d.Links[0].SpanContext.SpanID(), "%s links to its apply", d.Name)
	}
}

// holdFirst holds the first ApplyCarts until release is closed, so that
// commands queue behind it and form a batch.
type holdFirst struct {
	consumer.Applier
	once    sync.Once
	held    chan struct{}
	release chan struct{}
}

func (h *holdFirst) ApplyCarts(ctx context.Context, batches []cartcache.CartBatch) []cartcache.CartResult {
	h.once.Do(func() {
		close(h.held)
		<-h.release
	})
	return h.Applier.ApplyCarts(ctx, batches)
}

// tracedCarts is the cart service on a state client of its own against the
// env's fake, making its spans with tp (nil: none).
func tracedCarts(t *testing.T, e *env, tp trace.TracerProvider) *cartcache.Carts {
	t.Helper()
	c, err := statepool.New(statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: e.fake.URL(), TracerProvider: tp})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return cartcache.New(c, cartcache.Config{})
}

func newTestPublisher(t *testing.T, e *env) *cwpublisher.Publisher {
	t.Helper()
	p, err := cwpublisher.New(e.js, e.nc)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

func newSpanRecorder(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { require.NoError(t, tp.Shutdown(context.Background())) })
	return tp, exp
}

// waitSpan waits for an ended span that match accepts.
func waitSpan(t *testing.T, exp *tracetest.InMemoryExporter, match func(tracetest.SpanStub) bool) tracetest.SpanStub {
	t.Helper()
	var found tracetest.SpanStub
	eventually(t, func() bool {
		for _, s := range exp.GetSpans() {
			if match(s) {
				found = s
				return true
			}
		}
		return false
	}, waitFor, tick, "span not recorded")
	return found
}

func spanAttrs(s tracetest.SpanStub) map[attribute.Key]string {
	m := map[attribute.Key]string{}
	for _, kv := range s.Attributes {
		m[kv.Key] = kv.Value.String()
	}
	return m
}

func traceparentOf(sc trace.SpanContext) string {
	return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
}

// headerLog keeps every message on the event subjects, headers included.
type headerLog struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func newHeaderLog(t *testing.T, nc *nats.Conn) *headerLog {
	t.Helper()
	l := &headerLog{}
	sub, err := nc.Subscribe(subjects.Events(), func(m *nats.Msg) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.msgs = append(l.msgs, m)
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

// wait returns the first message on subject, waiting for it.
func (l *headerLog) wait(t *testing.T, subject string) *nats.Msg {
	t.Helper()
	var found *nats.Msg
	eventually(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, m := range l.msgs {
			if m.Subject == subject {
				found = m
				return true
			}
		}
		return false
	}, waitFor, tick, "nothing on %s", subject)
	return found
}
