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

// Operators read four gauges off the Observer: the commands an instance
// holds, the lag of the partitions it owns, the age of the oldest command
// it holds in each, and the depth of the dead-letter stream. Each must follow what JetStream and the pool hold,
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

	// The first sample comes at once, the next after sampleEvery (10 s);
	// the instance owns the 4 partitions newEnv makes.
	eventually(t, func() bool {
		inflight, lag, dlq, _ := obs.gauges()
		oldest, partitions := obs.oldestHeld()
		return inflight >= 1 && dlq == 1 && lag >= backlog-4 && oldest > 0 && partitions == 4
	}, 15*time.Second, tick, "gauges never showed the held command, its age, the backlog and the dead letter: %s", obs)

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

// A new instance is not ready until its first probe of the state store
// passes, and takes no partition before. Its balancer used to take them at
// its next tick, up to balanceEvery (2 s) after the probe: a restarted or
// added instance sat idle that long with a backlog waiting (seen as a 2 s
// gap before the first event in the benchmark's backlog drains). It now
// takes them as soon as the gate opens.
func TestPartitionsTakenAsSoonAsTheFirstProbePasses(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	probe := func(ctx context.Context) error {
		select {
		case <-release:
			return e.probe(ctx)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r := e.startWorker(t, consumer.Config{Probe: probe}, nil)
	e.publishCmd(t, cacheCmd("p1", ""))
	// The balancer's first tick has registered the instance, and found
	// the gate closed.
	members, err := e.js.KeyValue(context.Background(), command.MembersBucket)
	require.NoError(t, err)
	eventually(t, func() bool {
		keys, err := members.ListKeys(context.Background())
		if err != nil {
			return false
		}
		n := 0
		for range keys.Keys() {
			n++
		}
		return n == 1
	}, waitFor, tick, "the instance never registered")
	require.Error(t, r.w.Ready(), "not ready before its first probe")
	close(release)
	eventually(t, func() bool { return r.w.Ready() == nil }, waitFor, tick, "the probe never passed")
	eventually(t, func() bool { return len(e.events.forCommand("cache-p1")) > 0 }, 1200*time.Millisecond, tick,
		"the command waited for the next balance tick after the gate opened")
}
