package app

import (
	"context"
	"log/slog"
	"net"

	"github.com/nats-io/nats.go"

	"github.com/cartworker/cartworker/internal/statepool"
)

// Option changes how Run runs a worker that shares its process with its
// caller (package cartworkertest); cmd/worker passes none.
type Option func(*runOptions)

type runOptions struct {
	listener net.Listener
	abort    <-chan struct{}
}

// WithListener serves /healthz, /readyz and /metrics on ln instead of
// listening on WORKER_HTTP_ADDR, so that a caller can take a free port
// (127.0.0.1:0) and know it before Run starts. Run closes ln.
func WithListener(ln net.Listener) Option {
	return func(o *runOptions) { o.listener = ln }
}

// WithAbort ends Run, once abort is closed, the way a killed process ends
// as NATS and daprd see it rather than with the graceful drain of ctx: the
// NATS connection and the state client are closed at once, so nothing more
// is acknowledged, handed back (Nak) or published, the partition leases are
// not given back, and no new state call starts (gRPC calls in flight fail);
// then Run stops as if ctx had ended and returns once every goroutine it
// started has exited. What the worker held is redelivered after
// WORKER_ACK_WAIT and its partitions move when their leases expire, as
// after SIGKILL.
func WithAbort(abort <-chan struct{}) Option {
	return func(o *runOptions) { o.abort = abort }
}

// abortOn waits for abort or the end of ctx; on abort it cuts the worker
// off from NATS and daprd, then cancels its run. An abort closed just
// before ctx ends still wins, so that a caller may do both.
func abortOn(ctx context.Context, abort <-chan struct{}, nc *nats.Conn, state *statepool.Client, cancel context.CancelFunc, log *slog.Logger) {
	select {
	case <-abort:
	case <-ctx.Done():
		select {
		case <-abort:
		default:
			return
		}
	}
	log.Warn("aborted: NATS connection and state client closed without a drain")
	nc.Close()
	state.Close()
	cancel()
}
