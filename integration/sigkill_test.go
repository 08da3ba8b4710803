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

// TestSIGKILLMidLoad kills one of three worker processes without warning
// while commands flow. JetStream redelivers what it held after
// WORKER_ACK_WAIT, the two survivors finish, and the applied-id list turns
// any re-application into a duplicate: every command lands exactly once.
func TestSIGKILLMidLoad(t *testing.T) {
	const (
		commands = 600
		carts    = 20
		ackWait  = 3 * time.Second
	)
	ctx := testkit.Context(t, 4*time.Minute)
	st := sharedStack(t)
	b := connectBus(ctx, t, st.NATSURL())
	var workers []*process
	for i := range 3 {
		workers = append(workers, startProcess(t, st, fmt.Sprintf("kill-%d", i), map[string]string{
			"WORKER_ACK_WAIT":    ackWait.String(),
			"WORKER_CONCURRENCY": "8",
			"LOG_LEVEL":          "warn",
		}))
	}
	b.waitConsumer(ctx, t)

	cartIDs := newCartIDs("kill", carts)
	cacheIDs := cacheCarts(ctx, t, b, cartIDs)
	base := b.events.appliedCount()
	plan := newLoad(cartIDs, commands)

	start := time.Now()
	published := make(chan error, 1)
	go func() { published <- plan.publish(ctx, b, 8, nil) }()

	// Kill one instance once about a third of the commands are applied.
	poll(ctx, t, time.Minute, "a third of the commands applied", func() error {
		if n := b.events.appliedCount() - base; n < commands/3 {
			return fmt.Errorf("%d applied", n)
		}
		return nil
	})
	victim := workers[0]
	victimDeliveries := victim.metrics(t).get(t, "cartworker_commands_total")
	victim.signal(t, syscall.SIGKILL)
	code, _ := victim.waitExit(t, 10*time.Second)
	appliedAtKill := b.events.appliedCount() - base
	require.Equal(t, -1, code, "SIGKILL leaves no exit code")
	require.NoError(t, <-published, "publish the load")

	b.events.waitApplied(ctx, t, 2*time.Minute, plan.byCart())
	applied := time.Since(start)
	poll(ctx, t, time.Minute, "the consumer to settle", func() error { return b.consumerSettled(ctx) })
	plan.verify(ctx, t, st, cacheIDs)

	n, err := b.deadLetterCount(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "dead letters")
	var redeliveries, duplicates float64
	for _, w := range workers[1:] {
		m := w.metrics(t)
		redeliveries += m.get(t, "cartworker_redeliveries_total")
		duplicates += valueOr(m, "cartworker_commands_total", "outcome", "duplicate")
		require.True(t, w.running(), "%s still running", w.name)
	}
	requireNoPanic(t, workers[1].worker, workers[2].worker)
	t.Logf("SIGKILL of %s after %d of %d applied (it had handled ≥%.0f deliveries); survivors: %.0f redeliveries, %.0f duplicates; all applied in %s",
		victim.name, appliedAtKill, commands, victimDeliveries, redeliveries, duplicates, applied.Round(time.Millisecond))
}
