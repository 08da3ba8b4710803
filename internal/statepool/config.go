package statepool

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/cartworker/cartworker/internal/setting"
)

// Mode selects how state calls reach Dapr.
type Mode string

const (
	// ModePooled sends every call through one shared, keep-alive
	// *http.Client. It is the default and the only mode for production.
	ModePooled Mode = "pooled"

	// ModePerRequest builds a fresh http.Client and Transport for every call,
	// with keep-alives disabled, and closes it afterwards, and makes the bulk
	// calls one call per key, as upstream's service made its calls. It
	// exists only to reproduce the upstream "before" behaviour in
	// benchmarks; never use it in production.
	ModePerRequest Mode = "per-request"
)

// Protocol selects which of daprd's APIs state calls use.
type Protocol string

const (
	// ProtocolHTTP calls daprd's HTTP state API (/v1.0/state) through the
	// keep-alive pool ModePooled describes, or a connection per call in
	// ModePerRequest.
	ProtocolHTTP Protocol = "http"

	// ProtocolGRPC calls daprd's gRPC API (dapr.proto.runtime.v1.Dapr:
	// GetState, SaveState, DeleteState, GetMetadata) over one HTTP/2
	// connection per Client, multiplexing every call in flight. It works
	// with ModePooled only.
	ProtocolGRPC Protocol = "grpc"
)

// Defaults applied to zero-valued Config fields.
const (
	// DefaultProtocol is gRPC: measured against a real daprd 1.18 it
	// carries the worker's 16 concurrent calls on one connection at about
	// 1.6× the throughput of HTTP's 16-plus connections, and daprd spends
	// less CPU decoding it (see the README's performance section).
	DefaultProtocol = ProtocolGRPC
	// DefaultGRPCPort is daprd's default --dapr-grpc-port.
	DefaultGRPCPort = 50001
	// DefaultGRPCEndpoint is daprd's gRPC API on the loopback, as Dapr's
	// SDKs assume.
	DefaultGRPCEndpoint = "127.0.0.1:50001"

	DefaultEndpoint              = "http://127.0.0.1:3500"
	DefaultStoreName             = "cartstore"
	DefaultMaxConns              = 50
	DefaultIdleConnTimeout       = 90 * time.Second
	DefaultDialTimeout           = 3 * time.Second
	DefaultResponseHeaderTimeout = 5 * time.Second
	DefaultRequestTimeout        = 10 * time.Second
)

// Config configures the state client and its transport. The zero value is
// usable: every zero field takes the default named in its comment.
type Config struct {
	// Protocol selects daprd's HTTP or gRPC API. Default DefaultProtocol.
	Protocol Protocol

	// Endpoint is the base URL of the Dapr sidecar's HTTP API, without the
	// /v1.0 prefix. ProtocolHTTP only. Default DefaultEndpoint.
	Endpoint string

	// GRPCEndpoint is daprd's gRPC API, written as Dapr's SDKs accept
	// DAPR_GRPC_ENDPOINT: host:port ("127.0.0.1:50001"), or a URL
	// ("http://daprd:50001"; https:// or a "?tls=true" suffix on host:port
	// means TLS). A missing port is 443, as in the SDKs. The dns:, unix: and
	// vsock: targets the SDKs also take are refused. ProtocolGRPC only.
	// Default DefaultGRPCEndpoint.
	GRPCEndpoint string

	// StoreName is the Dapr state store component name. Default
	// DefaultStoreName.
	StoreName string

	// APIToken, when set, is sent as the dapr-api-token header (HTTP) or
	// gRPC metadata. String and LogValue redact it so a logged Config never
	// leaks it.
	APIToken string

	// Mode selects pooled or per-request transport. Default ModePooled.
	// ModePerRequest is an HTTP benchmark baseline: Validate refuses it
	// with ProtocolGRPC.
	Mode Mode

	// MaxConns caps the connections, active and idle, to the sidecar: a
	// Client talks to one host, its Endpoint, so this bounds every
	// connection it opens. A call that finds them all busy waits for one
	// (bounded by RequestTimeout). Default DefaultMaxConns. Pooled HTTP
	// only: per-request mode has no cap, as upstream had none, and gRPC
	// multiplexes every call over one connection.
	MaxConns int

	// IdleConnTimeout is how long an idle keep-alive connection is kept.
	// With ProtocolGRPC it is the channel's idle timeout: the connection
	// is closed after that long without a call and dialled again by the
	// next one. Default DefaultIdleConnTimeout.
	IdleConnTimeout time.Duration

	// DialTimeout bounds a TCP dial (and a TLS handshake), for either
	// protocol. Default DefaultDialTimeout.
	DialTimeout time.Duration

	// ResponseHeaderTimeout bounds the wait for response headers once the
	// request is written. ProtocolHTTP only: a gRPC call is bounded by
	// RequestTimeout alone. Default DefaultResponseHeaderTimeout.
	ResponseHeaderTimeout time.Duration

	// RequestTimeout bounds each state call end to end, body included. A
	// caller's earlier deadline still wins. Default DefaultRequestTimeout.
	RequestTimeout time.Duration

	// Hooks observe the client for metrics; the zero value observes
	// nothing. String and LogValue leave them out.
	Hooks Hooks

	// TracerProvider makes a client span of every state call, whose W3C
	// trace context is sent to daprd. Nil means a no-op provider: no
	// spans, but the caller's trace context is still sent, so daprd's
	// spans join the caller's trace. String and LogValue leave it out.
	TracerProvider trace.TracerProvider
}

