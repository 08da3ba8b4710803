//go:build integration

package cartworkertest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// These run against Docker and the images of `make images`, like the
// integration suite:
//
//	TESTCONTAINERS_RYUK_DISABLED=true TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1 \
//	  go test -tags integration ./cartworkertest/

// run starts a stack that t's cleanup terminates. Its Publisher waits
// long enough for a killed worker's leases to expire.
func run(t *testing.T, opts ...Option) *Stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	opts = append([]Option{WithPublisherOptions(publisher.WithWaitTimeout(time.Minute))}, opts...)
	st, err := Run(ctx, opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		require.NoError(t, st.Terminate(ctx))
	})
	return st
}

// requireCart publishes a cart of one line through pub and checks its
// totals through daprd: 2 × 120 at tax code 01 (10 % external) is 264.
func requireCart(ctx context.Context, t *testing.T, st *Stack, pub *publisher.Publisher) string {
	t.Helper()
	id := "c-" + randomHex(4)
	_, err := pub.PublishAndWait(ctx, publisher.CacheCommand(id, publisher.NewCart{TenantID: "T1", StoreCode: "S1", TerminalNo: 1}))
	require.NoError(t, err)
	ev, err := pub.PublishAndWait(ctx, publisher.AddItemCommand(id,
		command.Item{ItemCode: "A", Quantity: 2, UnitPrice: money.FromInt(120), TaxCode: "01"}))
	require.NoError(t, err)
	require.Equal(t, command.OutcomeApplied, ev.Outcome)
	c, err := st.Cart(ctx, id)
	require.NoError(t, err)
	require.Equal(t, money.FromInt(264), c.Sales.TotalAmountWithTax)
	require.Equal(t, money.FromInt(240), c.SubtotalAmount)
	require.Len(t, c.LineItems, 1)
	require.Equal(t, 2, c.Sales.TotalQuantity)
	return id
}

func TestInProcessStack(t *testing.T) {
	ctx := t.Context()
	start := time.Now()
	st := run(t, WithWorkers(2), WithDaprToken("t-"+randomHex(4)))
	t.Logf("two in-process workers ready in %s", time.Since(start).Round(time.Millisecond))
	require.Len(t, st.Workers(), 2)
	id := requireCart(ctx, t, st, st.Publisher())

	_, err := st.Cart(ctx, "never-"+id)
	require.ErrorIs(t, err, ErrCartNotFound)

	// A malformed command is dead-lettered with its code.
	m := nats.NewMsg("cart.cmd." + id + ".add-item")
	m.Data = []byte(`{"id":`)
	m.Header.Set(command.HeaderMsgID, "bad-"+id)
	_, err = st.JetStream().PublishMsg(ctx, m)
	require.NoError(t, err)
	require.NoError(t, poll(ctx, 30*time.Second, "the dead letter", func() error {
		dls, err := st.DeadLetters(ctx)
		if err != nil {
			return err
		}
		if len(dls) != 1 {
			return fmt.Errorf("%d dead letters", len(dls))
		}
		return nil
	}))
	dls, err := st.DeadLetters(ctx)
	require.NoError(t, err)
	require.Equal(t, command.CodeMalformedJSON, dls[0].Code)
	require.Equal(t, `{"id":`, string(dls[0].Data))
	require.Equal(t, 1, dls[0].Deliveries)

	// A second Terminate does nothing; the cleanup's is the third.
	require.NoError(t, st.Terminate(ctx))
	require.NoError(t, st.Terminate(ctx))
	for _, w := range st.Workers() {
		require.True(t, w.Exited())
		require.NoError(t, w.Err())
	}
	_, err = st.AddWorker(ctx)
	require.ErrorContains(t, err, "terminated")
}

// KillWorker of an in-process worker: it stops at once, and another worker
// takes its partitions once their leases expire and applies what follows.
func TestKillInProcessWorker(t *testing.T) {
	ctx := t.Context()
	st := run(t, WithWorkers(2))
	require.NoError(t, st.KillWorker(ctx, 0))
	code, err := st.Worker(0).Wait(ctx)
	require.NoError(t, err)
	require.Zero(t, code, "a killed in-process worker reports no failure")
	require.Contains(t, st.Worker(0).Logs(), "aborted")
	requireCart(ctx, t, st, st.Publisher())
	require.NoError(t, st.StopWorker(ctx, 1))
	require.ErrorContains(t, st.StopWorker(ctx, 2), "no worker 2")
}

