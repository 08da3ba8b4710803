package consumer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
)

// cartIn returns a cart id of partition p among n.
func cartIn(t *testing.T, p, n int) string {
	t.Helper()
	for i := range 10_000 {
		if id := fmt.Sprintf("c%d", i); command.CartPartition(id, n) == p {
			return id
		}
	}
	t.Fatalf("no cart id of partition %d among %d", p, n)
	return ""
}

func closedWithin(ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A parked partition is woken by a command published for one of its carts,
// and only by those; the subscription that hears them is held only while a
// partition is parked.
func TestParkedPartitionWakesOnItsCommands(t *testing.T) {
	const n = 8
	nc := testkit.Connect(t, testkit.StartJetStream(t))
	subj := command.Subjects{}
	ip := newIdlePartitions(nc, subj, n)

	p1, err := ip.park(1)
	require.NoError(t, err)
	p2, err := ip.park(2)
	require.NoError(t, err)
	p3, err := ip.park(3)
	require.NoError(t, err)

	// One subscription delivers in order: once partition 1 is woken, the
	// command for partition 2 published before it was heard too.
	require.NoError(t, nc.Publish(subj.Command(cartIn(t, 2, n), command.TypeAddItem), []byte(`{}`)))
	require.NoError(t, nc.Publish(subj.Command(cartIn(t, 1, n), command.TypeAddItem), []byte(`{}`)))
	require.True(t, closedWithin(p1, 10*time.Second), "partition 1 woken")
	require.True(t, isClosed(p2), "partition 2 woken")
	require.False(t, isClosed(p3), "partition 3 has no command")

	ip.mu.Lock()
	require.NotNil(t, ip.sub, "partition 3 is still parked")
	ip.mu.Unlock()
	ip.unpark(3)
	require.True(t, isClosed(p3))
	ip.mu.Lock()
	require.Nil(t, ip.sub, "nothing parked: nothing heard")
	ip.mu.Unlock()
}

// A command the subscription did not hear still wakes its partition: the
// recheck wakes every parked partition once the stream stored anything
// since its last look, and only then.
func TestRecheckWakesWhatTheSubscriptionMissed(t *testing.T) {
	srv := testkit.StartJetStream(t)
	nc := testkit.Connect(t, srv)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := testkit.Context(t, 30*time.Second)
	subj := command.Subjects{}
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: command.StreamCommands, Subjects: []string{subj.Commands()}, Storage: jetstream.MemoryStorage})
	require.NoError(t, err)
	// Stored before anything parked: the subscription never hears it.
	_, err = js.Publish(ctx, subj.Command("c1", command.TypeAddItem), []byte(`{}`))
	require.NoError(t, err)

	ip := newIdlePartitions(nc, subj, 4)
	woken, err := ip.park(0)
	require.NoError(t, err)
	ip.recheck(ctx, js)
	require.True(t, isClosed(woken), "the stream moved since the last look")

	again, err := ip.park(0)
	require.NoError(t, err)
	ip.recheck(ctx, js)
	require.False(t, isClosed(again), "nothing stored since the last look")
	ip.unpark(0)

	// watch ends with its context and wakes what is parked.
	last, err := ip.park(1)
	require.NoError(t, err)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); ip.watch(wctx, js) }()
	cancel()
	<-done
	require.True(t, isClosed(last))
}
