// Command watermillpeer is the benchmark's Watermill peer: what a Go team
// would write instead of cartworker with the usual library for it. A
// Watermill router (github.com/ThreeDotsLabs/watermill) reads the command
// stream through watermill-nats' JetStream subscriber and runs one handler
// call per command: decode, read the cart with its ETag, apply the cart
// rules, save guarded by the ETag (re-read and re-applied on a conflict),
// publish the outcome event, ack. Retry and Recoverer are the router's
// middleware; a handler error that survives Retry is a Nack, redelivered
// after a delay.
//
// It does the same work per command as the worker, through the same code:
// the cart rules and the ETag loop are cartworker's own (internal/cartcache,
// imported through the replace directive, as bench/sdkpeer does), and the
// state calls go through either the worker's pooled HTTP client
// (-protocol http) or the Dapr Go SDK over gRPC (-protocol grpc), so that it
// is compared with the worker on the same transport. What differs is what
// surrounds a command: the framework, one command per read-modify-write, and
// a synchronous ack per message (watermill-nats' default).
//
// Order per cart: a cart's commands must apply in stream order (an add-item
// before its cache would be rejected). The command stream already stores
// every cart in one of N partitions (subject cart.pcmd.<p>.<cart>.<type>),
// so the peer subscribes once per partition, each with its own durable
// consumer (wm-peer-pNN) that has one message in flight: the same ordering
// scheme as the worker, with the partitions' commands handled concurrently.
//
// It runs instead of the worker, never beside it, on its own NATS server,
// and creates the command stream as the worker would when it is missing.
// scripts/bench.sh builds it (its own module, so that cartworker never
// depends on Watermill) and runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cartcache"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "watermillpeer:", err)
		os.Exit(1)
	}
}

// config is the peer's command line.
type config struct {
	natsURL    string
	protocol   string
	daprHTTP   string
	daprGRPC   string
	store      string
	prefix     string
	partitions int
	httpAddr   string
	ackWait    time.Duration
	logLevel   string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("watermillpeer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.natsURL, "nats", "nats://127.0.0.1:4222", "NATS URL (a server of its own: the peer runs instead of the worker)")
	fs.StringVar(&c.protocol, "protocol", protocolGRPC, "state transport: grpc (Dapr Go SDK) or http (the worker's pooled HTTP client)")
	fs.StringVar(&c.daprHTTP, "dapr-http", "http://127.0.0.1:3500", "daprd HTTP endpoint (-protocol http)")
	fs.StringVar(&c.daprGRPC, "dapr-grpc", "127.0.0.1:50001", "daprd gRPC address (-protocol grpc)")
	fs.StringVar(&c.store, "store", "cartstore", "Dapr state store")
	fs.StringVar(&c.prefix, "prefix", command.DefaultPrefix, "subject prefix (CART_SUBJECT_PREFIX)")
	fs.IntVar(&c.partitions, "partitions", command.DefaultPartitions, "partitions of the command stream (the worker's WORKER_PARTITIONS)")
	fs.StringVar(&c.httpAddr, "http-addr", "", "serve /readyz here once every subscription is up (e.g. 127.0.0.1:8090)")
	fs.DurationVar(&c.ackWait, "ack-wait", 30*time.Second, "JetStream ack wait of the peer's consumers")
	fs.StringVar(&c.logLevel, "log-level", "warn", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.protocol != protocolGRPC && c.protocol != protocolHTTP {
		return c, fmt.Errorf("-protocol %q: want grpc or http", c.protocol)
	}
	if c.partitions < 1 || c.partitions > command.MaxPartitions {
		return c, fmt.Errorf("-partitions %d: want 1..%d", c.partitions, command.MaxPartitions)
	}
	return c, nil
}

// run runs the peer until ctx ends.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger, err := newLogger(cfg.logLevel, stderr)
	if err != nil {
		return err
	}
	store, closeStore, err := newStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeStore()

	nc, err := nats.Connect(cfg.natsURL, nats.Name("cartworker-watermillpeer"), nats.Timeout(5*time.Second))
	if err != nil {
		return fmt.Errorf("connect to NATS %s: %w", cfg.natsURL, err)
	}
	defer nc.Close()
	subjects := command.Subjects{Prefix: cfg.prefix}
	if err := ensureStream(ctx, nc, subjects, cfg.partitions); err != nil {
		return err
	}
	sub, err := newSubscriber(nc, subjects, cfg, logger)
	if err != nil {
		return err
	}
	defer sub.Close()
	// Outcome events are core NATS messages, as the worker sends them.
	pub, err := wmnats.NewPublisherWithNatsConn(nc, wmnats.PublisherPublishConfig{
		Marshaler: &wmnats.NATSMarshaler{},
		JetStream: wmnats.JetStreamConfig{Disabled: true},
	}, logger)
	if err != nil {
		return fmt.Errorf("watermill publisher: %w", err)
	}
	router, err := newRouter(logger)
	if err != nil {
		return err
	}
	h := &handler{carts: cartcache.New(store, cartcache.Config{}), subjects: subjects, pub: pub}
	for p := range cfg.partitions {
		router.AddConsumerHandler(fmt.Sprintf("cart-commands-p%02d", p), subjects.Partition(p), sub, h.handle)
	}

	var ready atomic.Bool
	if cfg.httpAddr != "" {
		stopHTTP, err := serveReady(cfg.httpAddr, &ready)
		if err != nil {
			return err
		}
		defer stopHTTP()
	}
	go markRunning(ctx, router, &ready, logger, cfg)
	// Run returns when ctx ends (SIGTERM), after the handlers finished.
	return router.Run(ctx)
}

// newLogger is Watermill's logger over slog, at level ("debug", "info",
// "warn" or "error").
func newLogger(level string, stderr io.Writer) (watermill.LoggerAdapter, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	return watermill.NewSlogLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: l}))), nil
}

