// Package config binds the worker's settings to environment variables and to
// command-line flags that mirror them. Flags win over the environment, which
// wins over the defaults; `-h` prints every setting with its variable and
// default.
//
// It only binds. Each setting is a field of the configuration of the part it
// tunes (natsconn.Options, statepool.Config, breaker.Settings,
// consumer.Config, cartcache.Config), whose defaults and rules are written
// once, next to that type; Validate runs those rules and reports each
// problem under the variable that set the field.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/budget"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/consumer"
	"github.com/cartworker/cartworker/internal/natsconn"
	"github.com/cartworker/cartworker/internal/setting"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/internal/telemetry"
)

// Defaults of the settings the wiring owns, which deployment manifests must
// agree with; deployments/ tests check them.
const (
	DefaultHTTPAddr    = ":8080"
	DefaultStateStore  = statepool.DefaultStoreName
	DefaultAppID       = "cartworker"
	DefaultMetricsPath = "/metrics"
	DefaultDaprPort    = 3500
	// DefaultDaprGRPCPort is daprd's gRPC port, which makes the default
	// DAPR_GRPC_ENDPOINT.
	DefaultDaprGRPCPort = statepool.DefaultGRPCPort
)

// Config is every setting of the worker, grouped by the part it configures.
// Secrets (NATS.Password, NATS.Token, State.APIToken) never appear in logs:
// LogValue redacts them. Keys and seeds are given as files, whose paths it
// shows.
type Config struct {
	// NATS is the connection (NATS_URL, NATS_USER, NATS_PASSWORD,
	// NATS_TOKEN, NATS_CREDS, NATS_NKEY_SEED, NATS_TLS_CA, NATS_TLS_CERT,
	// NATS_TLS_KEY, NATS_CONNECT_TIMEOUT).
	NATS natsconn.Options
	// State is the Dapr state client (WORKER_STATE_PROTOCOL,
	// DAPR_HTTP_ENDPOINT, DAPR_GRPC_ENDPOINT, DAPR_API_TOKEN,
	// CART_STATE_STORE, WORKER_STATE_*).
	State statepool.Config
	// DaprHTTPPort makes the default of State.Endpoint (DAPR_HTTP_PORT), as
	// the Dapr SDKs do.
	DaprHTTPPort int
	// DaprGRPCPort makes the default of State.GRPCEndpoint
	// (DAPR_GRPC_PORT), as the Dapr SDKs do.
	DaprGRPCPort int
	// Breaker guards the state client (WORKER_BREAKER_*).
	Breaker breaker.Settings
	// Consumer is the JetStream worker (WORKER_*, CART_SUBJECT_PREFIX,
	// NATS_STREAM_REPLICAS, NATS_MANAGE_STREAMS).
	Consumer consumer.Config
	// Carts are the cart rules and their storage (CART_TAX_TABLE,
	// CART_TOMBSTONE_TTL).
	Carts cartcache.Config
	// Telemetry is the trace export, from OpenTelemetry's standard
	// variables (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_*, OTEL_TRACES_*,
	// OTEL_SDK_DISABLED).
	Telemetry telemetry.Config

	// MaxHeldBytes bounds the bytes of commands and carts the instance
	// holds at once (WORKER_MAX_HELD_BYTES), split by budget.Split.
	MaxHeldBytes int

	// HTTPAddr serves /healthz, /readyz and /metrics (WORKER_HTTP_ADDR).
	HTTPAddr string
	// Pprof also serves /debug/pprof on HTTPAddr (WORKER_PPROF).
	Pprof bool
	// LogLevel is debug, info, warn or error (LOG_LEVEL).
	LogLevel string
	// LogFormat is json or text (LOG_FORMAT).
	LogFormat string
}

// binding ties one field to its flag and environment variable.
type binding struct {
	env, flag string
	// field is "<part>.<Field>", as the part's Validate names it.
	field  string
	secret bool
	// optional settings may be empty or zero; any other explicit zero is
	// refused, because a zero in the parts' configurations means "the
	// default", which a user who typed 0 did not ask for.
	optional bool
	// zero reports whether the field is empty, zero or negative.
	zero func() bool
}

