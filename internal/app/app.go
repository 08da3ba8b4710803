// Package app wires cartworker's parts together: the pooled state client,
// its breaker, the cart service, NATS, the consumer and the HTTP endpoints.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/budget"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/config"
	"github.com/cartworker/cartworker/internal/consumer"
	"github.com/cartworker/cartworker/internal/health"
	"github.com/cartworker/cartworker/internal/metrics"
	"github.com/cartworker/cartworker/internal/natsconn"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/internal/telemetry"
)

// Run wires the worker from cfg and blocks until ctx ends and everything it
// started has stopped. It is the whole worker; cmd/worker only loads the
// configuration, and package cartworkertest runs it in-process (with opts).
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, opts ...Option) error {
	var o runOptions
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	log.Info("starting", "config", cfg)

	// Shut down last, once every span has ended: its deferred flush runs
	// after everything below has stopped.
	tracing, err := telemetry.New(cfg.Telemetry, log)
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	defer func() {
		if err := tracing.Shutdown(context.Background()); err != nil {
			log.Warn("spans not flushed", "err", err)
		}
	}()
	log.Info("tracing", "tracing", tracing)

	m := metrics.New()
	m.SetBuildInfo(buildInfo())
	st, err := newStateSide(cfg, m, tracing, log)
	if err != nil {
		return err
	}
	defer st.client.Close()

	nc, err := natsconn.Connect(ctx, cfg.NATS, log)
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer closeNATS(nc, log)
	if o.abort != nil {
		var aborter sync.WaitGroup
		defer aborter.Wait()
		defer cancel() // before the Wait: it ends the aborter
		aborter.Go(func() { abortOn(ctx, o.abort, nc, st.client, cancel, log) })
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	consumerCfg := cfg.Consumer
	consumerCfg.Probe = stateProbe(cfg.State, st.client, st.guarded)
	consumerCfg.Logger = log
	consumerCfg.Observer = m
	consumerCfg.TracerProvider = tracing.TracerProvider()
	consumerCfg.Held = st.heldCommands
	w, err := consumer.New(js, nc, st.carts, consumerCfg)
	if err != nil {
		return err
	}

	ready := func() error {
		if !nc.IsConnected() {
			return errors.New("NATS is not connected")
		}
		if err := breakerOpen(st.guarded); err != nil {
			return err
		}
		return w.Ready()
	}
	m.ReadyFrom(ready)
	stop, err := serve(cfg, o.listener, ready, m, log)
	if err != nil {
		return err
	}
	defer stop()

	err = w.Run(ctx)
	log.Info("stopped", "err", err)
	return err
}

// stateSide is the worker's side of the state store: the one pooled client,
// its breaker, the carts kept through them, and the share of
// WORKER_MAX_HELD_BYTES left for the commands.
type stateSide struct {
	client       *statepool.Client
	guarded      *breaker.Breaker
	carts        *cartcache.Carts
	heldCommands *budget.Bytes
}

// newStateSide builds the state side; the caller closes st.client.
func newStateSide(cfg config.Config, m *metrics.Metrics, tracing *telemetry.Tracing, log *slog.Logger) (*stateSide, error) {
	stateCfg := cfg.State
	stateCfg.Hooks = m.StateHooks()
	stateCfg.TracerProvider = tracing.TracerProvider()
	client, err := statepool.New(stateCfg)
	if err != nil {
		return nil, fmt.Errorf("state client: %w", err)
	}
	breakerCfg := cfg.Breaker
	// Called under the breaker's lock: record, never call back into it.
	breakerCfg.OnStateChange = func(from, to breaker.State) {
		m.SetBreakerState(to)
		log.Warn("state breaker changed", "from", from.String(), "to", to.String())
	}
	guarded, err := breaker.New(client, breakerCfg)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("breaker: %w", err)
	}
	// The one memory setting: commands and carts have separate shares, so
	// that commands waiting for their apply never hold what it needs.
	heldCommands, heldCarts, err := budget.Split(int64(cfg.MaxHeldBytes))
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("WORKER_MAX_HELD_BYTES: %w", err)
	}
	m.HeldFrom(heldCommands, heldCarts)
	cartsCfg := cfg.Carts
	cartsCfg.Held = heldCarts
	return &stateSide{client: client, guarded: guarded, carts: cartcache.New(guarded, cartsCfg), heldCommands: heldCommands}, nil
}

// serve serves /healthz, /readyz, /metrics (and pprof when asked) on ln, or
// on WORKER_HTTP_ADDR when ln is nil, until stop, which shuts the server
// down and waits for it.
func serve(cfg config.Config, ln net.Listener, ready func() error, m *metrics.Metrics, log *slog.Logger) (stop func(), err error) {
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("WORKER_HTTP_ADDR: %w", err)
		}
	}
	srv := &http.Server{
		Handler:           health.Handler(ready, m.Handler(), cfg.Pprof),
		ReadHeaderTimeout: 5 * time.Second,
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "err", err)
		}
	})
	log.Info("serving", "http_addr", ln.Addr().String(), "healthz", "/healthz", "readyz", "/readyz", "metrics", config.DefaultMetricsPath)
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		wg.Wait()
	}, nil
}

// NewLogger returns the structured logger cfg asks for, writing to out.
func NewLogger(cfg config.Config, out io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.Level()}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(out, opts))
	}
	return slog.New(slog.NewJSONHandler(out, opts))
}

// buildInfo reads the worker's version, VCS revision and Go version from
// the binary, as the go command recorded them.
func buildInfo() (version, revision, goVersion string) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "", "", runtime.Version()
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			revision = s.Value
		}
	}
	return bi.Main.Version, revision, bi.GoVersion
}
