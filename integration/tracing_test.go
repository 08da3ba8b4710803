//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dockercontainer "github.com/moby/moby/api/types/container"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.yaml.in/yaml/v3"

	"github.com/cartworker/cartworker/cartworkertest"
	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/deployments"
	"github.com/cartworker/cartworker/internal/telemetry/telemetrytest"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/publisher"
)

// TestTraceSpansPublisherWorkerAndDaprd publishes one command through the
// publisher package under a parent span and finds, in the publisher's
// trace: the worker's consumer span and its Dapr client span, exported
// over OTLP/HTTP to a collector the test serves, and daprd's own span of
// that call, exported by daprd over Zipkin to a sink the test serves, as a
// child of the worker's client span. With the worker exporting nothing,
// daprd's span still joins the trace, under the publisher's span.
//
// daprd runs with the shipped tracing Configuration plus the Zipkin
// exporter, on the host network and on loopback ports, so that it reaches
// the test's sink on 127.0.0.1 as the worker reaches daprd; its Redis is the
// shared stack's, through its loopback port.
func TestTraceSpansPublisherWorkerAndDaprd(t *testing.T) {
	ctx := testkit.Context(t, 4*time.Minute)
	shared := sharedStack(t)
	// Both SDKs export every 200ms instead of every 5s.
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "200")

	zipkin := newZipkinSink(t)
	collector := telemetrytest.NewSink(true)
	otlp := httptest.NewServer(collector)
	t.Cleanup(otlp.Close)
	daprd := startTracedDaprd(ctx, t, shared, zipkin.url+"/api/v2/spans")

	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"grpc", map[string]string{"WORKER_STATE_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.URL}},
		{"http", map[string]string{"WORKER_STATE_PROTOCOL": "http", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.URL}},
		{"no export", map[string]string{"WORKER_STATE_PROTOCOL": "grpc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := connectBus(ctx, t, shared.NATSURL())
			env := maps.Clone(tc.env)
			env["DAPR_HTTP_ENDPOINT"], env["DAPR_GRPC_ENDPOINT"] = daprd.httpURL, "http://"+daprd.grpcAddr
			inProcessWorker(t, shared, "tracing-"+strings.ReplaceAll(tc.name, " ", "-"), env)
			b.waitConsumer(ctx, t)

			pubSpans := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(pubSpans))
			t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			pub, err := publisher.New(b.js, b.nc, publisher.WithTracerProvider(tp), publisher.WithWaitTimeout(30*time.Second))
			require.NoError(t, err)
			t.Cleanup(func() { _ = pub.Close() })
			cart := newCartIDs("trace", 1)[0]
			events := make(chan *nats.Msg, 4)
			sub, err := b.nc.ChanSubscribe(b.subj.Event(cart, command.OutcomeApplied), events)
			require.NoError(t, err)
			t.Cleanup(func() { _ = sub.Unsubscribe() })

			pctx, parent := tp.Tracer("integration").Start(ctx, "checkout")
			ev, err := pub.PublishAndWait(pctx, publisher.CacheCommand(cart, publisher.NewCart{TenantID: "T1", StoreCode: "S1", TerminalNo: 1}))
			parent.End()
			require.NoError(t, err)
			require.Equal(t, command.OutcomeApplied, ev.Outcome)
			traceID := parent.SpanContext().TraceID().String()
			send := findSpan(t, pubSpans, "send cart.cmd.{cart_id}.{type}")
			require.Equal(t, traceID, send.SpanContext.TraceID().String())
			sendID := send.SpanContext.SpanID().String()

			var event *nats.Msg
			select {
			case event = <-events:
			case <-ctx.Done():
				t.Fatal("no applied event")
			}
			require.Contains(t, event.Header.Get("Traceparent"), traceID, "the event carries the trace")

			if tc.env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "" {
				// Nothing exported: daprd's spans hang under the
				// publisher's span, which the worker forwarded.
				spans := zipkin.waitFor(ctx, t, func(s zipkinSpan) bool { return s.TraceID == traceID && s.ParentID == sendID },
					"daprd span under the publisher's send span")
				t.Logf("daprd: %s", spans)
				require.Equal(t, "00-"+traceID+"-"+sendID+"-01", event.Header.Get("Traceparent"), "forwarded unchanged")
				return
			}

			process := waitOTLP(ctx, t, collector, func(s telemetrytest.Span) bool {
				return s.TraceID == traceID && s.ParentSpanID == sendID
			}, "the worker's consumer span, a child of the publisher's send span")
			require.Equal(t, "process cart.cmd.{cart_id}.{type}", process.Name)
			require.Equal(t, "cartworker", process.Service)
			require.Equal(t, "nats", process.Attributes["messaging.system"])
			require.Equal(t, "process", process.Attributes["messaging.operation.type"])
			require.Equal(t, b.subj.Command(cart, command.TypeCache), process.Attributes["messaging.destination.name"])
			require.Equal(t, cart, process.Attributes["cartworker.cart_id"])
			require.Equal(t, "applied", process.Attributes["cartworker.outcome"])
			require.Equal(t, "00-"+traceID+"-"+process.SpanID+"-01", event.Header.Get("Traceparent"))
			apply := waitOTLP(ctx, t, collector, func(s telemetrytest.Span) bool {
				return s.Name == "apply" && s.ParentSpanID == process.SpanID
			}, "the apply span under the consumer span")
			clients := map[string]telemetrytest.Span{}
			for _, s := range collector.Spans() {
				if s.ParentSpanID == apply.SpanID {
					clients[s.SpanID] = s
				}
			}
			require.NotEmpty(t, clients, "no Dapr client span under apply")

			// daprd's span of a state call is a child of the worker's
			// client span of it, in the publisher's trace.
			spans := zipkin.waitFor(ctx, t, func(s zipkinSpan) bool {
				_, ok := clients[s.ParentID]
				return s.TraceID == traceID && ok
			}, "daprd span under a worker client span")
			for _, s := range spans {
				t.Logf("daprd span %q (%s) under worker span %q", s.Name, s.Kind, clients[s.ParentID].Name)
			}
		})
	}
}

