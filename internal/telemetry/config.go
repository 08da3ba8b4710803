package telemetry

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/cartworker/cartworker/internal/setting"
)

// Defaults applied to zero-valued Config fields.
const (
	// DefaultServiceName is the service.name of the worker's spans, and
	// daprd's --app-id, so that both read alike in a trace.
	DefaultServiceName = "cartworker"
	// DefaultProtocol is the OTLP transport the specification makes the
	// default.
	DefaultProtocol = ProtocolHTTP
	// DefaultSampler samples what the publisher sampled, and every trace
	// the worker starts itself, as the SDK does by default.
	DefaultSampler = SamplerParentAlwaysOn
	// DefaultShutdownTimeout bounds the final flush of buffered spans at
	// shutdown: an unreachable collector must not hold the exit up.
	DefaultShutdownTimeout = 5 * time.Second
)

// OTLP transports (OTEL_EXPORTER_OTLP_PROTOCOL). http/json is not offered:
// the Go exporter does not speak it.
const (
	ProtocolHTTP = "http/protobuf"
	ProtocolGRPC = "grpc"
)

// Samplers (OTEL_TRACES_SAMPLER) the worker understands: the specification's
// built-in ones.
const (
	SamplerAlwaysOn           = "always_on"
	SamplerAlwaysOff          = "always_off"
	SamplerRatio              = "traceidratio"
	SamplerParentAlwaysOn     = "parentbased_always_on"
	SamplerParentAlwaysOff    = "parentbased_always_off"
	SamplerParentTraceIDRatio = "parentbased_traceidratio"
)

// Config is the tracing setup, read from the standard OpenTelemetry
// environment variables (internal/config binds them). The zero value
// exports nothing.
type Config struct {
	// ServiceName is the service.name resource attribute
	// (OTEL_SERVICE_NAME). Default DefaultServiceName.
	ServiceName string
	// Endpoint is the OTLP base URL (OTEL_EXPORTER_OTLP_ENDPOINT), such as
	// http://collector:4318; over HTTP, traces go to its /v1/traces.
	// Empty, with TracesEndpoint empty too: nothing is exported.
	Endpoint string
	// TracesEndpoint is the full URL traces are sent to
	// (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), used as written; it wins over
	// Endpoint.
	TracesEndpoint string
	// Protocol is the OTLP transport, http/protobuf or grpc
	// (OTEL_EXPORTER_OTLP_PROTOCOL). Default DefaultProtocol.
	Protocol string
	// TracesProtocol wins over Protocol for traces
	// (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL).
	TracesProtocol string
	// Sampler is one of the Sampler* names (OTEL_TRACES_SAMPLER). Default
	// DefaultSampler.
	Sampler string
	// SamplerArg is the ratio, 0 to 1, of the ratio samplers
	// (OTEL_TRACES_SAMPLER_ARG). Default 1.
	SamplerArg string
	// Disabled turns export off whatever the endpoints say
	// (OTEL_SDK_DISABLED). Trace context is still propagated.
	Disabled bool
	// ShutdownTimeout bounds the flush of buffered spans at shutdown.
	// Default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
}

// Exporting reports whether c sends spans anywhere.
func (c Config) Exporting() bool {
	return !c.Disabled && (c.Endpoint != "" || c.TracesEndpoint != "")
}

func (c Config) withDefaults() Config {
	if c.ServiceName == "" {
		c.ServiceName = DefaultServiceName
	}
	if c.TracesProtocol == "" {
		c.TracesProtocol = c.Protocol
	}
	if c.TracesProtocol == "" {
		c.TracesProtocol = DefaultProtocol
	}
	if c.Sampler == "" {
		c.Sampler = DefaultSampler
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	return c
}

// Validate reports every field that cannot work, each as a *setting.Error
// naming it. Zero values are valid: they take the defaults. The endpoints
// and protocols are checked even when Disabled, so that a typo is found
// before export is turned on.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, setting.Errorf(field, format, args...))
	}
	for _, e := range []struct{ field, v string }{{"Endpoint", c.Endpoint}, {"TracesEndpoint", c.TracesEndpoint}} {
		if e.v == "" {
			continue
		}
		if err := checkURL(e.v); err != nil {
			bad(e.field, "%q: %v", e.v, err)
		}
	}
	for _, p := range []struct{ field, v string }{{"Protocol", c.Protocol}, {"TracesProtocol", c.TracesProtocol}} {
		switch p.v {
		case "", ProtocolHTTP, ProtocolGRPC:
		case "http/json":
			bad(p.field, "%q is not supported: use %q or %q", p.v, ProtocolHTTP, ProtocolGRPC)
		default:
			bad(p.field, "%q: want %q or %q", p.v, ProtocolHTTP, ProtocolGRPC)
		}
	}
	if _, err := c.withDefaults().sampler(); err != nil {
		errs = append(errs, err)
	}
	if c.ShutdownTimeout < 0 {
		bad("ShutdownTimeout", "%s: want a positive duration such as 5s", c.ShutdownTimeout)
	}
	return errors.Join(errs...)
}

// checkURL accepts what the exporters can dial: an http or https URL with a
// host, such as http://collector:4318.
func checkURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return err
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("want an http:// or https:// URL, such as http://collector:4318")
	case u.Host == "":
		return fmt.Errorf("missing host")
	}
	return nil
}

// sampler builds the sampler c names; c has its defaults applied.
func (c Config) sampler() (sdktrace.Sampler, error) {
	ratio := func() (float64, error) {
		if c.SamplerArg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(c.SamplerArg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, setting.Errorf("SamplerArg", "%q: want a ratio from 0 to 1", c.SamplerArg)
		}
		return r, nil
	}
	switch c.Sampler {
	case SamplerAlwaysOn:
		return sdktrace.AlwaysSample(), nil
	case SamplerAlwaysOff:
		return sdktrace.NeverSample(), nil
	case SamplerParentAlwaysOn:
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case SamplerParentAlwaysOff:
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case SamplerRatio, SamplerParentTraceIDRatio:
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		if c.Sampler == SamplerRatio {
			return sdktrace.TraceIDRatioBased(r), nil
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	default:
		return nil, setting.Errorf("Sampler", "%q: want one of %s, %s, %s, %s, %s or %s", c.Sampler,
			SamplerParentAlwaysOn, SamplerParentAlwaysOff, SamplerParentTraceIDRatio, SamplerAlwaysOn, SamplerAlwaysOff, SamplerRatio)
	}
}

// tracesURL is where traces go, and over which protocol; c has its
// defaults applied and Exporting.
func (c Config) tracesURL() string {
	if c.TracesEndpoint != "" {
		return c.TracesEndpoint
	}
	if c.TracesProtocol == ProtocolGRPC {
		return c.Endpoint
	}
	// The specification: the base endpoint gets the signal's path appended.
	u, err := url.Parse(c.Endpoint)
	if err != nil {
		return c.Endpoint // Validate has refused it
	}
	return u.JoinPath("v1", "traces").String()
}
