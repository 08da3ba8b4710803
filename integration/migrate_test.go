//go:build integration

package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

const (
	migCarts   = 5
	migBacklog = 30 // add-items per cart stored before partitioning
	migLater   = 10 // add-items per cart stored after
	// migSlowDapr slows the workers' daprd replies so that the backlog,
	// which the strays consumer hands out one command at a time, takes
	// seconds to drain: the later commands are then certainly stored
	// while it does.
	migSlowDapr = 5 * time.Millisecond
)

// TestMigratesUnpartitionedStream upgrades from the unpartitioned version:
// CART_COMMANDS and its durable consumer exist as that version made them,
// holding a backlog, when two processes of this version start. They
// partition the stream in place, finish the backlog through the strays
// consumer before any partition, and apply the commands stored meanwhile
// after it: every cart ends with its lines in publish order, each command
// applied once.
func TestMigratesUnpartitionedStream(t *testing.T) {
	ctx := testkit.Context(t, 3*time.Minute)
	st := sharedStack(t)
	b := connectBus(ctx, t, st.NATSURL())

	// The previous version's streams and consumer, as it created them.
	_, err := b.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:        command.StreamCommands,
		Description: "cart commands, consumed by cartworker",
		Subjects:    []string{b.subj.Commands()},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      24 * time.Hour,
		Duplicates:  2 * time.Minute,
		Replicas:    1,
	})
	require.NoError(t, err)
	_, err = b.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:        command.StreamDeadLetters,
		Description: "cart commands that can never be applied",
		Subjects:    []string{b.subj.DeadLetters()},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      14 * 24 * time.Hour,
		Duplicates:  2 * time.Minute,
		Replicas:    1,
	})
	require.NoError(t, err)
	_, err = b.js.CreateOrUpdateConsumer(ctx, command.StreamCommands, jetstream.ConsumerConfig{
		Durable:       command.ConsumerName,
		FilterSubject: b.subj.Commands(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 1024,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	require.NoError(t, err)

	// The backlog: each cart's cache, then its add-items, carts
	// interleaved as terminals would.
	carts := newCartIDs("migrate", migCarts)
	want := map[string][]string{} // cart → command ids in publish order, cache first
	var receipts []publisher.Receipt
	publish := func(cmd command.Command) {
		t.Helper()
		r, err := b.pub.Publish(ctx, cmd)
		require.NoError(t, err, "publish %s", cmd.ID)
		require.False(t, r.Duplicate, "%s dropped as a duplicate", cmd.ID)
		want[cmd.CartID] = append(want[cmd.CartID], cmd.ID)
		receipts = append(receipts, r)
	}
	addItem := func(cart string, i int) command.Command {
		id := fmt.Sprintf("%s-%02d", cart, i)
		return command.Command{ID: id, Type: command.TypeAddItem, CartID: cart, Items: []command.Item{{
			ItemCode: id, Quantity: 1, UnitPrice: money.FromInt(int64(100 + i)), TaxCode: "01",
		}}}
	}
	for _, cart := range carts {
		cache := publisher.CacheCommand(cart, publisher.NewCart{TenantID: "T1", StoreCode: "S1", TerminalNo: 1})
		cache.ID = "cache-" + cart
		publish(cache)
	}
	for i := range migBacklog {
		for _, cart := range carts {
			publish(addItem(cart, i))
		}
	}
	backlog := len(receipts)

	// Two processes of this version. Once they have partitioned the stream
	// and are working through the backlog, terminals go on scanning.
	daprHost := hostPort(t, st.DaprHTTPEndpoint())
	var procs []*process
	for i := range 2 {
		link := startSlowLink(t, daprHost, migSlowDapr)
		procs = append(procs, startProcess(t, st, fmt.Sprintf("migrate-%d", i), map[string]string{
			"DAPR_HTTP_ENDPOINT": "http://" + link.addr(),
			// The slow link delays HTTP calls.
			"WORKER_STATE_PROTOCOL": "http",
		}))
	}
	src, dst := b.subj.PartitionTransform(command.DefaultPartitions)
	transform := &jetstream.SubjectTransformConfig{Source: src, Destination: dst}
	poll(ctx, t, 30*time.Second, "the stream partitioned", func() error {
		s, err := b.js.Stream(ctx, command.StreamCommands)
		if err != nil {
			return err
		}
		if got := s.CachedInfo().Config.SubjectTransform; got == nil || *got != *transform {
			return fmt.Errorf("subject transform %+v", got)
		}
		return nil
	})
	poll(ctx, t, 30*time.Second, "the backlog under way", func() error {
		if n := b.events.appliedCount(); n < migCarts*2 {
			return fmt.Errorf("%d applied", n)
		}
		return nil
	})
	for i := range migLater {
		for _, cart := range carts {
			publish(addItem(cart, migBacklog+i))
		}
	}
	strays, err := b.js.Consumer(ctx, command.StreamCommands, command.ConsumerName)
	require.NoError(t, err)
	info, err := strays.Info(ctx)
	require.NoError(t, err)
	left := info.NumPending + uint64(info.NumAckPending)
	require.Positive(t, left, "the backlog was done before the later commands were stored: nothing tested their order")
	done := b.events.appliedCount()
	b.waitConsumer(ctx, t)

	// Where JetStream stored each command: the backlog as published, the
	// later ones in their cart's partition.
	stream, err := b.js.Stream(ctx, command.StreamCommands)
	require.NoError(t, err)
	for i, r := range receipts {
		m, err := stream.GetMsg(ctx, r.Seq)
		require.NoError(t, err)
		require.Equal(t, r.Subject, b.subj.Published(m.Subject), "stored subject of %s", r.CommandID)
		require.Equal(t, i >= backlog, m.Subject != r.Subject, "stored subject %s of %s", m.Subject, r.CommandID)
	}

	b.events.waitApplied(ctx, t, time.Minute, want)
	poll(ctx, t, 30*time.Second, "the consumers to settle", func() error { return b.consumerSettled(ctx) })

	// Every cart: its lines in publish order, backlog first, each command
	// applied once.
	for _, cart := range carts {
		d := readCart(ctx, t, st, cart)
		require.Equal(t, want[cart], d.AppliedCommandIDs, "cart %s applied_command_ids", cart)
		var codes []string
		for _, line := range d.LineItems {
			codes = append(codes, line.ItemCode)
		}
		require.Equal(t, want[cart][1:], codes, "cart %s line items", cart)
	}
	nonDup := map[string]int{}
	for _, ev := range b.events.all() {
		if ev.Outcome == command.OutcomeApplied && !ev.Duplicate {
			nonDup[ev.CartID+"/"+ev.CommandID]++
		}
		require.NotEqual(t, command.OutcomeRejected, ev.Outcome, "%s rejected: %+v", ev.CommandID, ev.Error)
	}
	for cart, ids := range want {
		for _, id := range ids {
			require.Equal(t, 1, nonDup[cart+"/"+id], "applied events of %s that are not duplicates", id)
		}
	}

	// The stream is partitioned, and the old durable is now the strays
	// consumer: one command in flight, nothing left.
	s, err := b.js.Stream(ctx, command.StreamCommands)
	require.NoError(t, err)
	require.Equal(t, transform, s.CachedInfo().Config.SubjectTransform)
	info, err = strays.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, info.Config.MaxAckPending, "strays consumer")
	require.Equal(t, b.subj.Commands(), info.Config.FilterSubject, "strays consumer")
	require.Zero(t, info.NumPending, "strays consumer")
	require.Zero(t, info.NumAckPending, "strays consumer")
	n, err := b.deadLetterCount(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "dead letters")

	logs := procs[0].logs.String() + procs[1].logs.String()
	require.Contains(t, logs, "partitioned an existing stream")
	require.Contains(t, logs, "finishing commands stored before partitioning first")
	requireNoPanic(t, procs[0].worker, procs[1].worker)
	var perProcess []float64
	for _, p := range procs {
		perProcess = append(perProcess, valueOr(p.metrics(t), "cartworker_commands_total"))
	}
	t.Logf("migration: %d commands stored unpartitioned; %d stored partitioned once %d of them were applied and %d were still to do; all %d applied once, in publish order per cart; strays consumer now MaxAckPending %d, AckWait %s; commands per process %v",
		backlog, len(receipts)-backlog, done, left, len(receipts), info.Config.MaxAckPending, info.Config.AckWait, perProcess)
}