// newSubscriber subscribes to the command stream with one durable consumer
// per partition, one message in flight each.
func newSubscriber(nc *nats.Conn, subjects command.Subjects, cfg config, logger watermill.LoggerAdapter) (*wmnats.Subscriber, error) {
	durables := map[string]string{}
	for p := range cfg.partitions {
		durables[subjects.Partition(p)] = fmt.Sprintf("wm-peer-p%02d", p)
	}
	sub, err := wmnats.NewSubscriberWithNatsConn(nc, wmnats.SubscriberSubscriptionConfig{
		Unmarshaler:    subjectUnmarshaler{subjects: subjects},
		AckWaitTimeout: cfg.ackWait,
		CloseTimeout:   20 * time.Second,
		// A message that failed its handler (after Retry) comes back later.
		NakDelay: wmnats.NewStaticDelay(100 * time.Millisecond),
		JetStream: wmnats.JetStreamConfig{
			SubscribeOptions: []nats.SubOpt{
				nats.BindStream(command.StreamCommands),
				nats.AckExplicit(),
				nats.MaxAckPending(1),
				nats.DeliverAll(),
				nats.AckWait(cfg.ackWait),
			},
			DurablePrefix:     "wm-peer",
			DurableCalculator: func(_, topic string) string { return durables[topic] },
		},
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("watermill subscriber: %w", err)
	}
	return sub, nil
}

// newRouter is the Watermill router with the usual middleware: Retry, then
// Recoverer.
func newRouter(logger watermill.LoggerAdapter) (*message.Router, error) {
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 20 * time.Second}, logger)
	if err != nil {
		return nil, fmt.Errorf("watermill router: %w", err)
	}
	router.AddMiddleware(
		middleware.Retry{
			MaxRetries:      5,
			InitialInterval: 50 * time.Millisecond,
			MaxInterval:     time.Second,
			Multiplier:      2,
			Logger:          logger,
		}.Middleware,
		middleware.Recoverer,
	)
	return router, nil
}

// markRunning sets ready once the router runs (every subscription up), or
// returns when ctx ends first.
func markRunning(ctx context.Context, router *message.Router, ready *atomic.Bool, logger watermill.LoggerAdapter, cfg config) {
	select {
	case <-router.Running():
		ready.Store(true)
		logger.Info("watermillpeer running", watermill.LogFields{
			"protocol": cfg.protocol, "partitions": cfg.partitions, "watermill": moduleVersion("github.com/ThreeDotsLabs/watermill"),
		})
	case <-ctx.Done():
	}
}

// serveReady answers /readyz with 200 once ready is set, and /healthz
// always.
func serveReady(addr string, ready *atomic.Bool) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-http-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "subscribing", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// moduleVersion is the version of a dependency compiled in.
func moduleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == path {
				return m.Version
			}
		}
	}
	return "(unknown version)"
}
