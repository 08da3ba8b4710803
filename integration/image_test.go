//go:build integration

package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// The worker image's user, "nonroot" in distroless
// (deployments/images/worker/Dockerfile): the Kubernetes manifests set the
// same runAsUser and runAsGroup, which deployments/kube_test.go checks
// against the Dockerfile; this checks the built image.
const (
	workerUID = 65532
	workerGID = 65532
)

// requireRunsAs checks that container c runs as uid:gid: its configured
// user, and when the Docker daemon shares this machine's /proc (as here),
// the real, effective, saved and filesystem ids of its process. The image
// has no shell nor id(1) to ask.
func requireRunsAs(ctx context.Context, t *testing.T, c testcontainers.Container, uid, gid int) {
	t.Helper()
	info, err := c.Inspect(ctx)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("%d:%d", uid, gid), info.Config.User,
		"the image's USER (numeric, so that runAsNonRoot can check it)")
	require.NotNil(t, info.State)
	pid := info.State.Pid
	require.Positive(t, pid, "the container's process")
	// A daemon elsewhere (a VM, a remote host) has its own process ids:
	// /proc/<pid> here would be another process, or none.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || string(cmdline) != "/worker\x00" {
		t.Logf("process %d is not on this machine's /proc (%v); checked the configured user only", pid, err)
		return
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	ids := map[string]string{}
	for _, line := range strings.Split(string(status), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && (k == "Uid" || k == "Gid") {
			ids[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	all := func(id int) string { return strings.TrimSpace(strings.Repeat(strconv.Itoa(id)+" ", 4)) }
	require.Equal(t, all(uid), ids["Uid"], "uid of /worker: real, effective, saved, filesystem")
	require.Equal(t, all(gid), ids["Gid"], "gid of /worker: real, effective, saved, filesystem")
}

// TestWorkerImage runs WORKER_IMAGE next to the shared containers, reaching
// NATS and daprd by their network aliases as in docker compose, and checks
// that it serves /readyz, runs as the non-root user the Kubernetes
// manifests expect, and applies a command.
func TestWorkerImage(t *testing.T) {
	ctx := testkit.Context(t, 2*time.Minute)
	st := sharedStack(t)
	b := connectBus(ctx, t, st.NATSURL)

	name := fmt.Sprintf("cwit-%s-image-worker-%s", suiteID, randomHex(2))
	c, err := testcontainers.Run(ctx, workerImage,
		testcontainers.WithName(name),
		testcontainers.WithLabels(map[string]string{"cartworker.it.suite": suiteID}),
		tcnetwork.WithNetwork([]string{"worker"}, st.network),
		testcontainers.WithEnv(map[string]string{
			"NATS_URL":           "nats://" + natsAlias + ":4222",
			"DAPR_HTTP_ENDPOINT": "http://" + daprAlias + ":3500",
			"DAPR_GRPC_ENDPOINT": "http://" + daprAlias + ":50001",
			"WORKER_HTTP_ADDR":   ":8080",
			"LOG_FORMAT":         "text",
		}),
		publishOnLoopback("8080/tcp", 0),
		testcontainers.WithWaitStrategyAndDeadline(startupTimeout,
			wait.ForHTTP("/readyz").WithPort("8080/tcp").WithPollInterval(100*time.Millisecond)),
	)
	if c != nil {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("--- last log lines of %s ---\n%s", name, containerTail(c, 40))
			}
			tctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			require.NoError(t, c.Terminate(tctx, testcontainers.StopTimeout(10*time.Second)))
		})
	}
	require.NoError(t, err, "worker container")
	requireRunsAs(ctx, t, c, workerUID, workerGID)
	b.waitConsumer(ctx, t)

	cart := newCartIDs("img", 1)[0]
	cacheCarts(ctx, t, b, []string{cart})
	ev, err := b.pub.PublishAndWait(ctx, publisher.AddItemCommand(cart,
		command.Item{ItemCode: "IMG", Quantity: 3, UnitPrice: money.FromInt(333), TaxCode: "11"}))
	require.NoError(t, err)
	require.Equal(t, command.OutcomeApplied, ev.Outcome)
	d, _ := readCart(ctx, t, st, cart)
	require.Equal(t, 1078.0, d.Sales.TotalAmountWithTax, "999 + floor(79.92)")

	endpoint, err := c.PortEndpoint(ctx, "8080/tcp", "http")
	require.NoError(t, err)
	resp, err := httpClient.Get(endpoint + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	// SIGTERM (docker stop) ends the worker cleanly.
	stop := 10 * time.Second
	require.NoError(t, c.Stop(ctx, &stop))
	state, err := c.State(ctx)
	require.NoError(t, err)
	require.Zero(t, state.ExitCode, "worker container exit code")
}
