//go:build integration

package integration

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/stretchr/testify/require"
)

// TestGracefulShutdownLosesNothing sends SIGTERM to the only worker
// mid-load: it finishes or hands back what it holds and exits 0 within
// WORKER_SHUTDOWN_TIMEOUT. A new process then finishes the rest well before
// JetStream's AckWait would have redelivered anything left unacknowledged,
// so nothing was stranded, lost or applied twice.
func TestGracefulShutdownLosesNothing(t *testing.T) {
	const (
		commands        = 400
		carts           = 20
		shutdownTimeout = 5 * time.Second
		ackWait         = 30 * time.Second
	)
	ctx := testkit.Context(t, 4*time.Minute)
	st := sharedStack(t)
	b := connectBus(ctx, t, st.NATSURL())
	env := func() map[string]string {
		return map[string]string{
			"WORKER_SHUTDOWN_TIMEOUT": shutdownTimeout.String(),
			"WORKER_ACK_WAIT":         ackWait.String(),
			"WORKER_CONCURRENCY":      "8",
			// One command per partition held, each applied alone: the
			// stop finds most of the load still in the stream.
			"WORKER_BUFFER":    "32",
			"WORKER_BATCH_MAX": "1",
			"LOG_LEVEL":        "warn",
		}
	}
	first := startProcess(t, st, "term-1", env())
	b.waitConsumer(ctx, t)

	cartIDs := newCartIDs("term", carts)
	cacheIDs := cacheCarts(ctx, t, b, cartIDs)
	base := b.events.appliedCount()
	plan := newLoad(cartIDs, commands)
	require.NoError(t, plan.publish(ctx, b, 8, nil), "publish the load")

	poll(ctx, t, time.Minute, "a third of the commands applied", func() error {
		if n := b.events.appliedCount() - base; n < commands/3 {
			return fmt.Errorf("%d applied", n)
		}
		return nil
	})
	first.signal(t, syscall.SIGTERM)
	code, took := first.waitExit(t, shutdownTimeout+10*time.Second)
	appliedAtExit := b.events.appliedCount() - base
	require.Zero(t, code, "exit code after SIGTERM; output:\n%s", first.logs.tail(20))
	require.LessOrEqual(t, took, shutdownTimeout+2*time.Second, "exit after SIGTERM")
	require.Less(t, appliedAtExit, commands, "the first worker was stopped mid-load")

	restart := time.Now()
	second := startProcess(t, st, "term-2", env())
	b.events.waitApplied(ctx, t, 2*ackWait, plan.byCart())
	finish := time.Since(restart)
	poll(ctx, t, time.Minute, "the consumer to settle", func() error { return b.consumerSettled(ctx) })
	plan.verify(ctx, t, st, cacheIDs)
	n, err := b.deadLetterCount(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "dead letters")
	requireNoPanic(t, first.worker, second.worker)
	m := second.metrics(t)
	duplicates := valueOr(m, "cartworker_commands_total", "outcome", "duplicate")
	t.Logf("SIGTERM after %d of %d applied: exit 0 in %s; the new process applied the remaining %d in %s (%.0f redeliveries, %.0f duplicates)",
		appliedAtExit, commands, took.Round(time.Millisecond), commands-appliedAtExit, finish.Round(time.Millisecond),
		m.get(t, "cartworker_redeliveries_total"), duplicates)
	// A duplicate here is a command the first worker applied but whose ack
	// never reached the server before the process exited.
	require.Zero(t, duplicates, "commands the stopped worker applied without its ack reaching NATS")
	require.Less(t, finish, ackWait-5*time.Second,
		"the remaining commands took about AckWait (%s): the stopped worker left some unacknowledged instead of handing them back", ackWait)
}
