package command_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
)

// CartPartition computes on the client the partition JetStream's subject
// transform stores a cart's commands under.
func TestCartPartitionIsTheServers(t *testing.T) {
	const n = 32
	srv := testkit.StartJetStream(t)
	js, err := jetstream.New(testkit.Connect(t, srv))
	require.NoError(t, err)
	ctx := testkit.Context(t, 30*time.Second)
	subj := command.Subjects{}
	src, dst := subj.PartitionTransform(n)
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "P", Subjects: []string{subj.Commands()}, Storage: jetstream.MemoryStorage,
		SubjectTransform: &jetstream.SubjectTransformConfig{Source: src, Destination: dst},
	})
	require.NoError(t, err)
	for i := range 200 {
		cartID := fmt.Sprintf("cart-%d", i)
		ack, err := js.Publish(ctx, subj.Command(cartID, command.TypeAddItem), []byte(`{}`))
		require.NoError(t, err)
		msg, err := s.GetMsg(ctx, ack.Sequence)
		require.NoError(t, err)
		p, ok := subj.PartitionOf(msg.Subject)
		require.True(t, ok, msg.Subject)
		require.Equal(t, p, command.CartPartition(cartID, n), cartID)
	}
}
