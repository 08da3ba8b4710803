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
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/config"
	"github.com/cartworker/cartworker/internal/consumer"
	"github.com/cartworker/cartworker/internal/health"
	"github.com/cartworker/cartworker/internal/metrics"
	"github.com/cartworker/cartworker/internal/statepool"
)

// Run wires the worker from cfg and blocks until ctx ends and everything it
// started has stopped. It is the whole worker; cmd/worker only loads the
// configuration and the integration tests run it in-process.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	log.Info("starting", "config", cfg)

	m := metrics.New()
	doer, closeDoer := statepool.NewDoer(cfg.StatePool(), m.StateHooks())
	defer closeDoer()
	state, err := statepool.New(doer, cfg.StatePool(), m.StateHooks())
	if err != nil {
		return fmt.Errorf("state client: %w", err)
	}
	guarded, err := breaker.New(state, breaker.Settings{
		ConsecutiveFailures: uint32(cfg.BreakerFailures),
		Timeout:             cfg.BreakerOpenTimeout,
		// Called under the breaker's lock: record, never call back into it.
		OnStateChange: func(from, to breaker.State) {
			m.SetBreakerState(to)
			log.Warn("state breaker changed", "from", from.String(), "to", to.String())
		},
	})
	if err != nil {
		return fmt.Errorf("breaker: %w", err)
	}
	taxes, err := cartcache.ParseTaxTable(cfg.TaxTable)
	if err != nil {
		return fmt.Errorf("CART_TAX_TABLE: %w", err)
	}
	carts := cartcache.New(guarded, cartcache.Config{TaxTable: taxes, TombstoneTTL: cfg.TombstoneTTL})

	nc, err := connectNATS(ctx, cfg, log)
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer closeNATS(nc, log)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	w, err := consumer.New(js, nc, carts, consumer.Config{
		Subjects:        command.Subjects{Prefix: cfg.SubjectPrefix},
		Concurrency:     cfg.Concurrency,
		Partitions:      cfg.Partitions,
		AckWait:         cfg.AckWait,
		MaxDeliver:      cfg.MaxDeliver,
		Probe:           stateProbe(cfg, state, guarded),
		ShutdownTimeout: cfg.ShutdownTimeout,
		Replicas:        cfg.NATSStreamReplicas,
		ManageStreams:   cfg.NATSManageStreams,
		Logger:          log,
		Observer:        m,
	})
	if err != nil {
		return err
	}

	ready := func() error {
		if !nc.IsConnected() {
			return errors.New("NATS is not connected")
		}
		if guarded.State() == breaker.StateOpen {
			return errBreakerOpen
		}
		return w.Ready()
	}
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
