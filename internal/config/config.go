// Package config loads the worker's settings from the environment and from
// command-line flags that mirror it. Flags win over the environment, which
// wins over the defaults; `-h` prints every setting with its variable and
// default.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/statepool"
)

// Defaults that deployment manifests must agree with; deployments/ tests
// check them.
const (
	DefaultHTTPAddr    = ":8080"
	DefaultStateStore  = statepool.DefaultStoreName
	DefaultAppID       = "cartworker"
	DefaultMetricsPath = "/metrics"
	DefaultNATSURL     = "nats://127.0.0.1:4222"
	DefaultDaprPort    = 3500
)

// Config is every setting of the worker. Secrets (NATSPassword, NATSToken,
// DaprAPIToken) never appear in logs: LogValue redacts them.
type Config struct {
	// NATSURL is the NATS server URL list (NATS_URL).
	NATSURL string
	// NATSUser and NATSPassword authenticate with a user and password.
	NATSUser     string
	NATSPassword string
	// NATSToken authenticates with a token (NATS_TOKEN).
	NATSToken string
	// NATSCreds is a path to a .creds file (NATS_CREDS).
	NATSCreds string
	// NATSConnectTimeout bounds the start-up retries of an unreachable NATS
	// server (NATS_CONNECT_TIMEOUT); an authorization failure is not
	// retried. Once connected, the worker reconnects for ever.
	NATSConnectTimeout time.Duration
	// NATSStreamReplicas is the replica count of the streams the worker
	// creates, and the floor NATSManageStreams raises existing ones to
	// (NATS_STREAM_REPLICAS).
	NATSStreamReplicas int
	// NATSManageStreams lets the worker raise the replicas, limits and
	// subjects of existing streams towards its own, never lowering or
	// removing any (NATS_MANAGE_STREAMS).
	// Off, an existing stream is only checked, never changed.
	NATSManageStreams bool

	// DaprHTTPEndpoint is the base URL of daprd's HTTP API
	// (DAPR_HTTP_ENDPOINT); empty means http://127.0.0.1:<DaprHTTPPort>.
	DaprHTTPEndpoint string
	// DaprHTTPPort is daprd's HTTP port (DAPR_HTTP_PORT).
	DaprHTTPPort int
	// DaprAPIToken is sent as the dapr-api-token header (DAPR_API_TOKEN).
	DaprAPIToken string
	// StateStore is the Dapr state store component (CART_STATE_STORE).
	StateStore string

	// StateClient is "pooled" (production) or "per-request" (benchmark
	// baseline only) (WORKER_STATE_CLIENT).
	StateClient string
	// StateMaxConns and StateMaxConnsPerHost bound the pooled client's
	// connections to Dapr.
	StateMaxConns        int
	StateMaxConnsPerHost int
	// StateDialTimeout, StateHeaderTimeout and StateRequestTimeout bound a
	// connect, the wait for response headers and a whole state call.
	StateDialTimeout    time.Duration
	StateHeaderTimeout  time.Duration
	StateRequestTimeout time.Duration

	// BreakerFailures consecutive failures open the breaker, which stays
	// open for BreakerOpenTimeout before a probe.
	BreakerFailures    int
	BreakerOpenTimeout time.Duration

	// SubjectPrefix is the first token of every subject (CART_SUBJECT_PREFIX).
	SubjectPrefix string
	// Concurrency is the most commands in flight per instance
	// (WORKER_CONCURRENCY).
	Concurrency int
	// Partitions is how many partitions carts are spread over
	// (WORKER_PARTITIONS): the most instances that share the work.
	Partitions int
	// AckWait is JetStream's redelivery timeout: how long a crashed
	// instance's carts wait.
	AckWait time.Duration
	// MaxDeliver is the delivery after which a transient failure is
	// dead-lettered.
	MaxDeliver int
	// ShutdownTimeout bounds the drain on SIGTERM (WORKER_SHUTDOWN_TIMEOUT).
	ShutdownTimeout time.Duration
	// TombstoneTTL is how long a deleted cart's tombstone lives.
	TombstoneTTL time.Duration
	// TaxTable is the tax table in cartcache.ParseTaxTable's format.
	TaxTable string

	// HTTPAddr serves /healthz, /readyz and /metrics (WORKER_HTTP_ADDR).
	HTTPAddr string
	// Pprof also serves /debug/pprof on HTTPAddr (WORKER_PPROF).
	Pprof bool
	// LogLevel is debug, info, warn or error (LOG_LEVEL).
	LogLevel string
	// LogFormat is json or text (LOG_FORMAT).
	LogFormat string
}

