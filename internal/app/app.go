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
// configuration and the integration tests run it in-process.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
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
	stateCfg := cfg.State
	stateCfg.Hooks = m.StateHooks()
	stateCfg.TracerProvider = tracing.TracerProvider()
	state, err := statepool.New(stateCfg)
	if err != nil {
		return fmt.Errorf("state client: %w", err)
	}
	defer state.Close()
	breakerCfg := cfg.Breaker
	// Called under the breaker's lock: record, never call back into it.
	breakerCfg.OnStateChange = func(from, to breaker.State) {
		m.SetBreakerState(to)
		log.Warn("state breaker changed", "from", from.String(), "to", to.String())
	}
	guarded, err := breaker.New(state, breakerCfg)
	if err != nil {
		return fmt.Errorf("breaker: %w", err)
	}
	// The one memory setting: commands and carts have separate shares, so
	// that commands waiting for their apply never hold what it needs.
	heldCommands, heldCarts, err := budget.Split(int64(cfg.MaxHeldBytes))
	if err != nil {
		return fmt.Errorf("WORKER_MAX_HELD_BYTES: %w", err)
	}
	m.HeldFrom(heldCommands, heldCarts)
	cartsCfg := cfg.Carts
	cartsCfg.Held = heldCarts
	carts := cartcache.New(guarded, cartsCfg)

	nc, err := natsconn.Connect(ctx, cfg.NATS, log)
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer closeNATS(nc, log)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	consumerCfg := cfg.Consumer
	consumerCfg.Probe = stateProbe(cfg.State, state, guarded)
	consumerCfg.Logger = log
	consumerCfg.Observer = m
	consumerCfg.TracerProvider = tracing.TracerProvider()
	consumerCfg.Held = heldCommands
	w, err := consumer.New(js, nc, carts, consumerCfg)
	if err != nil {
		return err
	}

	ready := func() error {
		if !nc.IsConnected() {
			return errors.New("NATS is not connected")
		}
		if err := breakerOpen(guarded); err != nil {
			return err
		}
		return w.Ready()
	}
	m.ReadyFrom(ready)
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("WORKER_HTTP_ADDR: %w", err)
	}
	srv := &http.Server{
		Handler:           health.Handler(ready, m.Handler(), cfg.Pprof),
		ReadHeaderTimeout: 5 * time.Second,
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "err", err)
		}
	})
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("serving", "http_addr", ln.Addr().String(), "healthz", "/healthz", "readyz", "/readyz", "metrics", config.DefaultMetricsPath)

	err = w.Run(ctx)
	log.Info("stopped", "err", err)
	return err
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
