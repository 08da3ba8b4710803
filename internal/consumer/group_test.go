package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/consumer"
	"github.com/cartworker/cartworker/internal/daprfake"
)

// Carts whose commands wait in the instance together are applied together:
// a few calls to the Applier, each one bulk read and one bulk save, instead
// of a read and a save per cart. Each cart still ends exactly as its
// commands say, in stream order, and a rejected command in the middle of a
// cart's batch changes nothing else, in that cart or another.
func TestWaitingCartsAreAppliedTogether(t *testing.T) {
	const carts, perCart = 10, 3
	e := newEnv(t)
	holding, release := make(chan struct{}), make(chan struct{})
	app := newApplier(e.svc, func(ctx context.Context, cmd command.Command) error {
		if cmd.CartID == "gate" {
			close(holding)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	// One goroutine: whatever arrives while it is held waits for it.
	obs := newObserver()
	e.startWorker(t, consumer.Config{Concurrency: 1, Observer: obs}, app)
	e.publishCmd(t, cacheCmd("gate", ""))
	<-holding

	var ids []string
	for c := range carts {
		cart := fmt.Sprintf("g%d", c)
		ids = append(ids, "cache-"+cart)
		e.publishCmd(t, cacheCmd(cart, ""))
		for i := range perCart {
			tax := "01"
			if c == 3 && i == 1 {
				tax = "99" // unknown: rejected, in the middle of g3's batch
			}
			id := fmt.Sprintf("%s-%d", cart, i)
			e.publishCmd(t, addCmd(id, cart, item(fmt.Sprintf("I%d", i), 1, "10", tax)))
			if tax != "99" {
				ids = append(ids, id)
			}
		}
	}
	want := 1 + carts*(1+perCart)
	eventually(t, func() bool { return e.consumerInfo(t).NumAckPending == want }, waitFor, tick, "the commands were not delivered")
	close(release)
	e.events.waitApplied(t, ids...)
	require.Equal(t, command.OutcomeRejected, e.events.waitCommand(t, "g3-1").Outcome)
	e.waitSettled(t)

	for c := range carts {
		cart := fmt.Sprintf("g%d", c)
		lines := []string{"I0", "I1", "I2"}
		if c == 3 {
			lines = []string{"I0", "I2"}
		}
		require.Equal(t, lines, e.lineCodes(t, cart), "cart %s", cart)
		require.InDelta(t, float64(len(lines))*11, e.cart(t, cart)["sales"].(map[string]any)["total_amount_with_tax"], 1e-9)
	}
	applies := app.applies()
	// The gate's call, then the ten carts in one call (or two, should
	// the last deliveries reach the pool after the first call began).
	require.LessOrEqual(t, applies, 3, "the waiting carts were not applied together")
	require.GreaterOrEqual(t, e.fake.Requests(daprfake.OpGetBulk), 1)
	require.GreaterOrEqual(t, slices.Max(obs.applySizes()), carts/2, "cartworker_apply_carts saw the carts applied together")
	require.Less(t, e.fake.Requests(daprfake.OpGet), carts, "the carts were read one by one")
}

// A transient failure of one cart in a call retries that cart alone: the
// other carts of the call settle at once and are applied exactly once.
func TestOneCartsFailureRetriesItAlone(t *testing.T) {
	e := newEnv(t)
	holding, release := make(chan struct{}), make(chan struct{})
	var failed atomic.Bool
	app := newApplier(e.svc, func(ctx context.Context, cmd command.Command) error {
		switch {
		case cmd.ID == "cache-gate":
			close(holding)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		case cmd.ID == "flaky-add" && failed.CompareAndSwap(false, true):
			return errors.New("dapr: connection reset")
		}
		return nil
	})
	e.startWorker(t, consumer.Config{Concurrency: 1}, app)
	for _, c := range []string{"flaky", "ok1", "ok2"} {
		e.publishCmd(t, cacheCmd(c, ""))
	}
	e.events.waitApplied(t, "cache-flaky", "cache-ok1", "cache-ok2")
	e.publishCmd(t, cacheCmd("gate", ""))
	<-holding
	for _, c := range []string{"flaky", "ok1", "ok2"} {
		e.publishCmd(t, addCmd(c+"-add", c, item("A", 1, "1", "00")))
	}
	eventually(t, func() bool { return e.consumerInfo(t).NumAckPending == 4 }, waitFor, tick, "the commands were not delivered")
	close(release)
	e.events.waitApplied(t, "cache-gate", "flaky-add", "ok1-add", "ok2-add")
	e.waitSettled(t)

	_, _, calls := app.stats()
	seen := map[string]int{}
	for _, c := range calls {
		seen[c.ID]++
	}
	require.Equal(t, 2, seen["flaky-add"], "the failed cart is tried again")
	require.Equal(t, 1, seen["ok1-add"], "a cart that succeeded is not tried again")
	require.Equal(t, 1, seen["ok2-add"])
	for _, c := range []string{"flaky", "ok1", "ok2"} {
		require.Equal(t, []string{"A"}, e.lineCodes(t, c), c)
	}
}
