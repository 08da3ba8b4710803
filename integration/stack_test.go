//go:build integration

package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dockercontainer "github.com/moby/moby/api/types/container"
	dockermount "github.com/moby/moby/api/types/mount"
	dockernet "github.com/moby/moby/api/types/network"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	tcexec "github.com/testcontainers/testcontainers-go/exec"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Container ports and the network aliases other containers use.
const (
	natsPort     = "4222/tcp"
	redisPort    = "6379/tcp"
	daprPort     = "3500/tcp"
	daprGRPCPort = "50001/tcp"

	natsAlias  = "nats"
	redisAlias = "redis"
	daprAlias  = "daprd"

	// natsStoreDir is NATS's JetStream store directory in its container.
	natsStoreDir = "/data"

	// appID is daprd's --app-id: Redis keys are "<appID>||<key>".
	appID = "cartworker"
	// redisDB is the component's redisDB, as upstream.
	redisDB = "2"
)

// cartstoreComponent is the Dapr component `make run` and compose mount
// (state.redis, DB redisDB, store-wide TTL of 10 h, as upstream), so the
// suite runs against what ships. It reaches Redis as redisAlias:6379.
const cartstoreComponent = "../deployments/dapr/components/cartstore.yaml"

const startupTimeout = 60 * time.Second

// stackOptions says what a stack runs besides its network, Redis and daprd.
type stackOptions struct {
	// nats also starts a NATS JetStream server.
	nats bool
	// daprToken, when set, makes daprd require it (DAPR_API_TOKEN).
	daprToken string
	// daprHostPort, when set, publishes daprd's HTTP port on this fixed
	// loopback port, so that the worker keeps its endpoint across a daprd
	// stop and start.
	daprHostPort int
	// daprGRPCHostPort does the same for daprd's gRPC port.
	daprGRPCHostPort int
	// natsHostPort, when set, publishes NATS's client port on this fixed
	// loopback port, so that clients reconnect to the same address after
	// the container is killed and started again.
	natsHostPort int
	// natsStoreVolume keeps NATS's JetStream store (-sd /data) in a volume
	// of its own, removed with the container, rather than in the
	// container's layer: what a restarted server recovers is what a real
	// deployment's persistent volume would hold.
	natsStoreVolume bool
}

// stack is one network with its containers. Every host port is published
// on 127.0.0.1 only, on a random port unless fixed.
type stack struct {
	name    string
	network *testcontainers.DockerNetwork
	nats    *testcontainers.DockerContainer
	redis   *testcontainers.DockerContainer
	daprd   *testcontainers.DockerContainer

	// NATSURL is empty when the stack has no NATS.
	NATSURL string
	DaprURL string
	// DaprGRPCAddr is host:port of daprd's gRPC API on the loopback.
	DaprGRPCAddr string
	DaprToken    string

	mu      sync.Mutex
	closers []func(context.Context) error
	named   []namedContainer
}

type namedContainer struct {
	role string
	ctr  *testcontainers.DockerContainer
}

// newTestStack starts a stack owned by t: it is removed in t's cleanup, and
// its containers' last log lines are logged first if t failed.
func newTestStack(t *testing.T, opts stackOptions) *stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	st, err := startStack(ctx, strings.ToLower(shortName(t.Name())), opts)
	require.NoError(t, err, "start the test's own containers")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := st.close(ctx); err != nil {
			t.Errorf("remove %s containers: %v", st.name, err)
		}
	})
	st.logOnFailure(t)
	return st
}

