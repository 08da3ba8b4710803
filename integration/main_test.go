//go:build integration

// Package integration runs cartworker against real NATS JetStream, Redis and
// daprd containers (testcontainers-go), both in-process through app.Run and
// as worker processes built from ./cmd/worker.
//
// Run it with
//
//	TESTCONTAINERS_RYUK_DISABLED=true TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1 \
//	  go test -tags integration -count=1 -timeout 20m -v ./integration/...
//
// Images are never pulled: NATS_IMAGE, REDIS_IMAGE, DAPRD_IMAGE and
// WORKER_IMAGE must exist locally (`make images`). Ryuk is disabled, so every
// container and network is removed by t.Cleanup or by TestMain's teardown.
// Tests that run workers share the durable consumers and must stay
// sequential: none of them calls t.Parallel.
package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"

	"github.com/cartworker/cartworker/deployments"
)

// Images, from the environment like the scripts', else the defaults in
// deployments/images.env; set by TestMain.
var natsImage, redisImage, daprdImage, workerImage string

var (
	// suiteID makes this run's container names unique next to other runs
	// and other tools using the same Docker daemon.
	suiteID = randomHex(3)
	// workerBin is ./cmd/worker built once by TestMain.
	workerBin string
)

// shared is the suite-wide stack (network, NATS, Redis, daprd), started on
// first use and torn down by TestMain.
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

	if err := setImages(); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := checkImages(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "cartworker-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if workerBin, err = buildWorker(ctx, dir); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}

	code := m.Run()

	if shared.stack != nil {
		tctx, tcancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer tcancel()
		if err := shared.stack.close(tctx); err != nil {
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
		shared.stack, shared.err = startStack(ctx, "shared", stackOptions{nats: true})
	})
	require.NoError(t, shared.err, "shared stack")
	shared.stack.logOnFailure(t)
	return shared.stack
}

// setImages sets the image names from the environment or images.env.
func setImages() error {
	defaults, err := deployments.Images()
	if err != nil {
		return err
	}
	for _, img := range []struct {
		name string
		dst  *string
	}{{"NATS_IMAGE", &natsImage}, {"REDIS_IMAGE", &redisImage}, {"DAPRD_IMAGE", &daprdImage}, {"WORKER_IMAGE", &workerImage}} {
		if *img.dst = envOr(img.name, defaults[img.name]); *img.dst == "" {
			return fmt.Errorf("%s: not set and not in deployments/images.env", img.name)
		}
	}
	return nil
}

// checkImages fails with a clear message when an image is missing, rather
// than letting testcontainers try a registry this machine does not have.
func checkImages(ctx context.Context) error {
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("docker client (is dockerd running? scripts/ensure-docker.sh): %w", err)
	}
	defer cli.Close()
	var missing []error
	for _, img := range []string{natsImage, redisImage, daprdImage, workerImage} {
		if _, err := cli.ImageInspect(ctx, img); err != nil {
			if cerrdefs.IsNotFound(err) {
				missing = append(missing, fmt.Errorf("image %s is missing: run make images", img))
				continue
			}
			missing = append(missing, fmt.Errorf("inspect image %s: %w", img, err))
		}
	}
	return errors.Join(missing...)
}

// buildWorker compiles ./cmd/worker into dir.
func buildWorker(ctx context.Context, dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("build the worker: %w", err)
	}
	out := filepath.Join(dir, "worker")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "github.com/cartworker/cartworker/cmd/worker")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/worker: %v\n%s", err, b)
	}
	return out, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
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
