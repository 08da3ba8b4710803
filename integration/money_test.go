//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"math/big"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// TestMoneyOverflowRejected replays the black-box run that once stored a
// subtotal of −844,774,407,370,955.1: ten add-items of 100 lines, each
// 9,999 × a price at external 10 %. The add-items whose totals the cart can
// hold are applied; every other one is rejected with amount_overflow, acked
// and not dead-lettered; and the cart read back through daprd holds the
// exact totals of the applied ones.
//
// "Can hold" has two limits. money.Amount's range, 922,337,203,685,477.5807,
// which whole prices reach on the ninth add-item; and what daprd stores
// exactly: it re-encodes every JSON number it saves through a float64, so
// the black-box prices' first subtotal, 99,989,999,999,900.01, would be
// stored as …900.02 and every one of those add-items is refused.
func TestMoneyOverflowRejected(t *testing.T) {
	ctx := testkit.Context(t, 3*time.Minute)
	st := sharedStack(t)
	b := connectBus(ctx, t, st.NATSURL())
	w := inProcessWorker(t, st, "money", map[string]string{
		// Were the overflow mistaken for a transient failure, it would be
		// dead-lettered as max_deliveries after a few retries rather than
		// after the default ten with their 20 s of backoff.
		"WORKER_MAX_DELIVER": "3",
	})
	b.waitConsumer(ctx, t)

	whole := overflowRun(ctx, t, st, b, "100000000")
	require.Equal(t, 8, whole, "8 add-items fit; a ninth would take the total with tax to 989,901,000,000,000")
	blackBox := overflowRun(ctx, t, st, b, "99999999.9999")
	require.Zero(t, blackBox, "daprd would round every total of the black-box prices")

	// Nothing dead-lettered, everything acked.
	n, err := b.deadLetterCount(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "an amount overflow is a rejection, not a dead letter")
	poll(ctx, t, 10*time.Second, "the consumer to settle", func() error { return b.consumerSettled(ctx) })
	m := w.metrics(t)
	require.Equal(t, float64(2*10-whole-blackBox), m.get(t, "cartworker_commands_total", "outcome", "rejected"))
	require.Equal(t, 0.0, valueOr(m, "cartworker_dead_letters_total"))
	requireNoPanic(t, w)
}