// bind registers every setting of c on fs, first setting it to its default
// when defaults is true, and returns the bindings in order so that env
// values go through the same parsers.
func (c *Config) bind(fs *flag.FlagSet, defaults bool) []binding {
	var out []binding
	add := func(b binding, zero func() bool) {
		b.zero = zero
		out = append(out, b)
	}
	str := func(p *string, def string, b binding, usage string) {
		if !defaults {
			def = *p
		}
		fs.StringVar(p, b.flag, def, usage+" (env "+b.env+")")
		add(b, func() bool { return *p == "" })
	}
	num := func(p *int, def int, b binding, usage string) {
		if !defaults {
			def = *p
		}
		fs.IntVar(p, b.flag, def, usage+" (env "+b.env+")")
		add(b, func() bool { return *p <= 0 })
	}
	dur := func(p *time.Duration, def time.Duration, b binding, usage string) {
		if !defaults {
			def = *p
		}
		fs.DurationVar(p, b.flag, def, usage+" (env "+b.env+")")
		add(b, func() bool { return *p <= 0 })
	}
	boolean := func(p *bool, b binding, usage string) {
		b.optional = true
		fs.BoolVar(p, b.flag, *p, usage+" (env "+b.env+")")
		add(b, func() bool { return false })
	}
	value := func(v flag.Value, zero func() bool, b binding, usage string) {
		fs.Var(v, b.flag, usage+" (env "+b.env+")")
		add(b, zero)
	}

	n, s, br, w, k := &c.NATS, &c.State, &c.Breaker, &c.Consumer, &c.Carts
	str(&n.URL, natsconn.DefaultURL, binding{env: "NATS_URL", flag: "nats-url", field: "nats.URL"}, "NATS server URL(s), comma separated")
	str(&n.User, "", binding{env: "NATS_USER", flag: "nats-user", field: "nats.User", optional: true}, "NATS user")
	str(&n.Password, "", binding{env: "NATS_PASSWORD", flag: "nats-password", field: "nats.Password", secret: true, optional: true}, "NATS password (prefer the env var)")
	str(&n.Token, "", binding{env: "NATS_TOKEN", flag: "nats-token", field: "nats.Token", secret: true, optional: true}, "NATS token (prefer the env var)")
	str(&n.Creds, "", binding{env: "NATS_CREDS", flag: "nats-creds", field: "nats.Creds", optional: true}, "path to a NATS .creds file")
	str(&n.NkeySeed, "", binding{env: "NATS_NKEY_SEED", flag: "nats-nkey-seed", field: "nats.NkeySeed", optional: true}, "path to a file holding a NATS user nkey seed (SU...)")
	str(&n.TLSCA, "", binding{env: "NATS_TLS_CA", flag: "nats-tls-ca", field: "nats.TLSCA", optional: true}, "path to the PEM CA bundle that signed the NATS server's certificate (default: the system's); turns TLS on")
	str(&n.TLSCert, "", binding{env: "NATS_TLS_CERT", flag: "nats-tls-cert", field: "nats.TLSCert", optional: true}, "path to a PEM client certificate for NATS mutual TLS, with NATS_TLS_KEY")
	str(&n.TLSKey, "", binding{env: "NATS_TLS_KEY", flag: "nats-tls-key", field: "nats.TLSKey", optional: true}, "path to the PEM private key of NATS_TLS_CERT")
	dur(&n.ConnectTimeout, natsconn.DefaultConnectTimeout, binding{env: "NATS_CONNECT_TIMEOUT", flag: "nats-connect-timeout", field: "nats.ConnectTimeout"}, "how long start-up retries an unreachable NATS server before giving up")
	num(&w.Replicas, consumer.DefaultReplicas, binding{env: "NATS_STREAM_REPLICAS", flag: "nats-stream-replicas", field: "consumer.Replicas"}, "replicas of the streams the worker creates (1 for a single server)")
	boolean(&w.ManageStreams, binding{env: "NATS_MANAGE_STREAMS", flag: "nats-manage-streams", field: "consumer.ManageStreams"}, "raise existing streams' replicas, retention limits, duplicate window and subjects to the worker's, never lowering or removing anything; off, existing streams are left as they are")

	str((*string)(&s.Protocol), string(statepool.DefaultProtocol), binding{env: "WORKER_STATE_PROTOCOL", flag: "state-protocol", field: "state.Protocol"}, `daprd API the state calls use: "http", or "grpc" (one multiplexed connection to DAPR_GRPC_ENDPOINT)`)
	str(&s.Endpoint, "", binding{env: "DAPR_HTTP_ENDPOINT", flag: "dapr-http-endpoint", field: "state.Endpoint", optional: true}, "daprd HTTP base URL (default http://127.0.0.1:$DAPR_HTTP_PORT)")
	num(&c.DaprHTTPPort, DefaultDaprPort, binding{env: "DAPR_HTTP_PORT", flag: "dapr-http-port", field: "DaprHTTPPort"}, "daprd HTTP port, used when DAPR_HTTP_ENDPOINT is empty")
	str(&s.GRPCEndpoint, "", binding{env: "DAPR_GRPC_ENDPOINT", flag: "dapr-grpc-endpoint", field: "state.GRPCEndpoint", optional: true}, "daprd gRPC API, host:port or http(s)://host:port (default 127.0.0.1:$DAPR_GRPC_PORT); used with WORKER_STATE_PROTOCOL=grpc")
	num(&c.DaprGRPCPort, DefaultDaprGRPCPort, binding{env: "DAPR_GRPC_PORT", flag: "dapr-grpc-port", field: "DaprGRPCPort"}, "daprd gRPC port, used when DAPR_GRPC_ENDPOINT is empty")
	str(&s.APIToken, "", binding{env: "DAPR_API_TOKEN", flag: "dapr-api-token", field: "state.APIToken", secret: true, optional: true}, "token sent as the dapr-api-token header (prefer the env var)")
	str(&s.StoreName, statepool.DefaultStoreName, binding{env: "CART_STATE_STORE", flag: "state-store", field: "state.StoreName"}, "Dapr state store component holding the carts")
	str((*string)(&s.Mode), string(statepool.ModePooled), binding{env: "WORKER_STATE_CLIENT", flag: "state-client", field: "state.Mode"}, `state client: "pooled", or "per-request" (a benchmark baseline only: new connection per call)`)
	num(&s.MaxConns, statepool.DefaultMaxConns, binding{env: "WORKER_STATE_MAX_CONNS", flag: "state-max-conns", field: "state.MaxConns"}, "most connections to daprd")
	dur(&s.DialTimeout, statepool.DefaultDialTimeout, binding{env: "WORKER_STATE_DIAL_TIMEOUT", flag: "state-dial-timeout", field: "state.DialTimeout"}, "connect timeout to Dapr")
	dur(&s.ResponseHeaderTimeout, statepool.DefaultResponseHeaderTimeout, binding{env: "WORKER_STATE_HEADER_TIMEOUT", flag: "state-header-timeout", field: "state.ResponseHeaderTimeout"}, "wait for Dapr's response headers")
	dur(&s.RequestTimeout, statepool.DefaultRequestTimeout, binding{env: "WORKER_STATE_REQUEST_TIMEOUT", flag: "state-request-timeout", field: "state.RequestTimeout"}, "total time of one state call")

	if defaults {
		n.Name = "cartworker"
		br.ConsecutiveFailures = breaker.DefaultConsecutiveFailures
		k.TaxTable = cart.DefaultTaxTable()
	}
	value((*uint32Value)(&br.ConsecutiveFailures), func() bool { return br.ConsecutiveFailures == 0 }, binding{env: "WORKER_BREAKER_FAILURES", flag: "breaker-failures", field: "breaker.ConsecutiveFailures"}, "consecutive state failures that open the breaker")
	dur(&br.Timeout, breaker.DefaultTimeout, binding{env: "WORKER_BREAKER_OPEN_TIMEOUT", flag: "breaker-open-timeout", field: "breaker.Timeout"}, "how long the breaker stays open before a probe")

	str(&w.Subjects.Prefix, command.DefaultPrefix, binding{env: "CART_SUBJECT_PREFIX", flag: "subject-prefix", field: "consumer.Subjects"}, "first token of every cart subject")
	num(&w.Concurrency, consumer.DefaultConcurrency, binding{env: "WORKER_CONCURRENCY", flag: "concurrency", field: "consumer.Concurrency"}, "goroutines applying commands: the most applies in flight in this instance, each of up to WORKER_BATCH_CARTS carts")
	num(&w.Buffer, consumer.DefaultBuffer, binding{env: "WORKER_BUFFER", flag: "buffer", field: "consumer.Buffer"}, "most commands this instance holds, running or queued behind their cart (at least WORKER_CONCURRENCY and WORKER_PARTITIONS)")
	num(&w.BatchMax, consumer.DefaultBatchMax, binding{env: "WORKER_BATCH_MAX", flag: "batch-max", field: "consumer.BatchMax"}, "most commands of one cart applied in one read-modify-write (1: one at a time)")
	num(&w.BatchMaxBytes, consumer.DefaultBatchMaxBytes, binding{env: "WORKER_BATCH_MAX_BYTES", flag: "batch-max-bytes", field: "consumer.BatchMaxBytes"}, "most bytes of command bodies in one read-modify-write, past its first command")
	num(&w.BatchCarts, consumer.DefaultBatchCarts, binding{env: "WORKER_BATCH_CARTS", flag: "batch-carts", field: "consumer.BatchCarts"}, "most carts with waiting commands applied together in one bulk read and one bulk save (1: each cart on its own)")
	num(&w.Partitions, command.DefaultPartitions, binding{env: "WORKER_PARTITIONS", flag: "partitions", field: "consumer.Partitions"}, "partitions carts are spread over: the most instances that share the work (change only with the stream drained)")
	dur(&w.AckWait, consumer.DefaultAckWait, binding{env: "WORKER_ACK_WAIT", flag: "ack-wait", field: "consumer.AckWait"}, "JetStream redelivers a command not acknowledged for this long, as after a crash; longer work sends heartbeats")
	num(&w.MaxDeliver, consumer.DefaultMaxDeliver, binding{env: "WORKER_MAX_DELIVER", flag: "max-deliver", field: "consumer.MaxDeliver"}, "transient failures after which a command is dead-lettered")
	dur(&w.ShutdownTimeout, consumer.DefaultShutdownTimeout, binding{env: "WORKER_SHUTDOWN_TIMEOUT", flag: "shutdown-timeout", field: "consumer.ShutdownTimeout"}, "time to finish in-flight commands on SIGTERM")

	dur(&k.TombstoneTTL, cartcache.DefaultTombstoneTTL, binding{env: "CART_TOMBSTONE_TTL", flag: "tombstone-ttl", field: "carts.TombstoneTTL"}, "how long a deleted cart's tombstone is kept")
	num(&k.MaxCartBytes, cartcache.DefaultMaxCartBytes, binding{env: "WORKER_MAX_CART_BYTES", flag: "max-cart-bytes", field: "carts.MaxCartBytes"}, "largest stored cart document in bytes: a command that would grow a cart past it is rejected with cart_too_large (keep it well under daprd's max-body-size, 4 MiB by default)")
	value(&k.TaxTable, func() bool { return len(k.TaxTable) == 0 }, binding{env: "CART_TAX_TABLE", flag: "tax-table", field: "carts.TaxTable"}, "tax table, code:type:rate,...")

	tl := &c.Telemetry
	str(&tl.ServiceName, telemetry.DefaultServiceName, binding{env: "OTEL_SERVICE_NAME", flag: "otel-service-name", field: "telemetry.ServiceName"}, "service.name of the worker's spans")
	str(&tl.Endpoint, "", binding{env: "OTEL_EXPORTER_OTLP_ENDPOINT", flag: "otel-exporter-otlp-endpoint", field: "telemetry.Endpoint", optional: true}, "OTLP base URL spans are exported to, such as http://collector:4318 (none: nothing is exported, trace context is still forwarded)")
	str(&tl.TracesEndpoint, "", binding{env: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", flag: "otel-exporter-otlp-traces-endpoint", field: "telemetry.TracesEndpoint", optional: true}, "full OTLP URL of traces, used as written; wins over OTEL_EXPORTER_OTLP_ENDPOINT")
	str(&tl.Protocol, telemetry.DefaultProtocol, binding{env: "OTEL_EXPORTER_OTLP_PROTOCOL", flag: "otel-exporter-otlp-protocol", field: "telemetry.Protocol"}, "OTLP transport: http/protobuf or grpc")
	str(&tl.TracesProtocol, "", binding{env: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", flag: "otel-exporter-otlp-traces-protocol", field: "telemetry.TracesProtocol", optional: true}, "OTLP transport of traces; wins over OTEL_EXPORTER_OTLP_PROTOCOL")
	str(&tl.Sampler, telemetry.DefaultSampler, binding{env: "OTEL_TRACES_SAMPLER", flag: "otel-traces-sampler", field: "telemetry.Sampler"}, "sampler: parentbased_always_on, parentbased_always_off, parentbased_traceidratio, always_on, always_off or traceidratio")
	str(&tl.SamplerArg, "", binding{env: "OTEL_TRACES_SAMPLER_ARG", flag: "otel-traces-sampler-arg", field: "telemetry.SamplerArg", optional: true}, "ratio of the traceidratio samplers, 0 to 1 (default 1)")
	boolean(&tl.Disabled, binding{env: "OTEL_SDK_DISABLED", flag: "otel-sdk-disabled", field: "telemetry.Disabled"}, "export no spans, whatever the endpoints (trace context is still forwarded)")

	num(&c.MaxHeldBytes, budget.DefaultTotal, binding{env: "WORKER_MAX_HELD_BYTES", flag: "max-held-bytes", field: "MaxHeldBytes"}, "most bytes of commands and carts this instance holds at once: a quarter for the command bodies fetched and not yet settled, the rest for the carts being applied (3 bytes per stored byte); the Go runtime's soft memory limit is set 12 MiB above it unless GOMEMLIMIT is set")
	str(&c.HTTPAddr, DefaultHTTPAddr, binding{env: "WORKER_HTTP_ADDR", flag: "http-addr", field: "HTTPAddr"}, "address of /healthz, /readyz and /metrics")
	boolean(&c.Pprof, binding{env: "WORKER_PPROF", flag: "pprof", field: "Pprof"}, "also serve /debug/pprof on the HTTP address")
	str(&c.LogLevel, "info", binding{env: "LOG_LEVEL", flag: "log-level", field: "LogLevel"}, "debug, info, warn or error")
	str(&c.LogFormat, "json", binding{env: "LOG_FORMAT", flag: "log-format", field: "LogFormat"}, "json or text")
	return out
}

// Load reads the settings: defaults, then the environment through getenv,
// then args. With -h it prints the usage to out and returns flag.ErrHelp.
func Load(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("cartworker", flag.ContinueOnError)
	fs.SetOutput(out)
	bindings := c.bind(fs, true)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "cartworker applies cart commands from NATS JetStream to a Dapr state store.")
		fmt.Fprintln(fs.Output(), "\nEvery flag mirrors an environment variable; flags win. Settings and defaults:")
		fs.PrintDefaults()
	}
	for _, b := range bindings {
		v := getenv(b.env)
		if v == "" {
			continue
		}
		if err := fs.Set(b.flag, v); err != nil {
			shown := fmt.Sprintf("%q", v)
			if b.secret {
				shown = "(redacted)"
			}
			return Config{}, fmt.Errorf("%s=%s: %w", b.env, shown, unwrapFlagErr(err))
		}
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.State.Endpoint == "" {
		c.State.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", c.DaprHTTPPort)
	}
	if c.State.GRPCEndpoint == "" {
		c.State.GRPCEndpoint = net.JoinHostPort("127.0.0.1", strconv.Itoa(c.DaprGRPCPort))
	}
	if err := c.validate(bindings); err != nil {
		return Config{}, err
	}
	return c, nil
}

// unwrapFlagErr drops the flag package's own wording, which names the flag
// rather than the variable the user set.
func unwrapFlagErr(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}

// Validate reports every setting that cannot work, naming its variable.
// Load has called it.
func (c Config) Validate() error {
	return c.validate(c.bind(flag.NewFlagSet("", flag.ContinueOnError), false))
}

// validate runs every part's own rules and the wiring's, and reports each
// problem under the variable of the field at fault. bindings must be bound
// to c.
func (c *Config) validate(bindings []binding) error {
	byField := make(map[string]binding, len(bindings))
	for _, b := range bindings {
		byField[b.field] = b
	}
	var errs []error
	bad := func(field, format string, args ...any) {
		name := field
		if b, ok := byField[field]; ok {
			name = b.env
		}
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}
	part := func(prefix string, err error) {
		rest := setting.Each(err, func(e *setting.Error) { bad(prefix+"."+e.Field, "%s", e.Problem) })
		errs = append(errs, rest...)
	}
	// The parts take a zero as "use the default", which is not what a user
	// who set 0 asked for.
	for _, b := range bindings {
		if !b.optional && b.zero() {
			bad(b.field, "must be set, and above zero")
		}
	}
	part("nats", c.NATS.Validate())
	part("state", c.State.Validate())
	part("breaker", c.Breaker.Validate())
	part("consumer", c.Consumer.Validate())
	part("carts", c.Carts.Validate())
	part("telemetry", c.Telemetry.Validate())

	if c.DaprHTTPPort > 65535 {
		bad("DaprHTTPPort", "%d is not a port", c.DaprHTTPPort)
	}
	if c.DaprGRPCPort > 65535 {
		bad("DaprGRPCPort", "%d is not a port", c.DaprGRPCPort)
	}
	if c.MaxHeldBytes < budget.MinTotal {
		bad("MaxHeldBytes", "%d: want at least %d bytes (1 MiB)", c.MaxHeldBytes, budget.MinTotal)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("HTTPAddr", "%q: want host:port such as :8080", c.HTTPAddr)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		bad("LogLevel", "%q: want debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("LogFormat", "%q: want json or text", c.LogFormat)
	}
	return errors.Join(errs...)
}

// LogValue shows the settings without their secrets.
func (c Config) LogValue() slog.Value {
	redact := func(s string) string {
		if s == "" {
			return ""
		}
		return "REDACTED"
	}
	return slog.GroupValue(
		slog.String("nats_url", natsconn.RedactURL(c.NATS.URL)),
		slog.String("nats_user", c.NATS.User),
		slog.String("nats_password", redact(c.NATS.Password)),
		slog.String("nats_token", redact(c.NATS.Token)),
		slog.String("nats_creds", c.NATS.Creds),
		slog.String("nats_nkey_seed", c.NATS.NkeySeed),
		slog.String("nats_tls_ca", c.NATS.TLSCA),
		slog.String("nats_tls_cert", c.NATS.TLSCert),
		slog.String("nats_tls_key", c.NATS.TLSKey),
		slog.String("nats_connect_timeout", c.NATS.ConnectTimeout.String()),
		slog.Int("nats_stream_replicas", c.Consumer.Replicas),
		slog.Bool("nats_manage_streams", c.Consumer.ManageStreams),
		slog.String("state_protocol", string(c.State.Protocol)),
		slog.String("dapr_http_endpoint", c.State.Endpoint),
		slog.String("dapr_grpc_endpoint", c.State.GRPCEndpoint),
		slog.String("dapr_api_token", redact(c.State.APIToken)),
		slog.String("state_store", c.State.StoreName),
		slog.String("state_client", string(c.State.Mode)),
		slog.Int("state_max_conns", c.State.MaxConns),
		slog.String("subject_prefix", c.Consumer.Subjects.Prefix),
		slog.Int("concurrency", c.Consumer.Concurrency),
		slog.Int("batch_carts", c.Consumer.BatchCarts),
		slog.Int("max_cart_bytes", c.Carts.MaxCartBytes),
		slog.Int("max_held_bytes", c.MaxHeldBytes),
		slog.Int("partitions", c.Consumer.Partitions),
		slog.String("shutdown_timeout", c.Consumer.ShutdownTimeout.String()),
		slog.String("http_addr", c.HTTPAddr),
		slog.Bool("pprof", c.Pprof),
	)
}

// Level returns LogLevel parsed; Load has checked it.
func (c Config) Level() slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(c.LogLevel))
	return l
}

// uint32Value is the flag.Value of a uint32, which the flag package lacks.
type uint32Value uint32

func (v *uint32Value) Set(s string) error {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil {
		return fmt.Errorf("%q: want a whole number from 1 to %d", s, uint32(1<<32-1))
	}
	*v = uint32Value(n)
	return nil
}

func (v *uint32Value) String() string { return strconv.FormatUint(uint64(*v), 10) }