// setting binds one field to its flag and environment variable.
type setting struct {
	env, flag, usage string
	secret           bool
}

// bind registers every setting on fs, with the defaults, and returns them in
// order so that env values can be applied through the same parsers.
func (c *Config) bind(fs *flag.FlagSet) []setting {
	var out []setting
	str := func(p *string, env, name, def, usage string, secret bool) {
		fs.StringVar(p, name, def, usage+" (env "+env+")")
		out = append(out, setting{env: env, flag: name, usage: usage, secret: secret})
	}
	num := func(p *int, env, name string, def int, usage string) {
		fs.IntVar(p, name, def, usage+" (env "+env+")")
		out = append(out, setting{env: env, flag: name, usage: usage})
	}
	dur := func(p *time.Duration, env, name string, def time.Duration, usage string) {
		fs.DurationVar(p, name, def, usage+" (env "+env+")")
		out = append(out, setting{env: env, flag: name, usage: usage})
	}
	boolean := func(p *bool, env, name string, def bool, usage string) {
		fs.BoolVar(p, name, def, usage+" (env "+env+")")
		out = append(out, setting{env: env, flag: name, usage: usage})
	}

	str(&c.NATSURL, "NATS_URL", "nats-url", DefaultNATSURL, "NATS server URL(s), comma separated", false)
	str(&c.NATSUser, "NATS_USER", "nats-user", "", "NATS user", false)
	str(&c.NATSPassword, "NATS_PASSWORD", "nats-password", "", "NATS password (prefer the env var)", true)
	str(&c.NATSToken, "NATS_TOKEN", "nats-token", "", "NATS token (prefer the env var)", true)
	str(&c.NATSCreds, "NATS_CREDS", "nats-creds", "", "path to a NATS .creds file", false)
	// 10s leaves a slow start of NATS next to the worker time, and still
	// reports a wrong NATS_URL well within 15s.
	dur(&c.NATSConnectTimeout, "NATS_CONNECT_TIMEOUT", "nats-connect-timeout", 10*time.Second, "how long start-up retries an unreachable NATS server before giving up")
	num(&c.NATSStreamReplicas, "NATS_STREAM_REPLICAS", "nats-stream-replicas", 1, "replicas of the streams the worker creates (1..5; 1 for a single server)")
	boolean(&c.NATSManageStreams, "NATS_MANAGE_STREAMS", "nats-manage-streams", false, "raise existing streams' replicas, retention limits, duplicate window and subjects to the worker's, never lowering or removing anything; off, existing streams are left as they are")

	str(&c.DaprHTTPEndpoint, "DAPR_HTTP_ENDPOINT", "dapr-http-endpoint", "", "daprd HTTP base URL (default http://127.0.0.1:$DAPR_HTTP_PORT)", false)
	num(&c.DaprHTTPPort, "DAPR_HTTP_PORT", "dapr-http-port", DefaultDaprPort, "daprd HTTP port, used when DAPR_HTTP_ENDPOINT is empty")
	str(&c.DaprAPIToken, "DAPR_API_TOKEN", "dapr-api-token", "", "token sent as the dapr-api-token header (prefer the env var)", true)
	str(&c.StateStore, "CART_STATE_STORE", "state-store", DefaultStateStore, "Dapr state store component holding the carts", false)

	str(&c.StateClient, "WORKER_STATE_CLIENT", "state-client", string(statepool.ModePooled), `state client: "pooled", or "per-request" (a benchmark baseline only: new connection per call)`, false)
	num(&c.StateMaxConns, "WORKER_STATE_MAX_CONNS", "state-max-conns", statepool.DefaultMaxConns, "most connections to Dapr in total")
	num(&c.StateMaxConnsPerHost, "WORKER_STATE_MAX_CONNS_PER_HOST", "state-max-conns-per-host", statepool.DefaultMaxConnsPerHost, "most connections to one Dapr host")
	dur(&c.StateDialTimeout, "WORKER_STATE_DIAL_TIMEOUT", "state-dial-timeout", statepool.DefaultDialTimeout, "connect timeout to Dapr")
	dur(&c.StateHeaderTimeout, "WORKER_STATE_HEADER_TIMEOUT", "state-header-timeout", statepool.DefaultResponseHeaderTimeout, "wait for Dapr's response headers")
	dur(&c.StateRequestTimeout, "WORKER_STATE_REQUEST_TIMEOUT", "state-request-timeout", statepool.DefaultRequestTimeout, "total time of one state call")

	num(&c.BreakerFailures, "WORKER_BREAKER_FAILURES", "breaker-failures", 5, "consecutive state failures that open the breaker")
	dur(&c.BreakerOpenTimeout, "WORKER_BREAKER_OPEN_TIMEOUT", "breaker-open-timeout", 5*time.Second, "how long the breaker stays open before a probe")

	str(&c.SubjectPrefix, "CART_SUBJECT_PREFIX", "subject-prefix", command.DefaultPrefix, "first token of every cart subject", false)
	num(&c.Concurrency, "WORKER_CONCURRENCY", "concurrency", 16, "most commands in flight in this instance")
	num(&c.Partitions, "WORKER_PARTITIONS", "partitions", command.DefaultPartitions, "partitions carts are spread over: the most instances that share the work (change only with the stream drained)")
	dur(&c.AckWait, "WORKER_ACK_WAIT", "ack-wait", 5*time.Second, "JetStream redelivers a command not acknowledged for this long, as after a crash; longer work sends heartbeats")
	num(&c.MaxDeliver, "WORKER_MAX_DELIVER", "max-deliver", 10, "deliveries after which a transient failure is dead-lettered")
	dur(&c.ShutdownTimeout, "WORKER_SHUTDOWN_TIMEOUT", "shutdown-timeout", 20*time.Second, "time to finish in-flight commands on SIGTERM")
	dur(&c.TombstoneTTL, "CART_TOMBSTONE_TTL", "tombstone-ttl", time.Hour, "how long a deleted cart's tombstone is kept")
	str(&c.TaxTable, "CART_TAX_TABLE", "tax-table", cartcache.DefaultTaxTable().String(), "tax table, code:type:rate,...", false)

	str(&c.HTTPAddr, "WORKER_HTTP_ADDR", "http-addr", DefaultHTTPAddr, "address of /healthz, /readyz and /metrics", false)
	boolean(&c.Pprof, "WORKER_PPROF", "pprof", false, "also serve /debug/pprof on the HTTP address")
	str(&c.LogLevel, "LOG_LEVEL", "log-level", "info", "debug, info, warn or error", false)
	str(&c.LogFormat, "LOG_FORMAT", "log-format", "json", "json or text", false)
	return out
}

