//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// TestContractEndToEnd drives one cart through the whole wire contract with
// an in-process worker on the shared stack, checking the stored document
// through Dapr and in Redis.
func TestContractEndToEnd(t *testing.T) {
	ctx := testkit.Context(t, 3*time.Minute)
	st := sharedStack(t)
	b := connectBus(ctx, t, st.NATSURL())
	w := inProcessWorker(t, st, "contract", nil)
	b.waitConsumer(ctx, t)
	cart := newCartIDs("contract", 1)[0]

	// cache creates the cart.
	cacheEv, err := b.pub.PublishAndWait(ctx, publisher.CacheCommand(cart, publisher.NewCart{TenantID: "T1", StoreCode: "S1", TerminalNo: 7}))
	require.NoError(t, err)
	require.Equal(t, command.OutcomeApplied, cacheEv.Outcome)
	require.False(t, cacheEv.Duplicate)

	// add-item, three lines over three tax codes.
	items := []command.Item{
		{ItemCode: "ITEM-A", Quantity: 2, UnitPrice: money.FromInt(120), Description: "Coffee", TaxCode: "01"},
		{ItemCode: "ITEM-B", Quantity: 1, UnitPrice: money.FromInt(1100), Description: "Wine", TaxCode: "02"},
		{ItemCode: "ITEM-C", Quantity: 3, UnitPrice: money.FromInt(333), Description: "Bread", TaxCode: "11"},
	}
	var adds []command.Command
	for _, it := range items {
		cmd := publisher.AddItemCommand(cart, it)
		cmd.ID = "add-" + randomHex(6)
		ev, err := b.pub.PublishAndWait(ctx, cmd)
		require.NoError(t, err, "add-item %s", it.ItemCode)
		require.Equal(t, command.Event{CommandID: cmd.ID, Type: command.TypeAddItem, CartID: cart, Outcome: command.OutcomeApplied}, ev)
		adds = append(adds, cmd)
	}

	// The cart read back through Dapr, as upstream reads it.
	d := readCart(ctx, t, st, cart)
	require.NotEmpty(t, d.ETag, "Dapr answers a stored cart with an ETag")
	requireSnakeCase(t, d.Raw)
	require.Equal(t, cart, d.CartID)
	require.Equal(t, "T1", d.TenantID)
	require.Equal(t, "S1", d.StoreCode)
	require.Equal(t, 7, d.TerminalNo)
	require.Equal(t, "EnteringItem", d.Status)
	require.Len(t, d.LineItems, 3)
	for i, line := range d.LineItems {
		require.Equal(t, i+1, line.LineNo)
		require.Equal(t, items[i].ItemCode, line.ItemCode)
		require.Equal(t, items[i].Quantity, line.Quantity)
		require.Equal(t, items[i].TaxCode, line.TaxCode)
		require.Equal(t, items[i].Description, line.Description)
		require.False(t, line.IsCancelled)
	}
	require.Equal(t, []money.Amount{money.FromInt(240), money.FromInt(1100), money.FromInt(999)},
		[]money.Amount{d.LineItems[0].Amount, d.LineItems[1].Amount, d.LineItems[2].Amount})
	require.Equal(t, money.FromInt(2339), d.SubtotalAmount)
	require.Equal(t, money.FromInt(2339), d.Sales.TotalAmount)
	require.Equal(t, money.FromInt(103), d.Sales.TaxAmount, "external taxes only: 24 + 79")
	require.Equal(t, money.FromInt(2442), d.Sales.TotalAmountWithTax)
	require.Equal(t, 6, d.Sales.TotalQuantity)
	require.Equal(t, money.FromInt(2442), d.BalanceAmount)
	require.Len(t, d.Taxes, 3)
	type tax struct {
		No               int
		Code, Type       string
		Amount, Target   money.Amount
		TargetQuantities int
	}
	var taxes []tax
	for _, x := range d.Taxes {
		taxes = append(taxes, tax{x.TaxNo, x.TaxCode, x.TaxType, x.TaxAmount, x.TargetAmount, x.TargetQuantity})
		require.NotEmpty(t, x.TaxName)
	}
	require.Equal(t, []tax{
		{2, "01", "External", money.FromInt(24), money.FromInt(240), 2},
		{3, "02", "Internal", money.FromInt(100), money.FromInt(1100), 1},
		{4, "11", "External", money.FromInt(79), money.FromInt(999), 3},
	}, taxes)
	require.Equal(t, []string{cacheEv.CommandID, adds[0].ID, adds[1].ID, adds[2].ID}, d.AppliedCommandIDs)

	// The same document in Redis, under daprd's app-id prefix, with the
	// component's store-wide TTL.
	key := redisKey(cart)
	require.Equal(t, "1", st.redisCLI(ctx, t, "EXISTS", key), "key %q in Redis DB %s", key, redisDB)
	require.Equal(t, "0", st.redisCLI(ctx, t, "EXISTS", cart), "no key without the app-id prefix")
	require.JSONEq(t, string(d.Raw), st.redisCLI(ctx, t, "HGET", key, "data"))
	requireTTL(t, st.redisCLI(ctx, t, "TTL", key), 36000)

	// Valid commands the cart refuses are rejected, not dead-lettered.
	badTax := publisher.AddItemCommand(cart, command.Item{ItemCode: "X", Quantity: 1, UnitPrice: money.FromInt(1), TaxCode: "99"})
	badTax.ID = "bad-tax-" + randomHex(6)
	_, err = b.pub.PublishAndWait(ctx, badTax)
	requireRejected(t, err, "unknown_tax_code")
	// Commands apply in stream order, so an add-item with no cache of its
	// cart before it can never find one: it is rejected at its first
	// delivery (the metrics below count no retry).
	_, err = b.pub.PublishAndWait(ctx, publisher.AddItemCommand(cart+"-ghost",
		command.Item{ItemCode: "X", Quantity: 1, UnitPrice: money.FromInt(1), TaxCode: "01"}))
	requireRejected(t, err, command.CodeCartNotFound)

	// delete removes the cart and leaves a tombstone with its history.
	delEv, err := b.pub.PublishAndWait(ctx, publisher.DeleteCommand(cart))
	require.NoError(t, err)
	require.Equal(t, command.OutcomeApplied, delEv.Outcome)
	require.False(t, delEv.Duplicate)
	_, status, err := daprGet(ctx, st.DaprHTTPEndpoint(), st.DaprToken(), cart)
	require.ErrorIs(t, err, statepool.ErrNotFound)
	require.Equal(t, http.StatusNoContent, status, "Dapr answers 204 for a deleted cart: %v", err)
	tomb, _, err := daprGet(ctx, st.DaprHTTPEndpoint(), st.DaprToken(), cart+":tombstone")
	require.NoError(t, err, "tombstone")
	var ts struct {
		CartID    string            `json:"cart_id"`
		DeletedBy string            `json:"deleted_by"`
		DeletedAt string            `json:"deleted_at"`
		Applied   []string          `json:"applied_command_ids"`
		Rejected  map[string]string `json:"rejected_command_ids"`
	}
	require.NoError(t, json.Unmarshal(tomb.Value, &ts))
	require.Equal(t, cart, ts.CartID)
	require.Equal(t, delEv.CommandID, ts.DeletedBy)
	require.NotEmpty(t, ts.DeletedAt)
	// Every command the cart handled, in order, the refused one too, with
	// its code: a replay of it is refused alike.
	require.Equal(t, []string{cacheEv.CommandID, adds[0].ID, adds[1].ID, adds[2].ID, badTax.ID, delEv.CommandID}, ts.Applied)
	require.Equal(t, map[string]string{badTax.ID: command.CodeUnknownTaxCode}, ts.Rejected)
	requireTTL(t, st.redisCLI(ctx, t, "TTL", redisKey(cart+":tombstone")), 3600)

	// An old add-item published again past JetStream's de-duplication (new
	// Nats-Msg-Id) is recognised from the tombstone: applied, duplicate,
	// and the cart stays deleted.
	require.NoError(t, b.republish(ctx, adds[0], adds[0].ID+"-again"))
	dup := b.events.waitFor(ctx, t, cart, adds[0].ID, func(ev command.Event) bool { return ev.Duplicate })
	require.Equal(t, command.OutcomeApplied, dup.Outcome)
	_, status, err = daprGet(ctx, st.DaprHTTPEndpoint(), st.DaprToken(), cart)
	require.ErrorIs(t, err, statepool.ErrNotFound)
	require.Equal(t, http.StatusNoContent, status, "the duplicate resurrected the cart: %v", err)
	nonDup := 0
	for _, ev := range b.events.of(cart, adds[0].ID) {
		if !ev.Duplicate {
			nonDup++
		}
	}
	require.Equal(t, 1, nonDup, "exactly one non-duplicate applied event for %s", adds[0].ID)

	// A malformed command is dead-lettered with its code and rejected.
	badID := "bad-" + randomHex(4)
	badSubject := b.subj.Command(cart, command.TypeAddItem)
	require.NoError(t, b.publishRaw(ctx, badSubject, []byte(`{"id":`), badID))
	rej := b.events.waitFor(ctx, t, cart, badID, func(command.Event) bool { return true })
	require.Equal(t, command.OutcomeRejected, rej.Outcome)
	require.NotNil(t, rej.Error)
	require.Equal(t, command.CodeMalformedJSON, rej.Error.Code)
	dlqStream, err := b.js.Stream(ctx, command.StreamDeadLetters)
	require.NoError(t, err)
	dl, err := dlqStream.GetLastMsgForSubject(ctx, b.subj.DeadLetter(cart, string(command.TypeAddItem)))
	require.NoError(t, err, "dead letter of the malformed command")
	require.Equal(t, `{"id":`, string(dl.Data))
	require.Equal(t, command.CodeMalformedJSON, dl.Header.Get(command.HeaderDLQCode))
	require.Equal(t, badSubject, dl.Header.Get(command.HeaderDLQSubject))
	require.Equal(t, "1", dl.Header.Get(command.HeaderDLQDeliveries))
	require.NotEmpty(t, dl.Header.Get(command.HeaderDLQReason))

	// The worker counted it all.
	m := w.metrics(t)
	require.Equal(t, 1.0, m.get(t, "cartworker_dead_letters_total"))
	require.Equal(t, 5.0, m.get(t, "cartworker_commands_total", "outcome", "applied"), "cache, 3 add-items, delete")
	require.Equal(t, 1.0, m.get(t, "cartworker_commands_total", "outcome", "duplicate"))
	require.Equal(t, 2.0, m.get(t, "cartworker_commands_total", "outcome", "rejected"))
	require.Zero(t, valueOr(m, "cartworker_commands_total", "outcome", "retry"), "nothing waited for a cart")
	require.Zero(t, m.get(t, "cartworker_redeliveries_total"))
	require.Equal(t, 0.0, m.get(t, "cartworker_breaker_state"))
	// The operators' gauges, from the real process against real daprd.
	require.Equal(t, 1.0, m.get(t, "cartworker_ready"))
	require.Equal(t, 1.0, m.get(t, "cartworker_build_info"))
	require.Zero(t, m.get(t, "cartworker_inflight_commands"), "everything settled")
	require.Positive(t, m.get(t, "cartworker_state_request_duration_seconds_count", "op", "save"))
	poll(ctx, t, 15*time.Second, "CART_DLQ depth sampled with the dead letter in it", func() error {
		if v, _ := w.metrics(t).value("cartworker_dead_letter_stream_messages"); v < 1 {
			return fmt.Errorf("cartworker_dead_letter_stream_messages %v", v)
		}
		return nil
	})
	code, err := w.readyz()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
}