// startStack creates the network, then NATS (if asked), Redis and daprd.
// On error everything already created is removed.
func startStack(ctx context.Context, name string, opts stackOptions) (st *stack, err error) {
	st = &stack{name: name, DaprToken: opts.daprToken}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err = errors.Join(err, st.close(cctx))
			st = nil
		}
	}()

	nw, err := tcnetwork.New(ctx, tcnetwork.WithLabels(map[string]string{"cartworker.it.suite": suiteID}))
	if nw != nil {
		st.addCloser(func(ctx context.Context) error { return nw.Remove(ctx) })
	}
	if err != nil {
		return st, fmt.Errorf("network: %w", err)
	}
	st.network = nw

	if opts.nats {
		natsOpts := []testcontainers.ContainerCustomizer{
			tcnetwork.WithNetwork([]string{natsAlias}, nw),
			testcontainers.WithCmd("-js", "-sd", natsStoreDir, "-m", "8222"),
			publishOnLoopback(natsPort, opts.natsHostPort),
			testcontainers.WithWaitStrategyAndDeadline(startupTimeout,
				wait.ForLog("Server is ready"),
				wait.ForListeningPort(natsPort).SkipInternalCheck()),
		}
		if opts.natsStoreVolume {
			natsOpts = append(natsOpts, withVolume(natsStoreDir))
		}
		if st.nats, err = st.run(ctx, "nats", natsImage, natsOpts...); err != nil {
			return st, err
		}
		if st.NATSURL, err = st.nats.PortEndpoint(ctx, natsPort, "nats"); err != nil {
			return st, err
		}
	}

	if st.redis, err = st.run(ctx, "redis", redisImage,
		tcnetwork.WithNetwork([]string{redisAlias}, nw),
		testcontainers.WithCmd("redis-server", "--save", "", "--appendonly", "no"),
		publishOnLoopback(redisPort, 0),
		testcontainers.WithWaitStrategyAndDeadline(startupTimeout,
			wait.ForLog("Ready to accept connections"),
			wait.ForListeningPort(redisPort).SkipInternalCheck()),
	); err != nil {
		return st, err
	}

	env := map[string]string{}
	if opts.daprToken != "" {
		env["DAPR_API_TOKEN"] = opts.daprToken
	}
	if st.daprd, err = st.run(ctx, "daprd", daprdImage,
		tcnetwork.WithNetwork([]string{daprAlias}, nw),
		testcontainers.WithCmd("./daprd", "--app-id", appID, "--dapr-http-port", "3500",
			"--dapr-grpc-port", "50001", "--resources-path", "/components", "--log-level", "info"),
		testcontainers.WithEnv(env),
		testcontainers.WithFiles(testcontainers.ContainerFile{
			HostFilePath:      cartstoreComponent,
			ContainerFilePath: "/components/cartstore.yaml",
			FileMode:          0o644, // daprd runs as uid 65532
		}),
		publishOnLoopback(daprPort, opts.daprHostPort),
		// The gRPC API, the worker's default transport: on a fixed port
		// too when the HTTP one is, so that it survives a restart.
		publishOnLoopback(daprGRPCPort, opts.daprGRPCHostPort),
		testcontainers.WithWaitStrategyAndDeadline(startupTimeout, daprHealthy(),
			wait.ForListeningPort(daprGRPCPort).SkipInternalCheck()),
	); err != nil {
		return st, err
	}
	if st.DaprURL, err = st.daprd.PortEndpoint(ctx, daprPort, "http"); err != nil {
		return st, err
	}
	if st.DaprGRPCAddr, err = st.daprd.PortEndpoint(ctx, daprGRPCPort, ""); err != nil {
		return st, err
	}
	return st, nil
}

// daprHealthy waits for GET /v1.0/healthz to answer 204, which daprd does
// once its components are loaded. It is also checked on every restart.
func daprHealthy() wait.Strategy {
	return wait.ForHTTP("/v1.0/healthz").
		WithPort(daprPort).
		WithStatusCodeMatcher(func(status int) bool { return status == 204 }).
		WithPollInterval(100 * time.Millisecond)
}

// run starts one container of the stack under a unique name and registers
// its removal, even when starting failed half way.
func (st *stack) run(ctx context.Context, role, image string, opts ...testcontainers.ContainerCustomizer) (*testcontainers.DockerContainer, error) {
	name := fmt.Sprintf("cwit-%s-%s-%s-%s", suiteID, st.name, role, randomHex(2))
	opts = append([]testcontainers.ContainerCustomizer{
		testcontainers.WithName(name),
		testcontainers.WithLabels(map[string]string{"cartworker.it.suite": suiteID}),
	}, opts...)
	c, err := testcontainers.Run(ctx, image, opts...)
	if c != nil {
		st.addCloser(func(ctx context.Context) error {
			return c.Terminate(ctx, testcontainers.StopTimeout(5*time.Second))
		})
		st.mu.Lock()
		st.named = append(st.named, namedContainer{role: role, ctr: c})
		st.mu.Unlock()
	}
	if err != nil {
		return nil, fmt.Errorf("%s container %s (%s): %w", role, name, image, err)
	}
	return c, nil
}

