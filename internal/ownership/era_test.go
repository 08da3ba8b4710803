package ownership_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/ownership"
	"github.com/cartworker/cartworker/internal/testkit"
)

// readyGate is always ready.
type readyGate struct{}

func (readyGate) Ready() bool              { return true }
func (readyGate) Opening() <-chan struct{} { return nil }
func (readyGate) HeldTooLong() bool        { return false }

// A grant's epoch is stored in every cart its owner writes, and daprd's
// HTTP API stores every JSON number as a float64: an era in nanoseconds
// came back rounded, above its owner's own, and fenced every write of it.
// The era and the sequence must come back from a float64 exactly.
func TestGrantEpochSurvivesAFloat64(t *testing.T) {
	ctx := testkit.Context(t, 20*time.Second)
	srv := testkit.StartJetStream(t)
	nc := testkit.Connect(t, srv)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	cfg := ownership.Config{
		Stream: command.StreamCommands, Consumer: command.PartitionConsumer, Partitions: 1, Replicas: 1,
		Renew: time.Second, TTL: 3 * time.Second, MemberTTL: 3 * time.Second, PullExpiry: time.Second,
		PullMargin: 250 * time.Millisecond, ShutdownTimeout: time.Second, CallTimeout: 2 * time.Second,
	}
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: command.StreamCommands, Subjects: []string{"cart.pcmd.>"}})
	require.NoError(t, err)
	_, err = js.CreateOrUpdateConsumer(ctx, command.StreamCommands, jetstream.ConsumerConfig{
		Durable: command.PartitionConsumer(0), AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	members, leases, err := ownership.EnsureBuckets(ctx, js, cfg)
	require.NoError(t, err)
	cfg.Logger = testLogger(t)
	l := ownership.New(js, members, leases, readyGate{}, cfg)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		l.Run(runCtx, done)
	}()
	defer func() {
		stop()
		close(done)
		<-finished
	}()
	var g ownership.Grant
	require.Eventually(t, func() bool {
		var ok bool
		g, ok, _ = l.MayPull(0)
		return ok
	}, 10*time.Second, 10*time.Millisecond, "partition never taken")

	type epoch struct {
		Era int64  `json:"era"`
		Seq uint64 `json:"seq"`
	}
	b, err := json.Marshal(epoch{g.Era, g.Seq})
	require.NoError(t, err)
	var asDaprd map[string]float64
	require.NoError(t, json.Unmarshal(b, &asDaprd))
	require.Equal(t, float64(g.Era), asDaprd["era"])
	require.EqualValues(t, g.Era, int64(asDaprd["era"]), "the era must come back from a float64 unchanged")
	require.EqualValues(t, g.Seq, uint64(asDaprd["seq"]))
	require.Less(t, g.Era, int64(1)<<53)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}