// Hooks observe the client for metrics. Nil funcs are skipped. Hooks run on
// the calling goroutine and must be fast and safe for concurrent use.
type Hooks struct {
	// OnDial fires after every successful TCP dial to Dapr, in both modes
	// and with either protocol (for gRPC, every connection the one
	// channel opens, reconnections included). It backs
	// cartworker_state_connections_opened_total: with pooling working it
	// stays flat while requests climb.
	OnDial func()

	// OnRequest fires once per state call sent to Dapr with op "get",
	// "save", "delete", "get_bulk", "save_bulk" or "check" (ModePerRequest
	// sends a bulk call as a "get" or "save" per key). With ProtocolHTTP,
	// code is the HTTP status ("200", "409", ...), or "timeout" or "error"
	// when no complete response arrived. With ProtocolGRPC, code is the
	// name of the gRPC status code as google.golang.org/grpc/codes spells
	// it ("OK", "Aborted", "Unavailable", "DeadlineExceeded",
	// "Unauthenticated", ...), including for the client's own timeouts and
	// cancellations; a missing key is "OK", as daprd answers it. Calls
	// rejected before sending (empty key, invalid JSON, a closed client) do
	// not fire. d is the call's duration, from the client's start to its
	// answer or error.
	OnRequest func(op, code string, d time.Duration)
}

