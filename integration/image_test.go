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

	"github.com/cartworker/cartworker/cartworkertest"
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

// TestWorkerImage runs WORKER_IMAGE on a stack of its own
// (cartworkertest.WithWorkerImage), reaching NATS and daprd by their
// network aliases as in docker compose, and checks that it serves /readyz,
// runs as the non-root user the Kubernetes manifests expect, and applies a
// command.
func TestWorkerImage(t *testing.T) {
	ctx := testkit.Context(t, 2*time.Minute)
	img, err := cartworkertest.Image(cartworkertest.WorkerImageVar)
	require.NoError(t, err)
	st := newTestStack(t, cartworkertest.WithWorkerImage(img), cartworkertest.WithWorkers(1))
	w := st.Worker(0)
	// The worker made the streams and serves /readyz (Run waited for it):
	// join them as they are.
	b := joinBus(t, st.NATSURL())
	requireRunsAs(ctx, t, w.Container(), workerUID, workerGID)
	b.waitConsumer(ctx, t)

	cart := newCartIDs("img", 1)[0]
	cacheCarts(ctx, t, b, []string{cart})
	ev, err := b.pub.PublishAndWait(ctx, publisher.AddItemCommand(cart,
		command.Item{ItemCode: "IMG", Quantity: 3, UnitPrice: money.FromInt(333), TaxCode: "11"}))
	require.NoError(t, err)
	require.Equal(t, command.OutcomeApplied, ev.Outcome)
	d := readCart(ctx, t, st, cart)
	require.Equal(t, money.FromInt(1078), d.Sales.TotalAmountWithTax, "999 + floor(79.92)")

	resp, err := httpClient.Get(w.MetricsURL())
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	// SIGTERM (docker stop) ends the worker cleanly.
	require.NoError(t, st.StopWorker(ctx, 0))
	code, err := w.Wait(ctx)
	require.NoError(t, err)
	require.Zero(t, code, "worker container exit code")
}
