//go:build integration

package integration

import (
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// TestOperatorStreamUntouched pre-creates CART_COMMANDS as an operator
// would, with settings that differ from the worker's, then runs a worker
// process: it must use the stream as it is (a worker that rewrote an
// operator's R3 stream down to R1 once lost every command on a leader's
// SIGKILL), and still apply commands from it. The one change it makes is
// the partition transform, which only says where new commands are stored:
// without it a cart's order across instances cannot hold.
func TestOperatorStreamUntouched(t *testing.T) {
	ctx := testkit.Context(t, 4*time.Minute)
	// A NATS of its own: on the shared one, every other test deletes and
	// recreates CART_COMMANDS.
	st := newTestStack(t)
	b := connectBus(ctx, t, st.NATSURL())

	op := jetstream.StreamConfig{
		Name:        command.StreamCommands,
		Description: "POS commands, owned by the platform team",
		Subjects:    []string{"cart.cmd.>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      7 * 24 * time.Hour,
		MaxMsgs:     1_000_000,
		Duplicates:  5 * time.Minute,
	}
	s, err := b.js.CreateStream(ctx, op)
	require.NoError(t, err, "the operator creates %s", op.Name)
	before := s.CachedInfo().Config

	w := startProcess(t, st, "operator-stream", nil)
	b.waitConsumer(ctx, t)

	cart := newCartIDs("opstream", 1)[0]
	cacheIDs := cacheCarts(ctx, t, b, []string{cart})
	ev, err := b.pub.PublishAndWait(ctx, publisher.AddItemCommand(cart,
		command.Item{ItemCode: "OPS", Quantity: 2, UnitPrice: money.FromInt(120), TaxCode: "01"}))
	require.NoError(t, err)
	require.Equal(t, command.OutcomeApplied, ev.Outcome)
	d := readCart(ctx, t, st, cart)
	require.Len(t, d.LineItems, 1)
	require.Equal(t, []string{cacheIDs[cart], ev.CommandID}, d.AppliedCommandIDs)

	s, err = b.js.Stream(ctx, command.StreamCommands)
	require.NoError(t, err)
	after := s.CachedInfo().Config
	src, dst := b.subj.PartitionTransform(command.DefaultPartitions)
	require.Equal(t, &jetstream.SubjectTransformConfig{Source: src, Destination: dst}, after.SubjectTransform,
		"the worker partitions the stream")
	partitioned := before
	partitioned.SubjectTransform = after.SubjectTransform
	require.Equal(t, partitioned, after, "the operator's stream is as it was but for the partition transform")
	require.Equal(t, 7*24*time.Hour, after.MaxAge)
	require.EqualValues(t, 1_000_000, after.MaxMsgs)
	require.Equal(t, 5*time.Minute, after.Duplicates)
	require.Equal(t, op.Description, after.Description)

	logs := w.logs.String()
	require.Contains(t, logs, `msg="using existing stream" stream=CART_COMMANDS`)
	require.Contains(t, logs, "max_age=168h0m0s")
	require.Contains(t, logs, `msg="partitioned an existing stream: new commands are stored by partition" stream=CART_COMMANDS`)
	require.Contains(t, logs, `msg="created stream" stream=CART_DLQ`, "the missing dead-letter stream is the worker's to create")

	w.signal(t, syscall.SIGTERM)
	code, _ := w.waitExit(t, 30*time.Second)
	require.Zero(t, code)
	requireNoPanic(t, w.worker)
}
