//go:build integration

package integration

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
)

// Load of the headline scenario.
const (
	eoCommands   = 1000
	eoCarts      = 20
	eoPublishers = 15
	// eoRepublishEvery: every 20th command (5 %) is published a second
	// time under a new Nats-Msg-Id, past JetStream's de-duplication.
	eoRepublishEvery = 20
	// eoBadEvery: a malformed command follows every 48th good one (20).
	eoBadEvery = 48

	eoInstances   = 3
	eoConcurrency = 8
	// eoPoolLimit is WORKER_STATE_MAX_CONNS per instance.
	eoPoolLimit = 16
)

// malformed is one kind of command the worker must dead-letter.
type malformed struct {
	code string
	// body returns the message for cart; the subject type is typ.
	typ  string
	body func(cart, id string) string
}

var malformedKinds = []malformed{
	{command.CodeMalformedJSON, "add-item", func(string, string) string { return `{"id":` }},
	{command.CodeInvalidQuantity, "add-item", func(cart, id string) string {
		return `{"id":"` + id + `","type":"add-item","cart_id":"` + cart + `","items":[{"item_code":"A","quantity":0,"unit_price":1}]}`
	}},
	{command.CodeInvalidPrice, "add-item", func(cart, id string) string {
		return `{"id":"` + id + `","type":"add-item","cart_id":"` + cart + `","items":[{"item_code":"A","quantity":1,"unit_price":-5}]}`
	}},
	{command.CodeSubjectMismatch, "add-item", func(cart, id string) string {
		return `{"id":"` + id + `","type":"add-item","cart_id":"` + cart + `-other","items":[{"item_code":"A","quantity":1,"unit_price":1}]}`
	}},
	{command.CodeMissingID, "add-item", func(cart, _ string) string {
		return `{"type":"add-item","cart_id":"` + cart + `","items":[{"item_code":"A","quantity":1,"unit_price":1}]}`
	}},
	{command.CodeNoItems, "add-item", func(cart, id string) string {
		return `{"id":"` + id + `","type":"add-item","cart_id":"` + cart + `","items":[]}`
	}},
	{command.CodeUnknownType, "explode", func(cart, id string) string {
		return `{"id":"` + id + `","type":"explode","cart_id":"` + cart + `"}`
	}},
}