func (st *stack) addCloser(f func(context.Context) error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closers = append(st.closers, f)
}

// close removes the containers, then the network, newest first.
func (st *stack) close(ctx context.Context) error {
	st.mu.Lock()
	closers := st.closers
	st.closers = nil
	st.mu.Unlock()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		errs = append(errs, closers[i](ctx))
	}
	return errors.Join(errs...)
}

// logOnFailure logs the last lines of every container of st when t fails.
func (st *stack) logOnFailure(t testing.TB) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		st.mu.Lock()
		named := append([]namedContainer(nil), st.named...)
		st.mu.Unlock()
		for _, n := range named {
			t.Logf("--- last log lines of %s/%s ---\n%s", st.name, n.role, containerTail(n.ctr, 40))
		}
	})
}

// containerTail returns the last n lines of a container's output.
func containerTail(c *testcontainers.DockerContainer, n int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := c.Logs(ctx)
	if err != nil {
		return fmt.Sprintf("(logs unavailable: %v)", err)
	}
	defer rc.Close()
	return tailLines(rc, n)
}

func tailLines(r io.Reader, n int) string {
	var lines []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// publishOnLoopback exposes port on 127.0.0.1 only: on hostPort, or on a
// random free port when hostPort is 0.
func publishOnLoopback(port string, hostPort int) testcontainers.CustomizeRequestOption {
	return func(req *testcontainers.GenericContainerRequest) error {
		p, err := dockernet.ParsePort(port)
		if err != nil {
			return err
		}
		req.ExposedPorts = append(req.ExposedPorts, port)
		prev := req.HostConfigModifier
		req.HostConfigModifier = func(hc *dockercontainer.HostConfig) {
			if prev != nil {
				prev(hc)
			}
			if hc.PortBindings == nil {
				hc.PortBindings = dockernet.PortMap{}
			}
			hp := ""
			if hostPort != 0 {
				hp = strconv.Itoa(hostPort)
			}
			hc.PortBindings[p] = []dockernet.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: hp}}
		}
		return nil
	}
}

// withVolume mounts a new anonymous volume at target: it outlives the
// container's restarts and is removed with the container.
func withVolume(target string) testcontainers.CustomizeRequestOption {
	return func(req *testcontainers.GenericContainerRequest) error {
		prev := req.HostConfigModifier
		req.HostConfigModifier = func(hc *dockercontainer.HostConfig) {
			if prev != nil {
				prev(hc)
			}
			hc.Mounts = append(hc.Mounts, dockermount.Mount{Type: dockermount.TypeVolume, Target: target})
		}
		return nil
	}
}

// freePort returns a loopback TCP port that was free a moment ago. It comes
// from just below the kernel's ephemeral range: Docker draws the random host
// ports it publishes from that range, so a port picked inside it could be
// given to another container before the test binds it ("port is already
// allocated").
func freePort(t *testing.T) int {
	t.Helper()
	low := ephemeralLow()
	if low > 11024 {
		for range 200 {
			port := low - 1 - rand.IntN(10000)
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				continue
			}
			require.NoError(t, ln.Close())
			return port
		}
	}
	// An unusual range: take what the kernel gives.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// ephemeralLow is the first port of the kernel's ephemeral range, Linux's
// default when it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return low
}

// redisCLI runs redis-cli in the stack's Redis container against the
// component's database and returns its trimmed output.
func (st *stack) redisCLI(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	cmd := append([]string{"redis-cli", "-n", redisDB, "--raw"}, args...)
	code, out, err := st.redis.Exec(ctx, cmd, tcexec.Multiplexed())
	require.NoError(t, err, "redis-cli %v", args)
	b, err := io.ReadAll(out)
	require.NoError(t, err)
	require.Zero(t, code, "redis-cli %v: %s", args, b)
	return strings.TrimSpace(string(b))
}

// redisKey is the Redis key Dapr stores a state key under.
func redisKey(key string) string { return appID + "||" + key }

// shortName turns a test name into a container-name-friendly token.
func shortName(testName string) string {
	s := strings.TrimPrefix(testName, "Test")
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	out := b.String()
	if len(out) > 20 {
		out = out[:20]
	}
	return out
}