func TestBinaryWorkers(t *testing.T) {
	ctx := t.Context()
	bin, err := BuildWorker(ctx, t.TempDir())
	require.NoError(t, err)
	st := run(t, WithWorkerBinary(bin), WithWorkers(2))
	requireCart(ctx, t, st, st.Publisher())

	require.NoError(t, st.KillWorker(ctx, 0))
	code, err := st.Worker(0).Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, -1, code, "SIGKILL leaves no exit code")

	w := st.Worker(1)
	require.NoError(t, w.Signal(ctx, syscall.SIGSTOP))
	require.NoError(t, st.StopWorker(ctx, 1), "Stop thaws a frozen process")
	code, err = w.Wait(ctx)
	require.NoError(t, err)
	require.Zero(t, code)

	// Another, added later, with settings of its own.
	w, err = st.AddWorker(ctx, WorkerName("late"), WorkerEnv(map[string]string{"WORKER_CONCURRENCY": "2"}))
	require.NoError(t, err)
	require.Contains(t, w.Logs(), "concurrency=2")
	requireCart(ctx, t, st, st.Publisher())
}

func TestContainerWorkers(t *testing.T) {
	ctx := t.Context()
	img, err := Image(WorkerImageVar)
	require.NoError(t, err)
	start := time.Now()
	st := run(t, WithWorkerImage(img), WithWorkers(3))
	t.Logf("three container workers ready in %s", time.Since(start).Round(time.Millisecond))
	requireCart(ctx, t, st, st.Publisher())
	require.NoError(t, st.KillWorker(ctx, 2))
	code, err := st.Worker(2).Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 137, code, "SIGKILL")
	require.NoError(t, st.StopWorker(ctx, 1))
	code, err = st.Worker(1).Wait(ctx)
	require.NoError(t, err)
	require.Zero(t, code)
	require.ErrorContains(t, (&Worker{name: "x"}).Signal(ctx, syscall.SIGTERM), "cannot be signalled")
}

// The faults keep every endpoint: after RestartNATS, PauseDaprd and
// StopDaprd the same publisher and worker carry on.
func TestFaultsKeepEndpoints(t *testing.T) {
	ctx := t.Context()
	st := run(t)
	id := requireCart(ctx, t, st, st.Publisher())
	url := st.NATSURL()

	require.NoError(t, st.RestartNATS(ctx))
	require.Equal(t, url, st.NATSURL())
	requireCart(ctx, t, st, st.Publisher())
	_, err := st.Cart(ctx, id)
	require.NoError(t, err, "carts live in Redis, not NATS")

	require.NoError(t, st.PauseDaprd(ctx))
	require.NoError(t, st.UnpauseDaprd(ctx))
	require.NoError(t, st.UnpauseDaprd(ctx), "a second unpause does nothing")

	require.NoError(t, st.StopDaprd(ctx))
	_, err = st.Cart(ctx, id)
	require.Error(t, err)
	require.NoError(t, st.StartDaprd(ctx))
	requireCart(ctx, t, st, st.Publisher())

	// Terminate thaws a paused daprd before it removes it.
	require.NoError(t, st.PauseDaprd(ctx))
}

func TestMissingImageNamesIt(t *testing.T) {
	t.Setenv(NATSImageVar, "cartworkertest.invalid/missing:none")
	_, err := Run(t.Context())
	require.ErrorContains(t, err, "cartworkertest.invalid/missing:none")
	require.ErrorContains(t, err, "make images")
}

func TestWorkerNeverReadySaysWhy(t *testing.T) {
	_, err := Run(t.Context(), WithStartupTimeout(5*time.Second),
		WithWorkerEnv(map[string]string{"CART_STATE_STORE": "nosuchstore"}))
	require.ErrorContains(t, err, "not ready within 5s")
	require.ErrorContains(t, err, "/readyz: 503 ")
	require.ErrorContains(t, err, "CART_STATE_STORE")
	require.ErrorContains(t, err, "its last log lines")
}

// Stacks side by side, one per parallel subtest.
func TestParallelStacks(t *testing.T) {
	for i := range 2 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			st := run(t)
			requireCart(t.Context(), t, st, st.Publisher())
		})
	}
}

// TestTimeToReady measures Run with one in-process worker
// CARTWORKERTEST_READY_RUNS times (default 1) and logs the median and the
// spread: the figure in the package doc.
func TestTimeToReady(t *testing.T) {
	runs := 1
	if v := os.Getenv("CARTWORKERTEST_READY_RUNS"); v != "" {
		var err error
		runs, err = strconv.Atoi(v)
		require.NoError(t, err)
	}
	var took []time.Duration
	for range runs {
		start := time.Now()
		st, err := Run(t.Context())
		took = append(took, time.Since(start))
		require.NoError(t, err)
		require.NoError(t, st.Terminate(t.Context()))
	}
	slices.Sort(took)
	t.Logf("one in-process worker ready in %s (median of %d; %s to %s)",
		took[len(took)/2].Round(10*time.Millisecond), runs, took[0].Round(10*time.Millisecond), took[len(took)-1].Round(10*time.Millisecond))
}