// Load reads the settings: defaults, then the environment through getenv,
// then args. With -h it prints the usage to out and returns flag.ErrHelp.
func Load(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("cartworker", flag.ContinueOnError)
	fs.SetOutput(out)
	settings := c.bind(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "cartworker applies cart commands from NATS JetStream to a Dapr state store.")
		fmt.Fprintln(fs.Output(), "\nEvery flag mirrors an environment variable; flags win. Settings and defaults:")
		fs.PrintDefaults()
	}
	for _, s := range settings {
		v := getenv(s.env)
		if v == "" {
			continue
		}
		if err := fs.Set(s.flag, v); err != nil {
			shown := fmt.Sprintf("%q", v)
			if s.secret {
				shown = "(redacted)"
			}
			return Config{}, fmt.Errorf("%s=%s: %w", s.env, shown, unwrapFlagErr(err))
		}
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.DaprHTTPEndpoint == "" {
		c.DaprHTTPEndpoint = fmt.Sprintf("http://127.0.0.1:%d", c.DaprHTTPPort)
	}
	if err := c.Validate(); err != nil {
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
func (c Config) Validate() error {
	var errs []error
	bad := func(env, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{env}, args...)...))
	}
	for _, u := range strings.Split(c.NATSURL, ",") {
		if pu, err := url.Parse(strings.TrimSpace(u)); err != nil || pu.Host == "" {
			bad("NATS_URL", "%q is not a URL like nats://host:4222", u)
		}
	}
	if (c.NATSUser == "") != (c.NATSPassword == "") {
		bad("NATS_USER", "NATS_USER and NATS_PASSWORD must be set together")
	}
	if c.NATSStreamReplicas < 1 || c.NATSStreamReplicas > 5 {
		bad("NATS_STREAM_REPLICAS", "%d: want 1..5", c.NATSStreamReplicas)
	}
	if pu, err := url.Parse(c.DaprHTTPEndpoint); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		bad("DAPR_HTTP_ENDPOINT", "%q is not an http(s) URL", c.DaprHTTPEndpoint)
	}
	if c.DaprHTTPPort < 1 || c.DaprHTTPPort > 65535 {
		bad("DAPR_HTTP_PORT", "%d is not a port", c.DaprHTTPPort)
	}
	if c.StateStore == "" {
		bad("CART_STATE_STORE", "must not be empty")
	}
	if m := statepool.Mode(c.StateClient); m != statepool.ModePooled && m != statepool.ModePerRequest {
		bad("WORKER_STATE_CLIENT", "%q: want pooled or per-request", c.StateClient)
	}
	if c.StateMaxConns < 1 {
		bad("WORKER_STATE_MAX_CONNS", "%d: want at least 1", c.StateMaxConns)
	}
	if c.StateMaxConnsPerHost < 1 || c.StateMaxConnsPerHost > c.StateMaxConns {
		bad("WORKER_STATE_MAX_CONNS_PER_HOST", "%d: want 1..WORKER_STATE_MAX_CONNS (%d)", c.StateMaxConnsPerHost, c.StateMaxConns)
	}
	if c.BreakerFailures < 1 {
		bad("WORKER_BREAKER_FAILURES", "%d: want at least 1", c.BreakerFailures)
	}
	if !command.ValidCartID(c.SubjectPrefix) {
		bad("CART_SUBJECT_PREFIX", "%q: want one subject token of [A-Za-z0-9_-]", c.SubjectPrefix)
	}
	if c.Concurrency < 1 || c.Concurrency > 4096 {
		bad("WORKER_CONCURRENCY", "%d: want 1..4096", c.Concurrency)
	}
	if c.Partitions < 1 || c.Partitions > command.MaxPartitions {
		bad("WORKER_PARTITIONS", "%d: want 1..%d", c.Partitions, command.MaxPartitions)
	}
	if c.AckWait < time.Second {
		bad("WORKER_ACK_WAIT", "%s: want at least 1s", c.AckWait)
	}
	if c.MaxDeliver < 1 {
		bad("WORKER_MAX_DELIVER", "%d: want at least 1", c.MaxDeliver)
	}
	for _, d := range []struct {
		env string
		v   time.Duration
	}{
		{"NATS_CONNECT_TIMEOUT", c.NATSConnectTimeout},
		{"WORKER_STATE_DIAL_TIMEOUT", c.StateDialTimeout},
		{"WORKER_STATE_HEADER_TIMEOUT", c.StateHeaderTimeout},
		{"WORKER_STATE_REQUEST_TIMEOUT", c.StateRequestTimeout},
		{"WORKER_BREAKER_OPEN_TIMEOUT", c.BreakerOpenTimeout},
		{"WORKER_ACK_WAIT", c.AckWait},
		{"WORKER_SHUTDOWN_TIMEOUT", c.ShutdownTimeout},
		{"CART_TOMBSTONE_TTL", c.TombstoneTTL},
	} {
		if d.v <= 0 {
			bad(d.env, "%s: want a positive duration such as 5s", d.v)
		}
	}
	if c.TombstoneTTL > 0 && c.TombstoneTTL < time.Second {
		bad("CART_TOMBSTONE_TTL", "%s: Dapr's TTL is in whole seconds, want at least 1s", c.TombstoneTTL)
	}
	if _, err := cartcache.ParseTaxTable(c.TaxTable); err != nil {
		bad("CART_TAX_TABLE", "%v", err)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("WORKER_HTTP_ADDR", "%q: want host:port such as :8080", c.HTTPAddr)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		bad("LOG_LEVEL", "%q: want debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("LOG_FORMAT", "%q: want json or text", c.LogFormat)
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
		slog.String("nats_url", redactURL(c.NATSURL)),
		slog.String("nats_user", c.NATSUser),
		slog.String("nats_password", redact(c.NATSPassword)),
		slog.String("nats_token", redact(c.NATSToken)),
		slog.String("nats_creds", c.NATSCreds),
		slog.String("nats_connect_timeout", c.NATSConnectTimeout.String()),
		slog.Int("nats_stream_replicas", c.NATSStreamReplicas),
		slog.Bool("nats_manage_streams", c.NATSManageStreams),
		slog.String("dapr_http_endpoint", c.DaprHTTPEndpoint),
		slog.String("dapr_api_token", redact(c.DaprAPIToken)),
		slog.String("state_store", c.StateStore),
		slog.String("state_client", c.StateClient),
		slog.Int("state_max_conns", c.StateMaxConns),
		slog.Int("state_max_conns_per_host", c.StateMaxConnsPerHost),
		slog.String("subject_prefix", c.SubjectPrefix),
		slog.Int("concurrency", c.Concurrency),
		slog.Int("partitions", c.Partitions),
		slog.String("shutdown_timeout", c.ShutdownTimeout.String()),
		slog.String("http_addr", c.HTTPAddr),
		slog.Bool("pprof", c.Pprof),
	)
}

// NATSURLRedacted is NATSURL fit for logs and error messages.
func (c Config) NATSURLRedacted() string { return redactURL(c.NATSURL) }

// redactURL hides the credentials embedded in a URL list. A user without a
// password is hidden too: NATS reads nats://secret@host as a token.
func redactURL(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			continue
		}
		if _, hasPassword := u.User.Password(); !hasPassword {
			u.User = url.User("xxxxx")
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}

// StatePool returns the state client's configuration.
func (c Config) StatePool() statepool.Config {
	return statepool.Config{
		Endpoint:              c.DaprHTTPEndpoint,
		StoreName:             c.StateStore,
		APIToken:              c.DaprAPIToken,
		Mode:                  statepool.Mode(c.StateClient),
		MaxConns:              c.StateMaxConns,
		MaxConnsPerHost:       c.StateMaxConnsPerHost,
		DialTimeout:           c.StateDialTimeout,
		ResponseHeaderTimeout: c.StateHeaderTimeout,
		RequestTimeout:        c.StateRequestTimeout,
	}
}

// Level returns LogLevel parsed; Validate has checked it.
func (c Config) Level() slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(c.LogLevel))
	return l
}
