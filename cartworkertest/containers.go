package cartworkertest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	dockercontainer "github.com/moby/moby/api/types/container"
	dockermount "github.com/moby/moby/api/types/mount"
	dockernet "github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/cartworker/cartworker/deployments"
)

// Container ports, and the network aliases the containers reach each
// other by: the names the shipped component and Compose use.
const (
	natsPort     = "4222/tcp"
	redisPort    = "6379/tcp"
	daprPort     = "3500/tcp"
	daprGRPCPort = "50001/tcp"
	workerPort   = "8080/tcp"

	natsAlias  = "nats"
	redisAlias = "redis"
	daprAlias  = "daprd"

	// natsStoreDir is JetStream's store in the NATS container, a volume.
	natsStoreDir = "/data"
	// appID is daprd's --app-id, which the component is scoped to.
	appID = "cartworker"
	// logTail is how many of a container's last lines an error shows.
	logTail = 30
)

// labelKey marks every container and network of a stack with its id, so
// that leftovers of a killed test run can be found: docker ps -a --filter
// label=cartworkertest.stack.
const labelKey = "cartworkertest.stack"

// runContainer starts one container of the stack under a unique name. On
// failure it returns the container too, if one was created, so that the
// caller removes it, and an error naming the part, the container and the
// image, with the container's last log lines.
func (s *Stack) runContainer(ctx context.Context, role, image string, run func(context.Context, string, ...testcontainers.ContainerCustomizer) (testcontainers.Container, error), opts ...testcontainers.ContainerCustomizer) (testcontainers.Container, error) {
	name := fmt.Sprintf("cwt-%s-%s", s.id, role)
	opts = append([]testcontainers.ContainerCustomizer{
		testcontainers.WithName(name),
		testcontainers.WithLabels(map[string]string{labelKey: s.id}),
	}, opts...)
	c, err := run(ctx, image, opts...)
	if err != nil {
		return c, fmt.Errorf("cartworkertest: %s container %s (%s) did not start: %w%s", role, name, image, err, tailOf(c))
	}
	return c, nil
}

// runGeneric is testcontainers.Run as runContainer takes it.
func runGeneric(ctx context.Context, image string, opts ...testcontainers.ContainerCustomizer) (testcontainers.Container, error) {
	c, err := testcontainers.Run(ctx, image, opts...)
	if c == nil {
		return nil, err // no typed nil in the interface
	}
	return c, err
}

// runRedis is modules/redis's Run as runContainer takes it.
func runRedis(ctx context.Context, image string, opts ...testcontainers.ContainerCustomizer) (testcontainers.Container, error) {
	c, err := tcredis.Run(ctx, image, opts...)
	if c == nil {
		return nil, err
	}
	return c, err
}

// natsCustomizers run NATS as Compose does (JetStream with its store in a
// volume of its own, monitoring on 8222), its client port on a fixed
// loopback port so that RestartNATS keeps the address clients know.
//
// It is a generic container, not testcontainers-go's modules/nats (v0.40):
// that module replaces the command with "-DV -js" (debug and trace logging
// of every protocol message, no store directory, no monitoring), waits
// with a port check that needs a shell this repository's scratch image
// lacks, and publishes the routing port on every interface; overriding all
// three would leave nothing of it but the image name.
func natsCustomizers(nw *testcontainers.DockerNetwork, hostPort int, timeout time.Duration) []testcontainers.ContainerCustomizer {
	return []testcontainers.ContainerCustomizer{
		tcnetwork.WithNetwork([]string{natsAlias}, nw),
		testcontainers.WithCmd("-js", "-sd", natsStoreDir, "-m", "8222"),
		publishOnLoopback(natsPort, hostPort),
		withVolume(natsStoreDir),
		testcontainers.WithWaitStrategyAndDeadline(timeout,
			wait.ForLog("Server is ready"),
			wait.ForListeningPort(natsPort).SkipInternalCheck()),
	}
}

// redisCustomizers run Redis as Compose does: ephemeral, reached by the
// shipped component as redis:6379. It runs through testcontainers-go's
// modules/redis, with its wait replaced: the module checks the port from
// inside the container with cat, awk or nc, which the image `make images`
// builds (redis-server, redis-cli and a bare /bin/sh) lacks, so that check
// never passes there; the log line and the published port say the same.
func redisCustomizers(nw *testcontainers.DockerNetwork, timeout time.Duration) []testcontainers.ContainerCustomizer {
	return []testcontainers.ContainerCustomizer{
		tcnetwork.WithNetwork([]string{redisAlias}, nw),
		testcontainers.WithCmd("redis-server", "--save", "", "--appendonly", "no"),
		publishOnLoopback(redisPort, 0),
		testcontainers.WithWaitStrategyAndDeadline(timeout,
			wait.ForLog("Ready to accept connections"),
			wait.ForListeningPort(redisPort).SkipInternalCheck()),
	}
}