// tracedDaprd is the endpoints of startTracedDaprd's daprd.
type tracedDaprd struct{ httpURL, grpcAddr string }

// startTracedDaprd runs daprd on the host network with loopback ports, the
// shipped component pointed at st's Redis and the shipped Configuration
// with a Zipkin exporter to zipkinURL.
//
// A test-only customizer, not cartworkertest.WithDaprd: the sink is an
// httptest server on the test's loopback, which a container on the
// stack's network cannot reach, so this daprd joins the host's network
// instead, beside the stack rather than in it.
func startTracedDaprd(ctx context.Context, t *testing.T, st *stack, zipkinURL string) tracedDaprd {
	t.Helper()
	redisAddr, err := st.RedisContainer().PortEndpoint(ctx, "6379/tcp", "")
	require.NoError(t, err)
	dir := t.TempDir()

	comp := string(deployments.CartstoreComponent())
	require.Contains(t, comp, "value: redis:6379")
	compFile := filepath.Join(dir, "cartstore.yaml")
	require.NoError(t, os.WriteFile(compFile, []byte(strings.Replace(comp, "value: redis:6379", "value: "+redisAddr, 1)), 0o644))

	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal(deployments.DaprConfig(), &cfg))
	spec, _ := cfg["spec"].(map[string]any)
	tracing, _ := spec["tracing"].(map[string]any)
	require.NotNil(t, tracing, "deployments/dapr/config.yaml has no spec.tracing")
	require.Equal(t, "1", tracing["samplingRate"])
	tracing["zipkin"] = map[string]any{"endpointAddress": zipkinURL}
	out, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	cfgFile := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgFile, out, 0o644))

	ports := make([]int, 3)
	for i := range ports {
		ports[i] = freePort(t)
	}
	image, err := cartworkertest.Image(cartworkertest.DaprdImageVar)
	require.NoError(t, err)
	c, err := testcontainers.Run(ctx, image,
		testcontainers.WithName("cwit-traced-daprd-"+randomHex(4)),
		testcontainers.WithHostConfigModifier(func(hc *dockercontainer.HostConfig) { hc.NetworkMode = "host" }),
		testcontainers.WithCmd("./daprd", "--app-id", appID,
			"--dapr-http-port", strconv.Itoa(ports[0]), "--dapr-grpc-port", strconv.Itoa(ports[1]),
			"--dapr-internal-grpc-port", strconv.Itoa(ports[2]),
			"--dapr-listen-addresses", "127.0.0.1", "--dapr-internal-grpc-listen-address", "127.0.0.1",
			"--enable-metrics=false", "--resources-path", "/components", "--config", "/config/config.yaml",
			"--log-level", "info"),
		testcontainers.WithEnv(map[string]string{"OTEL_BSP_SCHEDULE_DELAY": "200"}),
		testcontainers.WithFiles(
			testcontainers.ContainerFile{HostFilePath: compFile, ContainerFilePath: "/components/cartstore.yaml", FileMode: 0o644},
			testcontainers.ContainerFile{HostFilePath: cfgFile, ContainerFilePath: "/config/config.yaml", FileMode: 0o644},
		),
	)
	if c != nil {
		t.Cleanup(func() {
			if t.Failed() {
				if rc, err := c.Logs(context.Background()); err == nil {
					b, _ := io.ReadAll(rc)
					rc.Close()
					t.Logf("--- last log lines of the traced daprd ---\n%s", lastLines(string(b), 40))
				}
			}
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			require.NoError(t, c.Terminate(cctx, testcontainers.StopTimeout(5*time.Second)))
		})
	}
	require.NoError(t, err, "traced daprd")
	d := tracedDaprd{httpURL: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), grpcAddr: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	poll(ctx, t, time.Minute, "daprd healthy", func() error {
		resp, err := httpClient.Get(d.httpURL + "/v1.0/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
	return d
}

// zipkinSpan is the part of a Zipkin v2 span the test reads.
type zipkinSpan struct {
	TraceID       string            `json:"traceId"`
	ID            string            `json:"id"`
	ParentID      string            `json:"parentId"`
	Name          string            `json:"name"`
	Kind          string            `json:"kind"`
	Tags          map[string]string `json:"tags"`
	LocalEndpoint struct {
		ServiceName string `json:"serviceName"`
	} `json:"localEndpoint"`
}

func (s zipkinSpan) String() string {
	return fmt.Sprintf("%s %q (%s, %s) parent %s", s.ID, s.Name, s.Kind, s.LocalEndpoint.ServiceName, s.ParentID)
}

// zipkinSink receives daprd's Zipkin exports on the loopback.
type zipkinSink struct {
	url   string
	mu    sync.Mutex
	spans []zipkinSpan
}

func newZipkinSink(t *testing.T) *zipkinSink {
	t.Helper()
	z := &zipkinSink{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var spans []zipkinSpan
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<20)).Decode(&spans); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		z.mu.Lock()
		z.spans = append(z.spans, spans...)
		z.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	z.url = srv.URL
	return z
}

// waitFor waits until some spans match and returns them.
func (z *zipkinSink) waitFor(ctx context.Context, t *testing.T, match func(zipkinSpan) bool, what string) []zipkinSpan {
	t.Helper()
	var found []zipkinSpan
	poll(ctx, t, 30*time.Second, what, func() error {
		z.mu.Lock()
		defer z.mu.Unlock()
		found = found[:0]
		for _, s := range z.spans {
			if match(s) {
				found = append(found, s)
			}
		}
		if len(found) == 0 {
			return fmt.Errorf("none among %d spans from daprd", len(z.spans))
		}
		return nil
	})
	return found
}

// waitOTLP waits for a span the worker exported that match accepts.
func waitOTLP(ctx context.Context, t *testing.T, sink *telemetrytest.Sink, match func(telemetrytest.Span) bool, what string) telemetrytest.Span {
	t.Helper()
	var found telemetrytest.Span
	poll(ctx, t, 30*time.Second, what, func() error {
		spans := sink.Spans()
		for _, s := range spans {
			if match(s) {
				found = s
				return nil
			}
		}
		return fmt.Errorf("none among %d exported spans", len(spans))
	})
	return found
}

// findSpan returns the publisher-side span named name.
func findSpan(t *testing.T, exp *tracetest.InMemoryExporter, name string) tracetest.SpanStub {
	t.Helper()
	for _, s := range exp.GetSpans() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no span %q among %d", name, len(exp.GetSpans()))
	return tracetest.SpanStub{}
}
