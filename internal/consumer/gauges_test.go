package consumer_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/consumer"
)

// Operators read three gauges off the Observer: the commands an instance
// holds, the lag of the partitions it owns, and the depth of the
// dead-letter stream. Each must follow what JetStream and the pool hold,
// and the in-flight count must come back to zero once everything settles.
func TestObserverGaugesFollowInFlightLagAndDeadLetters(t *testing.T) {
	e := newEnv(t)

	// One dead letter, left by a first instance.
	first := e.startWorker(t, consumer.Config{}, nil)
	bad := nats.NewMsg(subjects.Command("g0", command.TypeAddItem))
	bad.Data = []byte(`{"id":"bad-1",`)
	e.publishMsg(t, bad)
	eventually(t, func() bool { return len(e.deadLetters(t)) == 1 }, 5*time.Second, tick, "no dead letter")
	_, ok := first.stop(10 * time.Second)
	require.True(t, ok)

	// A backlog of one cart, then an instance that may hold one message
	// per partition and holds its first batch until released.
	const backlog = 40
	for i := range backlog {
		e.publishCmd(t, addCmd(fmt.Sprintf("g-%d", i), "g1", item("A", 1, "1.00", "T1")))
	}
	release := make(chan struct{})
	app := newApplier(nil, func(ctx context.Context, _ command.Command) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	obs := newObserver()
	e.startWorker(t, consumer.Config{Observer: obs, Concurrency: 1, Buffer: 4}, app)

	// The first sample comes at once, the next after sampleEvery (10 s).
	eventually(t, func() bool {
		inflight, lag, dlq, _ := obs.gauges()
		return inflight >= 1 && dlq == 1 && lag >= backlog-4
	}, 15*time.Second, tick, "gauges never showed the held command, the backlog and the dead letter: %s", obs)

	close(release)
	e.waitSettled(t)
	eventually(t, func() bool {
		inflight, _, _, _ := obs.gauges()
		return inflight == 0
	}, 5*time.Second, tick, "commands still counted in flight after they settled")
}

// Adding to a cart that does not exist is a client's mistake, answered at
// once with cart_not_found. It used to wait out a not-found grace through
// redeliveries: 2 adds to a missing cart counted 50 redeliveries, which fired
// the redelivery alert on client mistakes. Neither command is redelivered.
func TestAddToMissingCartIsNoRedelivery(t *testing.T) {
	e := newEnv(t)
	obs := newObserver()
	e.startWorker(t, consumer.Config{Observer: obs}, nil)
	e.publishCmd(t, addCmd("m-1", "missing", item("A", 1, "1.00", "T1")))
	e.publishCmd(t, addCmd("m-2", "missing", item("A", 1, "1.00", "T1")))
	e.waitSettled(t)
	eventually(t, func() bool { return obs.count(string(command.TypeAddItem), consumer.LabelRejected) == 2 }, 5*time.Second, tick,
		"both adds must be rejected: %s", obs)
	redelivered, deadLettered := obs.counts()
	require.Zero(t, redelivered, "a rejection is no redelivery: %s", obs)
	require.Zero(t, deadLettered)
	require.Zero(t, obs.count("", consumer.LabelRetry), "nothing retried: %s", obs)
}
