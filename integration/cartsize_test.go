//go:build integration

package integration

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// TestCartSizeLimit drives carts towards daprd's 4 MiB limit through real
// daprd, on both state transports:
//   - at the default WORKER_MAX_CART_BYTES (2 MiB), the add-item that would
//     take the cart past it is rejected as cart_too_large at its first
//     delivery, acked, not dead-lettered, and the cart keeps exactly the
//     lines of the applied add-items;
//   - with the limit set past daprd's (6 MiB), daprd itself refuses the
//     save (gRPC ResourceExhausted, HTTP 413): the command is dead-lettered
//     as state_rejected at its first delivery, never retried as a transient
//     failure.
func TestCartSizeLimit(t *testing.T) {
	st := sharedStack(t)
	// Its own stack for the dead letters, which the shared one must not
	// keep.
	own := newTestStack(t)
	for _, protocol := range []string{"grpc", "http"} {
		t.Run(protocol+"/worker limit", func(t *testing.T) {
			ctx := testkit.Context(t, 4*time.Minute)
			b := connectBus(ctx, t, st.NATSURL())
			w := inProcessWorker(t, st, "size-"+protocol, map[string]string{"WORKER_STATE_PROTOCOL": protocol})
			b.waitConsumer(ctx, t)
			applied, last := growCart(ctx, t, st, b, 2<<20, func(err error) bool {
				var rej *publisher.RejectedError
				return errors.As(err, &rej) && rej.Code == command.CodeCartTooLarge
			})
			requireRejected(t, last, command.CodeCartTooLarge)
			require.Contains(t, last.Error(), "WORKER_MAX_CART_BYTES 2097152", "the event names the limit")
			n, err := b.deadLetterCount(ctx)
			require.NoError(t, err)
			require.Zero(t, n, "cart_too_large is a rejection, not a dead letter")
			m := w.metrics(t)
			require.Equal(t, 0.0, valueOr(m, "cartworker_redeliveries_total"), "refused at the first delivery")
			require.Zero(t, valueOr(m, "cartworker_commands_total", "outcome", "retry"), "never retried")
			t.Logf("%s: %d add-items of %d lines applied before cart_too_large", protocol, applied, command.MaxItems)
			requireNoPanic(t, w)
		})
		t.Run(protocol+"/daprd limit", func(t *testing.T) {
			ctx := testkit.Context(t, 4*time.Minute)
			st := own
			b := connectBus(ctx, t, st.NATSURL())
			w := inProcessWorker(t, st, "dapr-size-"+protocol, map[string]string{
				"WORKER_STATE_PROTOCOL": protocol,
				"WORKER_MAX_CART_BYTES": strconv.Itoa(6 << 20),
			})
			b.waitConsumer(ctx, t)
			applied, last := growCart(ctx, t, st, b, 6<<20, func(err error) bool {
				var rej *publisher.RejectedError
				return errors.As(err, &rej) && rej.Code == command.CodeStateRejected
			})
			requireRejected(t, last, command.CodeStateRejected)
			dls := b.deadLetters(ctx, t)
			require.NotEmpty(t, dls)
			dl := dls[len(dls)-1]
			require.Equal(t, command.CodeStateRejected, dl.Header.Get(command.HeaderDLQCode))
			require.Equal(t, "1", dl.Header.Get(command.HeaderDLQDeliveries), "at its first delivery")
			require.Zero(t, valueOr(w.metrics(t), "cartworker_commands_total", "outcome", "retry"), "never retried")
			t.Logf("%s: daprd refused the cart after %d add-items of %d lines", protocol, applied, command.MaxItems)
			requireNoPanic(t, w)
		})
	}
}

// growCart caches a cart and adds MaxItems lines at a time until an
// add-item is refused as stop says, or the cart would pass most bytes by
// far. It checks that the cart then holds exactly the applied lines, and
// returns how many add-items were applied and the refusal.
func growCart(ctx context.Context, t *testing.T, st *stack, b *bus, most int, stop func(error) bool) (int, error) {
	t.Helper()
	cart := newCartIDs("size", 1)[0]
	_, err := b.pub.PublishAndWait(ctx, publisher.CacheCommand(cart, publisher.NewCart{TenantID: "T1", StoreCode: "S1", TerminalNo: 1}))
	require.NoError(t, err)
	price, err := money.Parse("1.25")
	require.NoError(t, err)
	items := make([]command.Item, command.MaxItems)
	for i := range items {
		items[i] = command.Item{ItemCode: "SKU" + strconv.Itoa(i), Description: "a line of some length, as a till sends it",
			Quantity: 1, UnitPrice: price, TaxCode: "01"}
	}
	// A line is some 370 bytes: bound the loop well past the limit.
	maxAdds := most/(command.MaxItems*300) + 5
	for n := range maxAdds {
		cmd := publisher.AddItemCommand(cart, items...)
		cmd.ID = "grow-" + strconv.Itoa(n) + "-" + randomHex(4)
		_, err := b.pub.PublishAndWait(ctx, cmd)
		if err != nil {
			require.True(t, stop(err), "add-item %d: %v", n, err)
			doc := readCart(ctx, t, st, cart)
			require.Len(t, doc.LineItems, n*command.MaxItems, "the cart keeps exactly the applied lines")
			require.LessOrEqual(t, len(doc.Raw), most+64<<10, "the stored cart is within the limit, but for the ids it records")
			return n, err
		}
	}
	require.FailNow(t, "never refused", "%d add-items of %d lines", maxAdds, command.MaxItems)
	return 0, nil
}
