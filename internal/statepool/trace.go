package statepool

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Every state call is a client span, a child of the span in the caller's
// context, and sends that span's W3C trace context to daprd (traceparent
// and tracestate, as HTTP headers or gRPC metadata), so that daprd's own
// span of the call joins the trace. The spans are written here rather than
// with otelhttp and otelgrpc: those make metrics and read the global
// propagator, and a state call needs no more than a span and two headers.
//
// With no TracerProvider (or a no-op one) no span is made: the caller's
// span context, if any, is what daprd receives, and a call without one
// costs nothing more than before.

// tracerName is the instrumentation scope of the client's spans.
const tracerName = "github.com/cartworker/cartworker/internal/statepool"

// tracing makes the client spans of one Client.
type tracing struct {
	// tracer is nil when spans are off.
	tracer trace.Tracer
	// host and port are daprd's address as configured, for server.address
	// and server.port; port is 0 when it cannot be told.
	host string
	port int
}

func newTracing(tp trace.TracerProvider, addr string) tracing {
	var t tracing
	if _, off := tp.(noop.TracerProvider); tp != nil && !off {
		t.tracer = tp.Tracer(tracerName)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.host = addr
		return t
	}
	t.host = host
	t.port, _ = strconv.Atoi(port)
	return t
}

// serverAttrs appends server.address and server.port.
func (t tracing) serverAttrs(attrs []attribute.KeyValue) []attribute.KeyValue {
	attrs = append(attrs, semconv.ServerAddress(t.host))
	if t.port != 0 {
		attrs = append(attrs, semconv.ServerPort(t.port))
	}
	return attrs
}

// unaryInterceptor wraps every gRPC call to daprd in a client span named
// after its method ("dapr.proto.runtime.v1.Dapr/GetState") and sends the
// span's trace context as metadata.
func (t tracing) unaryInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if t.tracer == nil {
		return invoker(withTraceMetadata(ctx), method, req, reply, cc, opts...)
	}
	name := strings.TrimPrefix(method, "/")
	ctx, span := t.tracer.Start(ctx, name, clientSpan...)
	defer span.End()
	err := invoker(withTraceMetadata(ctx), method, req, reply, cc, opts...)
	if span.IsRecording() {
		code := status.Code(err)
		attrs := make([]attribute.KeyValue, 0, 5)
		attrs = append(attrs, semconv.RPCSystemNameGRPC, semconv.RPCMethod(name), semconv.RPCResponseStatusCode(code.String()))
		span.SetAttributes(t.serverAttrs(attrs)...)
		if err != nil {
			span.SetAttributes(semconv.ErrorTypeKey.String(code.String()))
			span.SetStatus(codes.Error, err.Error())
		}
	}
	return err
}

// clientSpan starts a client span; one slice for every call.
var clientSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}

// withTraceMetadata adds ctx's trace context, if any, to the call's
// outgoing metadata.
func withTraceMetadata(ctx context.Context) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	var kv mdCarrier
	propagation.TraceContext{}.Inject(ctx, &kv)
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// mdCarrier collects the trace context headers as gRPC metadata pairs;
// gRPC metadata keys are lower case, as the propagator writes them.
type mdCarrier []string

func (c *mdCarrier) Get(string) string { return "" }
func (c *mdCarrier) Set(key, value string) {
	*c = append(*c, key, value)
}
func (c *mdCarrier) Keys() []string { return nil }

// tracedDoer wraps an HTTP call to daprd in a client span named after the
// route ("GET /v1.0/state/{storeName}/{key}") and sends the span's trace
// context as headers. The span ends when the response headers are in:
// daprd's bodies are small, and wrapping each one to end the span on Close
// would cost every call an allocation.
type tracedDoer struct {
	next doer
	t    tracing
}

func (d *tracedDoer) Do(req *http.Request) (*http.Response, error) {
	if d.t.tracer == nil {
		injectHeaders(req.Context(), req.Header)
		return d.next.Do(req)
	}
	route := httpRoute(req.URL)
	ctx, span := d.t.tracer.Start(req.Context(), req.Method+" "+route, clientSpan...)
	defer span.End()
	// The request keeps its own context: the transport has no use for the
	// span, only for the headers.
	injectHeaders(ctx, req.Header)
	resp, err := d.next.Do(req)
	if span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 6)
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(req.Method), semconv.URLTemplate(route))
		attrs = d.t.serverAttrs(attrs)
		switch {
		case err != nil:
			attrs = append(attrs, semconv.ErrorTypeKey.String(fmt.Sprintf("%T", err)))
			span.SetStatus(codes.Error, err.Error())
		default:
			attrs = append(attrs, semconv.HTTPResponseStatusCode(resp.StatusCode))
			if resp.StatusCode >= http.StatusBadRequest {
				attrs = append(attrs, semconv.ErrorTypeKey.String(statusCode(resp.StatusCode)))
				span.SetStatus(codes.Error, "")
			}
		}
		span.SetAttributes(attrs...)
	}
	return resp, err
}

// injectHeaders writes ctx's trace context, if any, into h.
func injectHeaders(ctx context.Context, h http.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(h))
	}
}

// httpRoute is the low-cardinality route of a call to daprd's HTTP API.
func httpRoute(u *url.URL) string {
	p := u.EscapedPath()
	switch {
	case strings.HasPrefix(p, "/v1.0/state/"):
		if strings.Contains(strings.TrimPrefix(p, "/v1.0/state/"), "/") {
			return "/v1.0/state/{storeName}/{key}"
		}
		return "/v1.0/state/{storeName}"
	case p == "/v1.0/metadata":
		return p
	}
	return "/"
}

// httpHostPort is the host:port of an HTTP endpoint URL, with the scheme's
// default port when it names none.
func httpHostPort(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return ""
	}
	if u.Port() != "" {
		return u.Host
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}