// withDefaults returns c with every zero or negative field replaced by its
// default, so code built from an unvalidated Config still behaves sanely.
func (c Config) withDefaults() Config {
	if c.Protocol == "" {
		c.Protocol = DefaultProtocol
	}
	if c.GRPCEndpoint == "" {
		c.GRPCEndpoint = DefaultGRPCEndpoint
	}
	if c.Endpoint == "" {
		c.Endpoint = DefaultEndpoint
	}
	c.Endpoint = strings.TrimRight(c.Endpoint, "/")
	if c.StoreName == "" {
		c.StoreName = DefaultStoreName
	}
	if c.Mode == "" {
		c.Mode = ModePooled
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.IdleConnTimeout <= 0 {
		c.IdleConnTimeout = DefaultIdleConnTimeout
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.ResponseHeaderTimeout <= 0 {
		c.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	return c
}

// Validate reports every invalid field at once, each as a *setting.Error
// naming it that also wraps ErrInvalidConfig. Zero values are valid; they
// mean "use the default".
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %w", ErrInvalidConfig, setting.Errorf(field, format, args...)))
	}

	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		switch {
		case err != nil:
			bad("Endpoint", "%v", err)
		case u.Scheme != "http" && u.Scheme != "https":
			bad("Endpoint", "scheme must be http or https, got %q", u.Scheme)
		case u.Host == "":
			bad("Endpoint", "missing host in %q", c.Endpoint)
		case u.RawQuery != "" || u.Fragment != "":
			bad("Endpoint", "must not carry a query or fragment")
		}
	}
	if strings.ContainsAny(c.StoreName, "/?#") {
		bad("StoreName", "must not contain '/', '?' or '#', got %q", c.StoreName)
	}
	switch c.Protocol {
	case "", ProtocolHTTP, ProtocolGRPC:
	default:
		bad("Protocol", "must be %q or %q, got %q", ProtocolHTTP, ProtocolGRPC, c.Protocol)
	}
	if c.GRPCEndpoint != "" {
		if _, err := parseGRPCEndpoint(c.GRPCEndpoint); err != nil {
			bad("GRPCEndpoint", "%v", err)
		}
	}
	switch c.Mode {
	case "", ModePooled, ModePerRequest:
	default:
		bad("Mode", "must be %q or %q, got %q", ModePooled, ModePerRequest, c.Mode)
	}
	if c.Mode == ModePerRequest && c.Protocol == ProtocolGRPC {
		bad("Mode", "%q is an HTTP benchmark baseline and cannot be used with protocol %q: use %q, or protocol %q",
			ModePerRequest, ProtocolGRPC, ModePooled, ProtocolHTTP)
	}
	if c.MaxConns < 0 {
		bad("MaxConns", "must not be negative, got %d", c.MaxConns)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"IdleConnTimeout", c.IdleConnTimeout},
		{"DialTimeout", c.DialTimeout},
		{"ResponseHeaderTimeout", c.ResponseHeaderTimeout},
		{"RequestTimeout", c.RequestTimeout},
	} {
		if d.v < 0 {
			bad(d.field, "must not be negative, got %s", d.v)
		}
	}
	return errors.Join(errs...)
}

// redacted stands in for a set secret in String and LogValue.
const redacted = "[REDACTED]"

func (c Config) tokenForDisplay() string {
	if c.APIToken == "" {
		return ""
	}
	return redacted
}

// String renders the effective config with APIToken redacted, so a Config
// passed to fmt or a log line never leaks the token.
func (c Config) String() string {
	d := c.withDefaults()
	var b strings.Builder
	b.WriteString("statepool.Config{Protocol:")
	b.WriteString(string(d.Protocol))
	b.WriteString(" Endpoint:")
	b.WriteString(d.Endpoint)
	b.WriteString(" GRPCEndpoint:")
	b.WriteString(d.GRPCEndpoint)
	b.WriteString(" StoreName:")
	b.WriteString(d.StoreName)
	b.WriteString(" APIToken:")
	b.WriteString(c.tokenForDisplay())
	b.WriteString(" Mode:")
	b.WriteString(string(d.Mode))
	b.WriteString(" MaxConns:")
	b.WriteString(strconv.Itoa(d.MaxConns))
	b.WriteString(" IdleConnTimeout:")
	b.WriteString(d.IdleConnTimeout.String())
	b.WriteString(" DialTimeout:")
	b.WriteString(d.DialTimeout.String())
	b.WriteString(" ResponseHeaderTimeout:")
	b.WriteString(d.ResponseHeaderTimeout.String())
	b.WriteString(" RequestTimeout:")
	b.WriteString(d.RequestTimeout.String())
	b.WriteByte('}')
	return b.String()
}

// GoString keeps %#v from printing the raw token.
func (c Config) GoString() string { return c.String() }

// LogValue implements slog.LogValuer with APIToken redacted.
func (c Config) LogValue() slog.Value {
	d := c.withDefaults()
	return slog.GroupValue(
		slog.String("protocol", string(d.Protocol)),
		slog.String("endpoint", d.Endpoint),
		slog.String("grpc_endpoint", d.GRPCEndpoint),
		slog.String("store_name", d.StoreName),
		slog.String("api_token", c.tokenForDisplay()),
		slog.String("mode", string(d.Mode)),
		slog.Int("max_conns", d.MaxConns),
		slog.Duration("idle_conn_timeout", d.IdleConnTimeout),
		slog.Duration("dial_timeout", d.DialTimeout),
		slog.Duration("response_header_timeout", d.ResponseHeaderTimeout),
		slog.Duration("request_timeout", d.RequestTimeout),
	)
}