// daprdCustomizers run daprd as Compose does: the shipped cartstore
// component and tracing configuration (there is no testcontainers-go
// module for daprd). Both APIs are on fixed loopback ports, so that the
// workers keep their endpoints across StopDaprd and StartDaprd.
func daprdCustomizers(nw *testcontainers.DockerNetwork, token string, httpPort, grpcPort int, timeout time.Duration) []testcontainers.ContainerCustomizer {
	env := map[string]string{}
	if token != "" {
		env["DAPR_API_TOKEN"] = token
	}
	return []testcontainers.ContainerCustomizer{
		tcnetwork.WithNetwork([]string{daprAlias}, nw),
		testcontainers.WithCmd("./daprd", "--app-id", appID, "--dapr-http-port", "3500", "--dapr-grpc-port", "50001",
			"--resources-path", "/components", "--config", "/config/config.yaml", "--log-level", "info"),
		testcontainers.WithEnv(env),
		testcontainers.WithFiles(
			// daprd runs as uid 65532: world-readable.
			testcontainers.ContainerFile{Reader: bytes.NewReader(deployments.CartstoreComponent()), ContainerFilePath: "/components/cartstore.yaml", FileMode: 0o644},
			testcontainers.ContainerFile{Reader: bytes.NewReader(deployments.DaprConfig()), ContainerFilePath: "/config/config.yaml", FileMode: 0o644},
		),
		publishOnLoopback(daprPort, httpPort),
		publishOnLoopback(daprGRPCPort, grpcPort),
		// Also checked on every StartDaprd.
		testcontainers.WithWaitStrategyAndDeadline(timeout,
			wait.ForHTTP("/v1.0/healthz").WithPort(daprPort).
				WithStatusCodeMatcher(func(status int) bool { return status == 204 }).
				WithPollInterval(100*time.Millisecond),
			wait.ForListeningPort(daprGRPCPort).SkipInternalCheck()),
	}
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
		hp := ""
		if hostPort != 0 {
			hp = strconv.Itoa(hostPort)
		}
		return testcontainers.WithHostConfigModifier(func(hc *dockercontainer.HostConfig) {
			if hc.PortBindings == nil {
				hc.PortBindings = dockernet.PortMap{}
			}
			hc.PortBindings[p] = []dockernet.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: hp}}
		})(req)
	}
}

// withVolume mounts a new anonymous volume at target: it outlives the
// container's restarts, as a real deployment's persistent volume does, and
// is removed with the container.
func withVolume(target string) testcontainers.CustomizeRequestOption {
	return testcontainers.WithHostConfigModifier(func(hc *dockercontainer.HostConfig) {
		hc.Mounts = append(hc.Mounts, dockermount.Mount{Type: dockermount.TypeVolume, Target: target})
	})
}

// runOnFixedPorts starts a generic container whose host ports are fixed,
// with the customizers made for them, and has Terminate remove it. It
// picks the ports with FreePort: a port can be taken between the pick and
// Docker's bind, so a start that fails on "port is already allocated" is
// removed and made again on other ports, a few times.
func (s *Stack) runOnFixedPorts(ctx context.Context, role, image string, ports int, customizers func(ports []int) []testcontainers.ContainerCustomizer) (*testcontainers.DockerContainer, error) {
	const tries = 3
	var err error
	for range tries {
		picked := make([]int, ports)
		for i := range picked {
			if picked[i], err = FreePort(); err != nil {
				return nil, err
			}
		}
		var c testcontainers.Container
		c, err = s.runContainer(ctx, role, image, runGeneric, customizers(picked)...)
		if err != nil && isPortTaken(err) {
			if c != nil {
				_ = c.Terminate(ctx)
			}
			continue
		}
		if c == nil {
			return nil, err
		}
		s.addContainer(c)
		return c.(*testcontainers.DockerContainer), err
	}
	return nil, err
}

func isPortTaken(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "port is already allocated") || strings.Contains(msg, "address already in use")
}

// tailOf is "; last log lines:\n..." of c, or "" when it has none.
func tailOf(c testcontainers.Container) string {
	if c == nil {
		return ""
	}
	lines := containerTail(c, logTail)
	if lines == "" {
		return ""
	}
	return "; its last log lines:\n" + lines
}

// containerTail returns the last n lines of a container's output.
func containerTail(c testcontainers.Container, n int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := c.Logs(ctx)
	if err != nil {
		return fmt.Sprintf("(logs unavailable: %v)", err)
	}
	defer rc.Close()
	return tailLines(rc, n)
}

// tailLines returns the last n lines of r.
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

// FreePort returns a loopback TCP port that was free a moment ago, for
// something a test starts beside a stack. It comes from just below the
// kernel's ephemeral range: Docker draws the random host ports it
// publishes from that range, so a port picked inside it could be given to
// another container first.
func FreePort() (int, error) {
	low := ephemeralLow()
	if low > 11024 {
		for range 200 {
			port := low - 1 - rand.IntN(10000)
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				continue
			}
			return port, ln.Close()
		}
	}
	// An unusual range: take what the kernel gives.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("cartworkertest: no free loopback port: %w", err)
	}
	return ln.Addr().(*net.TCPAddr).Port, ln.Close()
}

// ephemeralLow is the first port of the kernel's ephemeral range, Linux's
// default when it cannot be read.
func ephemeralLow() int {
	const linuxDefault = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return linuxDefault
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return linuxDefault
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return linuxDefault
	}
	return low
}
