package cartworkertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/testcontainers/testcontainers-go"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"

	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/publisher"
)

// Stack is a running cartworker stack: a Docker network with NATS
// (JetStream), Redis and daprd, the workers, and the stack's own clients.
// Its methods are safe for concurrent use. Terminate removes it.
type Stack struct {
	set    settings
	images stackImages
	// id names the stack's containers and labels them.
	id string

	network *testcontainers.DockerNetwork
	nats    *testcontainers.DockerContainer
	redis   *tcredis.RedisContainer
	daprd   *testcontainers.DockerContainer

	natsURL, daprHTTP, daprGRPC string

	nc   *nats.Conn
	js   jetstream.JetStream
	pub  *publisher.Publisher
	dapr *statepool.Client

	mu         sync.Mutex
	workers    []*Worker
	paused     bool
	terminated bool
	// closers undo what Run made, run newest first by Terminate.
	closers []func(context.Context) error
}

// Run starts a stack and returns once every container is up and every
// worker is ready (/readyz 200). On error it removes what it had started,
// and says which part failed, with its last log lines.
//
// By default it runs DefaultWorkers worker in the test's process; Options
// change that and customize the containers. Images come from the
// environment or deployments/images.env (Image).
func Run(ctx context.Context, opts ...Option) (st *Stack, err error) {
	set, err := newSettings(opts)
	if err != nil {
		return nil, err
	}
	images, err := resolveImages()
	if err != nil {
		return nil, err
	}
	if err := preflight(ctx, set, images); err != nil {
		return nil, err
	}
	st = &Stack{set: set, images: images, id: randomHex(4)}
	defer func() {
		if err != nil {
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			err = errors.Join(err, st.Terminate(tctx))
			st = nil
		}
	}()
	if err := st.startContainers(ctx); err != nil {
		return st, err
	}
	if err := st.connect(ctx); err != nil {
		return st, err
	}
	return st, st.startWorkers(ctx, set.workers)
}

