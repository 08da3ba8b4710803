//go:build integration

// Package integration runs cartworker against real NATS JetStream, Redis and
// daprd containers, with workers in-process (through internal/app), as
// processes of ./cmd/worker and as containers of the worker image. Every
// stack is made by package cartworkertest, which users' tests use too:
// what this suite needs and cartworkertest cannot express is a gap in
// cartworkertest. The few test-only customizers that remain are marked so.
//
// Run it with
//
//	TESTCONTAINERS_RYUK_DISABLED=true TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1 \
//	  go test -tags integration -count=1 -timeout 20m -v ./integration/...
//
// Images are NATS_IMAGE, REDIS_IMAGE, DAPRD_IMAGE and WORKER_IMAGE, else
// deployments/images.env; `make images` builds them. Ryuk is disabled, so
// every container and network is removed by t.Cleanup or by TestMain's
// teardown. Tests that run workers share the durable consumers and must
// stay sequential: none of them calls t.Parallel.
package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/cartworkertest"
)

// workerBin is ./cmd/worker built once by TestMain.
var workerBin string

// shared is the suite-wide stack (NATS, Redis, daprd, no worker), started
// on first use and terminated by TestMain.
var shared struct {
	once  sync.Once
	stack *stack
	err   error
}

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	// The Makefile sets these; a hand run may not. testcontainers reads them
	// on first use, which is after this point.
	setenvDefault("TESTCONTAINERS_RYUK_DISABLED", "true")
	setenvDefault("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "cartworker-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if workerBin, err = cartworkertest.BuildWorker(ctx, dir); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}

	code := m.Run()

	if shared.stack != nil {
		tctx, tcancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer tcancel()
		if err := shared.stack.Terminate(tctx); err != nil {
			fmt.Fprintln(os.Stderr, "integration: teardown of the shared stack:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// sharedStack returns the suite-wide stack, starting it on first use, and
// logs its containers' last lines if t fails.
func sharedStack(t testing.TB) *stack {
	t.Helper()
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var st *cartworkertest.Stack
		st, shared.err = cartworkertest.Run(ctx, cartworkertest.WithWorkers(0))
		if shared.err == nil {
			shared.stack = &stack{Stack: st, name: "shared"}
		}
	})
	require.NoError(t, shared.err, "shared stack")
	shared.stack.logOnFailure(t)
	return shared.stack
}

func setenvDefault(key, value string) {
	if os.Getenv(key) == "" {
		_ = os.Setenv(key, value)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// poll calls check until it returns nil, every interval, for at most
// timeout (or until ctx ends), and fails t with check's last error.
func poll(ctx context.Context, t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	if err := pollErr(ctx, timeout, 50*time.Millisecond, check); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// pollErr is poll's loop: nil once check passes, else its last error.
func pollErr(ctx context.Context, timeout, interval time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after %s: %w", timeout, err)
		case <-tick.C:
		}
	}
}
