package ownership_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/testkit"
)

// TestPinningDoesNotSpreadPartitions is why partitions are owned through
// leases rather than JetStream's pinned-client priority groups (ADR-42)
// alone: the server pins whichever client pulls first and keeps it pinned
// while it pulls, so an instance that joins later, pulling every partition
// too, is given none of them. Spreading the partitions over the live
// instances then still needs the members bucket, each instance stepping
// back from what is beyond its share, and the fencing epoch still needs a
// durable counter (a pin id is a random nuid), which together are what the
// leases are. Should a server release spread pins by itself, this test
// fails: look again.
func TestPinningDoesNotSpreadPartitions(t *testing.T) {
	const partitions = 4
	ctx := testkit.Context(t, 30*time.Second)
	srv := testkit.StartJetStream(t)
	first, err := jetstream.New(testkit.Connect(t, srv))
	require.NoError(t, err)
	joiner, err := jetstream.New(testkit.Connect(t, srv))
	require.NoError(t, err)

	_, err = first.CreateStream(ctx, jetstream.StreamConfig{Name: "PIN", Subjects: []string{"pin.>"}})
	require.NoError(t, err)
	for p := range partitions {
		_, err := first.CreateOrUpdateConsumer(ctx, "PIN", jetstream.ConsumerConfig{
			Durable:        fmt.Sprintf("p%d", p),
			FilterSubject:  fmt.Sprintf("pin.%d", p),
			AckPolicy:      jetstream.AckExplicitPolicy,
			PriorityPolicy: jetstream.PriorityPolicyPinned,
			PinnedTTL:      5 * time.Second,
			PriorityGroups: []string{"g"},
		})
		require.NoError(t, err)
	}

	// pullAll pulls every partition for d, as a worker that relies on
	// pinning would, and returns how many messages each partition gave.
	pullAll := func(js jetstream.JetStream, d time.Duration) map[int]int {
		var mu sync.Mutex
		got := map[int]int{}
		var wg sync.WaitGroup
		for p := range partitions {
			wg.Go(func() {
				c, err := js.Consumer(ctx, "PIN", fmt.Sprintf("p%d", p))
				if err != nil {
					return
				}
				for deadline := time.Now().Add(d); time.Now().Before(deadline); {
					b, err := c.Fetch(10, jetstream.FetchPriorityGroup("g"), jetstream.FetchMaxWait(time.Second))
					if err != nil {
						continue
					}
					for m := range b.Messages() {
						_ = m.Ack()
						mu.Lock()
						got[p]++
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		return got
	}

	// The first instance is alone for a moment, takes a command of every
	// partition, and is pinned everywhere.
	firstPulls := make(chan map[int]int, 1)
	go func() { firstPulls <- pullAll(first, 7*time.Second) }()
	for p := range partitions {
		_, err := first.Publish(ctx, fmt.Sprintf("pin.%d", p), nil)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		for p := range partitions {
			c, err := first.Consumer(ctx, "PIN", fmt.Sprintf("p%d", p))
			if err != nil {
				return false
			}
			in, err := c.Info(ctx)
			if err != nil || len(in.PriorityGroups) == 0 || in.PriorityGroups[0].PinnedClientID == "" {
				return false
			}
		}
		return true
	}, 5*time.Second, 20*time.Millisecond, "the first instance was never pinned")

	// A second instance joins and pulls everything too, while commands
	// come in on every partition.
	joinerPulls := make(chan map[int]int, 1)
	go func() { joinerPulls <- pullAll(joiner, 4*time.Second) }()
	for i := range 40 {
		_, err := first.Publish(ctx, fmt.Sprintf("pin.%d", i%partitions), nil)
		require.NoError(t, err)
		time.Sleep(50 * time.Millisecond) // paced like a till; not an assertion
	}
	gotJoiner, gotFirst := <-joinerPulls, <-firstPulls
	require.Empty(t, gotJoiner, "the joiner was pinned to some partition: pinning may now spread them")
	require.Len(t, gotFirst, partitions, "the first instance kept every partition")
	t.Logf("commands per partition: first instance %v, joiner %v", gotFirst, gotJoiner)
}