// requireSnakeCase checks that the stored document and its lines use
// upstream's snake_case keys.
func requireSnakeCase(t *testing.T, body []byte) {
	t.Helper()
	var doc map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(body, &doc))
	for _, k := range []string{
		"cart_id", "tenant_id", "store_code", "terminal_no", "status", "line_items", "taxes", "sales",
		"subtotal_amount", "balance_amount", "payments", "subtotal_discounts", "created_at", "updated_at",
		"applied_command_ids",
	} {
		require.Contains(t, doc, k)
	}
	for k := range doc {
		require.Equal(t, strings.ToLower(k), k, "key %q is not snake_case", k)
	}
	var lines []map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(doc["line_items"], &lines))
	require.NotEmpty(t, lines)
	for _, k := range []string{
		"line_no", "item_code", "category_code", "description", "description_short", "unit_price",
		"unit_price_original", "is_unit_price_changed", "quantity", "discounts", "discounts_allocated",
		"amount", "tax_code", "is_cancelled", "item_details", "image_urls", "is_discount_restricted",
	} {
		require.Contains(t, lines[0], k)
	}
	var sales map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(doc["sales"], &sales))
	for _, k := range []string{"total_amount", "total_amount_with_tax", "tax_amount", "total_quantity"} {
		require.Contains(t, sales, k)
	}
}

func requireRejected(t *testing.T, err error, code string) {
	t.Helper()
	var rej *publisher.RejectedError
	require.ErrorAs(t, err, &rej)
	require.Equal(t, code, rej.Code, rej.Message)
}

// requireTTL checks a Redis TTL reply: the key expires, within max seconds.
func requireTTL(t *testing.T, reply string, max int) {
	t.Helper()
	ttl, err := strconv.Atoi(reply)
	require.NoError(t, err, "TTL reply %q", reply)
	require.Greater(t, ttl, 0, "key must expire")
	require.LessOrEqual(t, ttl, max)
}