// overflowRun creates a cart, publishes the ten add-items at price and
// checks each outcome against exact arithmetic, then the cart as daprd
// returns it. It returns how many add-items were applied.
func overflowRun(ctx context.Context, t *testing.T, st *stack, b *bus, price string) int {
	t.Helper()
	const (
		adds  = 10
		lines = 100
		qty   = 9999
	)
	cart := newCartIDs("money", 1)[0]
	_, err := b.pub.PublishAndWait(ctx, publisher.CacheCommand(cart, publisher.NewCart{TenantID: "T1", StoreCode: "S1", TerminalNo: 1}))
	require.NoError(t, err)

	unit, err := money.Parse(price)
	require.NoError(t, err)
	items := make([]command.Item, lines)
	for i := range items {
		items[i] = command.Item{ItemCode: "BIG" + strconv.Itoa(i), Quantity: qty, UnitPrice: unit, TaxCode: "01"}
	}

	// Expected totals, exactly, with math/big.
	limit := new(big.Rat).SetFrac(big.NewInt(math.MaxInt64), big.NewInt(10_000))
	line, ok := new(big.Rat).SetString(price)
	require.True(t, ok)
	line.Mul(line, big.NewRat(qty, 1))
	perAdd := new(big.Rat).Mul(line, big.NewRat(lines, 1))
	subtotal, tax := new(big.Rat), new(big.Rat)
	var applied, handled []string
	refused := map[string]string{}
	for n := 1; n <= adds; n++ {
		next := new(big.Rat).Add(subtotal, perAdd)
		nextTax := new(big.Rat).Mul(next, big.NewRat(1, 10))
		nextTax.SetInt(new(big.Int).Quo(nextTax.Num(), nextTax.Denom())) // floored to whole units
		withTax := new(big.Rat).Add(next, nextTax)
		fits := withTax.Cmp(limit) <= 0 &&
			survivesDapr(line) && survivesDapr(next) && survivesDapr(nextTax) && survivesDapr(withTax)

		cmd := publisher.AddItemCommand(cart, items...)
		cmd.ID = "big-" + strconv.Itoa(n) + "-" + randomHex(4)
		ev, err := b.pub.PublishAndWait(ctx, cmd)
		handled = append(handled, cmd.ID)
		if !fits {
			requireRejected(t, err, command.CodeAmountOverflow)
			refused[cmd.ID] = command.CodeAmountOverflow
			continue
		}
		require.NoError(t, err, "add-item %d at %s fits and must be applied", n, price)
		require.Equal(t, command.OutcomeApplied, ev.Outcome)
		require.False(t, ev.Duplicate)
		applied = append(applied, cmd.ID)
		subtotal, tax = next, nextTax
	}

	// The cart through daprd, numbers read as written (not as
	// cartworkertest.Cart decodes them).
	s, _, err := daprGet(ctx, st.DaprHTTPEndpoint(), st.DaprToken(), cart)
	require.NoError(t, err, "GET cart %s through Dapr", cart)
	var doc struct {
		Subtotal json.Number `json:"subtotal_amount"`
		Balance  json.Number `json:"balance_amount"`
		Sales    struct {
			Total    json.Number `json:"total_amount"`
			Tax      json.Number `json:"tax_amount"`
			WithTax  json.Number `json:"total_amount_with_tax"`
			Quantity json.Number `json:"total_quantity"`
		} `json:"sales"`
		Taxes []struct {
			Code   string      `json:"tax_code"`
			Amount json.Number `json:"tax_amount"`
			Target json.Number `json:"target_amount"`
		} `json:"taxes"`
		Lines    []json.RawMessage `json:"line_items"`
		Applied  []string          `json:"applied_command_ids"`
		Rejected map[string]string `json:"rejected_command_ids"`
	}
	dec := json.NewDecoder(bytes.NewReader(s.Value))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&doc))
	withTax := new(big.Rat).Add(subtotal, tax)
	requireExactNumber(t, subtotal, doc.Subtotal, "subtotal_amount")
	requireExactNumber(t, subtotal, doc.Sales.Total, "sales.total_amount")
	requireExactNumber(t, tax, doc.Sales.Tax, "sales.tax_amount")
	requireExactNumber(t, withTax, doc.Sales.WithTax, "sales.total_amount_with_tax")
	requireExactNumber(t, withTax, doc.Balance, "balance_amount")
	require.Equal(t, json.Number(strconv.Itoa(len(applied)*lines*qty)), doc.Sales.Quantity)
	require.Len(t, doc.Lines, len(applied)*lines)
	if len(applied) > 0 {
		require.Len(t, doc.Taxes, 1)
		require.Equal(t, "01", doc.Taxes[0].Code)
		requireExactNumber(t, tax, doc.Taxes[0].Amount, "taxes[0].tax_amount")
		requireExactNumber(t, subtotal, doc.Taxes[0].Target, "taxes[0].target_amount")
	}
	// Every add-item is recorded after the cache, in order, the refused
	// ones with their code: a replay of one is refused alike.
	require.Len(t, doc.Applied, 1+len(handled))
	require.Equal(t, handled, doc.Applied[1:], "every add-item is recorded, after the cache")
	if len(refused) == 0 {
		require.Empty(t, doc.Rejected)
	} else {
		require.Equal(t, refused, doc.Rejected, "exactly the refused add-items are recorded as refused")
	}
	return len(applied)
}

// survivesDapr reports whether r comes back unchanged from daprd, which
// stores every JSON number as the shortest form of its float64.
func survivesDapr(r *big.Rat) bool {
	f, err := strconv.ParseFloat(r.FloatString(4), 64)
	if err != nil {
		return false
	}
	back, ok := new(big.Rat).SetString(strconv.FormatFloat(f, 'f', -1, 64))
	return ok && back.Cmp(r) == 0
}

// requireExactNumber checks that a stored JSON number equals want exactly.
func requireExactNumber(t *testing.T, want *big.Rat, got json.Number, what string) {
	t.Helper()
	r, ok := new(big.Rat).SetString(string(got))
	require.True(t, ok, "%s: %q is not a number", what, got)
	require.Zero(t, want.Cmp(r), "%s: want %s, stored %s", what, want.FloatString(4), got)
}