// TestExactlyOnceThreeInstances is the "done when" scenario: three
// worker processes share the durable consumer while 15 publishers send 1,000
// add-items over 20 carts, 5 % of them twice past JetStream's
// de-duplication, with malformed commands interleaved. Every command lands
// exactly once, totals are exact, every malformed command is dead-lettered,
// and each instance dials Dapr about as often as its concurrency, never more
// than its pool limit.
func TestExactlyOnceThreeInstances(t *testing.T) {
	ctx := testkit.Context(t, 5*time.Minute)
	st := sharedStack(t)
	b := connectBus(ctx, t, st.NATSURL())

	var workers []*process
	for i := range eoInstances {
		workers = append(workers, startProcess(t, st, fmt.Sprintf("eo-%d", i), map[string]string{
			"WORKER_CONCURRENCY":     strconv.Itoa(eoConcurrency),
			"WORKER_STATE_MAX_CONNS": strconv.Itoa(eoPoolLimit),
			"LOG_LEVEL":              "warn",
		}))
	}
	b.waitConsumer(ctx, t)
	b.waitSpread(ctx, t, eoInstances)

	carts := newCartIDs("eo", eoCarts)
	cacheIDs := cacheCarts(ctx, t, b, carts)
	plan := newLoad(carts, eoCommands)

	// Malformed commands follow every eoBadEvery-th good one, on its cart.
	// Their Nats-Msg-Id is the rejected event's command id; the Test-Bad-Id
	// header survives into the dead letter.
	type badCmd struct {
		cart string
		kind malformed
	}
	bad, badAfter := map[string]badCmd{}, map[int]string{}
	badPrefix := randomHex(3)
	for i := range plan.cmds {
		if i%eoBadEvery == eoBadEvery-1 {
			id := fmt.Sprintf("bad-%s-%02d", badPrefix, len(bad))
			bad[id] = badCmd{cart: plan.cmds[i].CartID, kind: malformedKinds[len(bad)%len(malformedKinds)]}
			badAfter[i] = id
		}
	}

	republished := 0
	start := time.Now()
	err := plan.publish(ctx, b, eoPublishers, func(ctx context.Context, i int) error {
		if i%eoRepublishEvery == 0 {
			if err := b.republish(ctx, plan.cmds[i], plan.cmds[i].ID+"-again"); err != nil {
				return err
			}
		}
		if id, ok := badAfter[i]; ok {
			bc := bad[id]
			subject := b.subj.Command(bc.cart, command.Type(bc.kind.typ))
			if err := b.publishRaw(ctx, subject, []byte(bc.kind.body(bc.cart, id)), id, "Test-Bad-Id", id); err != nil {
				return err
			}
		}
		return nil
	})
	require.NoError(t, err, "publish the load")
	for i := range plan.cmds {
		if i%eoRepublishEvery == 0 {
			republished++
		}
	}
	published := time.Since(start)

	b.events.waitApplied(ctx, t, 2*time.Minute, plan.byCart())
	applied := time.Since(start)
	poll(ctx, t, time.Minute, "every malformed command rejected", func() error {
		missing := 0
		for id, bc := range bad {
			if len(b.events.of(bc.cart, id)) == 0 {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d malformed commands without a rejected event", missing, len(bad))
		}
		return nil
	})
	poll(ctx, t, time.Minute, "the consumer to settle (republishes included)", func() error {
		return b.consumerSettled(ctx)
	})
	settled := time.Since(start)

	// Every command's effect is in its cart exactly once, totals exact.
	plan.verify(ctx, t, st, cacheIDs)

	// Events: one non-duplicate applied event per command; the
	// republished copies are duplicates.
	nonDup, dup := map[string]int{}, 0
	for _, ev := range b.events.all() {
		if ev.Outcome != command.OutcomeApplied || ev.Type != command.TypeAddItem {
			continue
		}
		if ev.Duplicate {
			dup++
			continue
		}
		nonDup[ev.CommandID]++
	}
	for _, c := range plan.cmds {
		require.Equal(t, 1, nonDup[c.ID], "non-duplicate applied events of %s", c.ID)
	}
	require.GreaterOrEqual(t, dup, republished, "every republished copy is reported as a duplicate")

	// Every malformed command is dead-lettered once, with its code, and
	// rejected with the same code.
	dls := b.deadLetters(ctx, t)
	require.Len(t, dls, len(bad), "dead letters")
	seen := map[string]bool{}
	for _, dl := range dls {
		id := dl.Header.Get("Test-Bad-Id")
		bc, ok := bad[id]
		require.True(t, ok, "dead letter of no malformed command: %s %q", dl.Subject, dl.Data)
		require.False(t, seen[id], "%s dead-lettered twice", id)
		seen[id] = true
		require.Equal(t, bc.kind.code, dl.Header.Get(command.HeaderDLQCode), "dead letter code of %s", id)
		evs := b.events.of(bc.cart, id)
		require.NotEmpty(t, evs)
		require.Equal(t, command.OutcomeRejected, evs[0].Outcome)
		require.Equal(t, bc.kind.code, evs[0].Error.Code)
	}

	// Pooling: each instance dials Dapr about as often as its concurrency.
	var dials []float64
	var total, deliveries, redeliveries float64
	for _, w := range workers {
		m := w.metrics(t)
		d := m.get(t, "cartworker_state_connections_opened_total")
		require.LessOrEqual(t, d, float64(eoPoolLimit), "dials of %s", w.name)
		dials = append(dials, d)
		total += d
		deliveries += m.get(t, "cartworker_commands_total")
		redeliveries += m.get(t, "cartworker_redeliveries_total")
		code, err := w.readyz()
		require.NoError(t, err)
		require.Equal(t, 200, code, "%s ready", w.name)
	}
	require.LessOrEqual(t, total, float64(eoInstances*eoPoolLimit))
	requireNoPanic(t, workers[0].worker, workers[1].worker, workers[2].worker)

	t.Logf("exactly-once: %d instances × concurrency %d (pool limit %d each), %d carts, %d publishers",
		eoInstances, eoConcurrency, eoPoolLimit, eoCarts, eoPublishers)
	t.Logf("  published %d add-items + %d republished (new Nats-Msg-Id) + %d malformed in %s",
		len(plan.cmds), republished, len(bad), published.Round(time.Millisecond))
	t.Logf("  all applied: %s; settled (duplicates acked): %s",
		rate(len(plan.cmds), applied), settled.Round(time.Millisecond))
	t.Logf("  deliveries %.0f (redeliveries %.0f), duplicate events %d, dead letters %d",
		deliveries, redeliveries, dup, len(dls))
	t.Logf("  Dapr dials per instance %v, total %.0f (limit %d)", dials, total, eoInstances*eoPoolLimit)
}