// preflight checks what Run needs before it starts anything: Docker, the
// images (pulled when missing), the worker binary.
func preflight(ctx context.Context, set settings, images stackImages) error {
	cli, err := dockerClient(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	need := []string{images.nats, images.redis, images.daprd}
	if set.worker.kind == container {
		need = append(need, set.worker.image)
	}
	if err := ensureImages(ctx, cli, need...); err != nil {
		return err
	}
	if set.worker.kind == hostProcess {
		return checkBinary(set.worker.binary)
	}
	return nil
}

// startContainers makes the network, NATS and Redis side by side, then
// daprd, whose component needs Redis.
func (s *Stack) startContainers(ctx context.Context) error {
	nw, err := tcnetwork.New(ctx, tcnetwork.WithLabels(map[string]string{labelKey: s.id}))
	if nw != nil {
		s.addCloser(func(ctx context.Context) error { return nw.Remove(ctx) })
	}
	if err != nil {
		return fmt.Errorf("cartworkertest: Docker network: %w", err)
	}
	s.network = nw

	var wg sync.WaitGroup
	var natsErr, redisErr error
	wg.Go(func() { natsErr = s.startNATS(ctx) })
	wg.Go(func() { redisErr = s.startRedis(ctx) })
	wg.Wait()
	if err := errors.Join(natsErr, redisErr); err != nil {
		return err
	}
	return s.startDaprd(ctx)
}

func (s *Stack) startNATS(ctx context.Context) error {
	c, err := s.runOnFixedPorts(ctx, "nats", s.images.nats, 1, func(ports []int) []testcontainers.ContainerCustomizer {
		return append(natsCustomizers(s.network, ports[0], s.set.startupTimeout), s.set.natsCustom...)
	})
	if err != nil {
		return err
	}
	s.nats = c
	s.natsURL, err = c.PortEndpoint(ctx, natsPort, "nats")
	return err
}

func (s *Stack) startRedis(ctx context.Context) error {
	opts := append(redisCustomizers(s.network, s.set.startupTimeout), s.set.redisCustom...)
	c, err := s.runContainer(ctx, "redis", s.images.redis, runRedis, opts...)
	if c != nil {
		s.addContainer(c)
		s.redis = c.(*tcredis.RedisContainer)
	}
	return err
}

func (s *Stack) startDaprd(ctx context.Context) error {
	c, err := s.runOnFixedPorts(ctx, "daprd", s.images.daprd, 2, func(ports []int) []testcontainers.ContainerCustomizer {
		return append(daprdCustomizers(s.network, s.set.daprToken, ports[0], ports[1], s.set.startupTimeout), s.set.daprdCustom...)
	})
	if err != nil {
		return err
	}
	s.daprd = c
	if s.daprHTTP, err = c.PortEndpoint(ctx, daprPort, "http"); err != nil {
		return err
	}
	s.daprGRPC, err = c.PortEndpoint(ctx, daprGRPCPort, "")
	return err
}

// connect makes the stack's own clients: a NATS connection that follows
// NATS across RestartNATS, the Publisher, and a Dapr client for Cart.
func (s *Stack) connect(ctx context.Context) error {
	opts := append([]nats.Option{
		nats.Name("cartworkertest"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond),
	}, s.set.natsOptions...)
	nc, err := nats.Connect(s.natsURL, opts...)
	if err != nil {
		return fmt.Errorf("cartworkertest: connect to NATS at %s: %w", s.natsURL, err)
	}
	s.nc = nc
	s.addCloser(func(context.Context) error { nc.Close(); return nil })
	if s.js, err = jetstream.New(nc); err != nil {
		return fmt.Errorf("cartworkertest: JetStream: %w", err)
	}
	if s.pub, err = publisher.New(s.js, nc, s.set.publisherOptions...); err != nil {
		return fmt.Errorf("cartworkertest: publisher: %w", err)
	}
	s.addCloser(func(context.Context) error { return s.pub.Close() })
	s.dapr, err = statepool.New(statepool.Config{
		Protocol: statepool.ProtocolHTTP, Endpoint: s.daprHTTP, APIToken: s.set.daprToken,
		RequestTimeout: 10 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("cartworkertest: Dapr client: %w", err)
	}
	s.addCloser(func(context.Context) error { s.dapr.Close(); return nil })
	return nil
}

// Terminate stops every worker (gracefully, killing one that does not stop
// within DefaultStopTimeout) and removes the containers and the network.
// A second call does nothing.
func (s *Stack) Terminate(ctx context.Context) error {
	s.mu.Lock()
	if s.terminated {
		s.mu.Unlock()
		return nil
	}
	s.terminated = true
	workers, closers, paused := s.workers, s.closers, s.paused
	s.closers = nil
	s.mu.Unlock()

	var errs []error
	for _, w := range workers {
		if w != nil { // nil: still starting; AddWorker stops it
			errs = append(errs, w.stopOrKill(ctx))
		}
	}
	if paused {
		errs = append(errs, s.UnpauseDaprd(ctx))
	}
	for i := len(closers) - 1; i >= 0; i-- {
		errs = append(errs, closers[i](ctx))
	}
	return errors.Join(errs...)
}

func (s *Stack) addCloser(f func(context.Context) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closers = append(s.closers, f)
}

func (s *Stack) addContainer(c testcontainers.Container) {
	s.addCloser(func(ctx context.Context) error {
		return c.Terminate(ctx, testcontainers.StopTimeout(5*time.Second))
	})
}

// NATSURL is the NATS server's client URL on the loopback
// (nats://127.0.0.1:port). It stays the same across RestartNATS.
func (s *Stack) NATSURL() string { return s.natsURL }

// DaprHTTPEndpoint is daprd's HTTP API on the loopback
// (http://127.0.0.1:port), a worker's DAPR_HTTP_ENDPOINT. It stays the same
// across StopDaprd and StartDaprd.
func (s *Stack) DaprHTTPEndpoint() string { return s.daprHTTP }

// DaprGRPCEndpoint is daprd's gRPC API on the loopback (127.0.0.1:port).
// It stays the same across StopDaprd and StartDaprd.
func (s *Stack) DaprGRPCEndpoint() string { return s.daprGRPC }

// DaprToken is the token daprd requires (WithDaprToken), or "".
func (s *Stack) DaprToken() string { return s.set.daprToken }

// Publisher is a ready publisher on the stack's own NATS connection. It
// is closed by Terminate.
func (s *Stack) Publisher() *publisher.Publisher { return s.pub }

// JetStream is the stack's own JetStream context, for what the Publisher
// does not do (reading streams, publishing raw messages).
func (s *Stack) JetStream() jetstream.JetStream { return s.js }

// Network is the Docker network of the stack's containers, for a
// container of your own beside them (NATS, Redis and daprd are reached as
// nats:4222, redis:6379, daprd:3500 and daprd:50001).
func (s *Stack) Network() *testcontainers.DockerNetwork { return s.network }

// NATSContainer is the NATS container.
func (s *Stack) NATSContainer() *testcontainers.DockerContainer { return s.nats }

// RedisContainer is the Redis container (testcontainers-go's
// modules/redis); daprd keeps the carts in its database 2, under keys
// "cartworker||<cart id>".
func (s *Stack) RedisContainer() *tcredis.RedisContainer { return s.redis }

// DaprdContainer is the daprd container.
func (s *Stack) DaprdContainer() *testcontainers.DockerContainer { return s.daprd }

// Logs returns the last n lines of the output of each container and
// each worker, headed by its name: for the log of a test that failed.
func (s *Stack) Logs(n int) string {
	var b strings.Builder
	container := func(name string, c testcontainers.Container) {
		fmt.Fprintf(&b, "--- last log lines of %s ---\n%s\n", name, containerTail(c, n))
	}
	// Each only if it was made: a typed nil would not be a nil interface.
	if s.nats != nil {
		container("nats", s.nats)
	}
	if s.redis != nil {
		container("redis", s.redis)
	}
	if s.daprd != nil {
		container("daprd", s.daprd)
	}
	for _, w := range s.Workers() {
		fmt.Fprintf(&b, "--- last log lines of worker %s (%s) ---\n%s\n", w.name, w.kind, w.lastLines(n))
	}
	return b.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
