package main

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/telemetry/telemetrytest"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/publisher"
)

// With OTEL_EXPORTER_OTLP_ENDPOINT set the worker exports its spans, the
// command's in the trace it arrived with, and shutdown flushes them: the sink has
// them once run returns, and goleak (TestMain) finds no exporter goroutine
// left behind.
func TestRunExportsSpansAndFlushesAtShutdown(t *testing.T) {
	ns := testkit.StartJetStream(t)
	fake := daprfake.New()
	t.Cleanup(fake.Close)
	sink := telemetrytest.NewSink(true)
	collector := httptest.NewServer(sink)
	t.Cleanup(collector.Close)
	env := map[string]string{
		"NATS_URL":                    ns.ClientURL(),
		"DAPR_GRPC_ENDPOINT":          fake.GRPCAddr(),
		"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL,
		"OTEL_SERVICE_NAME":           "cw-test",
	}
	logs := &testkit.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	args := []string{"-http-addr", freeAddr(t)}
	go func() { done <- run(ctx, args, func(k string) string { return env[k] }, logs) }()

	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := js.Stream(context.Background(), command.StreamCommands)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "the worker never created its stream; logs:\n%s", logs)
	pub, err := publisher.New(js, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, pub.Close()) }()

	const traceID = "0af7651916cd43dd8448eb211c80319c"
	m := nats.NewMsg("cart.cmd.cart-1.cache")
	m.Data = []byte(`{"id":"c1","type":"cache","cart_id":"cart-1"}`)
	m.Header.Set(command.HeaderMsgID, "c1")
	m.Header.Set("Traceparent", "00-"+traceID+"-b7ad6b7169203331-01")
	_, err = js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
	require.Eventually(t, func() bool { _, ok := fake.Get("cart-1"); return ok }, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return len(fake.Traceparents(daprfake.OpSave)) == 1 }, 10*time.Second, 20*time.Millisecond)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	// The command's spans, in its trace; the readiness probe's GetMetadata
	// at start-up is a trace of its own.
	names := map[string]telemetrytest.Span{}
	for _, s := range sink.Spans() {
		require.Equal(t, "cw-test", s.Service)
		if s.TraceID == traceID {
			names[s.Name] = s
		}
	}
	process, ok := names["process cart.cmd.{cart_id}.{type}"]
	require.True(t, ok, "no process span among %v; logs:\n%s", names, logs)
	require.Equal(t, "b7ad6b7169203331", process.ParentSpanID)
	save, ok := names["dapr.proto.runtime.v1.Dapr/SaveState"]
	require.True(t, ok, "no save span among %v", names)
	require.Equal(t, names["apply"].SpanID, save.ParentSpanID)
	require.Contains(t, fake.Traceparents(daprfake.OpSave)[0], save.SpanID, "daprd got the save span's context")
}
