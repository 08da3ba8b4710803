package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cartcache"
)

// sidecarStopTimeout bounds daprd's graceful shutdown before it is killed;
// `loadgen backlog` kills the peer itself after 25 s.
const sidecarStopTimeout = 15 * time.Second

// peer is the parts of a running peer, each nil until started, so that
// close can stop whatever started, in order.
type peer struct {
	nc         *nats.Conn
	removeDir  func()
	car        *sidecar
	closeStore func()
	app        *appServer
	ready      *readyServer
}

// run runs the peer until ctx ends or its daprd exits.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var p peer
	defer p.close(logger)
	if err := p.start(ctx, cfg, stderr); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case <-p.car.done:
		return fmt.Errorf("daprd exited: %w", p.car.exitErr())
	case err := <-p.app.failed:
		return err
	}
}

// start brings the peer up: NATS and the command stream, the components,
// daprd, the state client, the app, and readiness once every subscription
// is up.
func (p *peer) start(ctx context.Context, cfg config, stderr io.Writer) error {
	var err error
	if p.nc, err = nats.Connect(cfg.natsURL, nats.Name("cartworker-daprpeer"), nats.Timeout(5*time.Second)); err != nil {
		return fmt.Errorf("connect to NATS %s: %w", cfg.natsURL, err)
	}
	js, err := jetstream.New(p.nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	subjects := command.Subjects{Prefix: cfg.prefix}
	if err := ensureStream(ctx, js, subjects, cfg.partitions); err != nil {
		return err
	}
	plan := newPlan(cfg)
	dir, removeDir, err := componentsDir(cfg.workDir)
	if err != nil {
		return err
	}
	p.removeDir = removeDir
	if err := plan.write(dir); err != nil {
		return err
	}
	if p.ready, err = serveReady(cfg.httpAddr); err != nil {
		return err
	}
	if p.car, err = startSidecar(cfg, []string{cfg.resources, dir}, stderr); err != nil {
		return err
	}
	base := "http://127.0.0.1:" + strconv.Itoa(cfg.httpPort)
	if err := p.car.waitHTTP(ctx, base+"/v1.0/healthz/outbound", cfg.readyTimeout); err != nil {
		return err
	}
	store, closeStore, err := newSDKStore(ctx, "127.0.0.1:"+strconv.Itoa(cfg.grpcPort), cfg.store)
	if err != nil {
		return err
	}
	p.closeStore = closeStore
	h := &handler{carts: cartcache.New(store, cartcache.Config{}), subjects: subjects, events: p.nc}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.appPort)))
	if err != nil {
		return fmt.Errorf("-app-port: %w", err)
	}
	if p.app, err = startApp(ln, plan, h); err != nil {
		return err
	}
	if err := p.car.waitHTTP(ctx, base+"/v1.0/healthz", cfg.readyTimeout); err != nil {
		return err
	}
	if err := waitBound(ctx, js, plan.durables(), cfg.readyTimeout); err != nil {
		return err
	}
	p.ready.ready.Store(true)
	return nil
}

// close stops what started, daprd first: it finishes the deliveries in
// flight while the app still answers them, so that none is left unacked.
func (p *peer) close(logger *slog.Logger) {
	if p.ready != nil {
		p.ready.ready.Store(false)
	}
	if p.car != nil {
		if err := p.car.stop(sidecarStopTimeout); err != nil {
			logger.Warn("daprd did not stop cleanly", "err", err)
		}
	}
	if p.app != nil {
		p.app.stop()
	}
	if p.closeStore != nil {
		p.closeStore()
	}
	if p.nc != nil {
		// Outcome events still buffered go out before the connection closes.
		if err := p.nc.FlushTimeout(5 * time.Second); err != nil {
			logger.Warn("flushing outcome events", "err", err)
		}
		p.nc.Close()
	}
	if p.ready != nil {
		p.ready.stop()
	}
	if p.removeDir != nil {
		p.removeDir()
	}
}

// componentsDir is dir, created if needed and left in place, or a new
// temporary directory that the returned func removes.
func componentsDir(dir string) (string, func(), error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", nil, fmt.Errorf("-work-dir: %w", err)
		}
		return dir, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "daprpeer-components-")
	if err != nil {
		return "", nil, fmt.Errorf("components directory: %w", err)
	}
	return tmp, func() { _ = os.RemoveAll(tmp) }, nil
}

// readyServer answers /readyz with 200 once ready is set, and /healthz
// always; with no address it serves nothing.
type readyServer struct {
	ready atomic.Bool
	srv   *http.Server
	done  chan struct{} // closed when Serve has returned
}

func serveReady(addr string) (*readyServer, error) {
	r := &readyServer{done: make(chan struct{})}
	if addr == "" {
		close(r.done)
		return r, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-http-addr: %w", err)
	}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(r.done)
		if err := r.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "daprpeer: readiness server:", err)
		}
	}()
	return r, nil
}

// ServeHTTP answers the probes.
func (r *readyServer) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch {
	case req.URL.Path == "/healthz":
		_, _ = io.WriteString(w, "ok\n")
	case req.URL.Path != "/readyz":
		http.NotFound(w, req)
	case r.ready.Load():
		_, _ = io.WriteString(w, "ready\n")
	default:
		http.Error(w, "subscribing", http.StatusServiceUnavailable)
	}
}

// stop shuts the server down and waits for it.
func (r *readyServer) stop() {
	if r.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = r.srv.Shutdown(ctx)
	}
	<-r.done
}
