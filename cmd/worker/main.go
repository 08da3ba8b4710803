// Command worker is cartworker: it pulls cart commands from NATS JetStream
// and applies them to carts in a Dapr state store through one pooled,
// circuit-broken state client (daprd's gRPC API by default, or its HTTP
// API). Run it with -h for every setting.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/cartworker/cartworker/internal/app"
	"github.com/cartworker/cartworker/internal/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "cartworker:", err)
		os.Exit(1)
	}
}

// runtimeMemory is what the worker's process needs beyond what
// WORKER_MAX_HELD_BYTES bounds: the Go runtime, the NATS, gRPC and HTTP
// clients' buffers, the metrics, and the garbage between collections.
// Measured with `make bench-memory` (README, "Memory").
const runtimeMemory = 12 << 20

// tuneGC trades memory the worker has to spare for CPU it has not, unless
// the operator set GOGC or GOMEMLIMIT. The live heap is a few MiB, so the
// default GOGC=100 collects after every few hundred commands; at 400 the
// collector's share of CPU drops by about three quarters. The soft limit,
// runtimeMemory above what the worker may hold (heldBytes), makes it
// collect sooner when a backlog fills what it holds, so that memory stays
// within the budget the README gives rather than five times the live heap.
func tuneGC(getenv func(string) string, heldBytes int) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(int64(heldBytes) + runtimeMemory)
	}
}

// run loads the configuration and runs the worker until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.Load(args, getenv, stderr)
	if err != nil {
		return err
	}
	tuneGC(getenv, cfg.MaxHeldBytes)
	return app.Run(ctx, cfg, app.NewLogger(cfg, stderr))
}
