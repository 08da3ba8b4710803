package cart_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/money"
)

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func item(code string, qty int, price, tax string) command.Item {
	p, err := money.Parse(price)
	if err != nil {
		panic(err) // test data only
	}
	return command.Item{ItemCode: code, Quantity: qty, UnitPrice: p, TaxCode: tax, Description: code}
}

func fresh(t *testing.T) *cart.Document {
	t.Helper()
	d, err := cart.Cache(command.Command{ID: "k1", Type: command.TypeCache, CartID: "c1"}, cart.DefaultTaxTable(), now)
	require.NoError(t, err)
	return d
}

func encode(t *testing.T, d *cart.Document) string {
	t.Helper()
	b, err := d.Encode(now)
	require.NoError(t, err)
	return string(b)
}

// A caller applying several commands to one document in memory refuses one
// and goes on with the next: the refused one must leave no trace, whatever
// step refused it.
func TestAddItemsRefusedLeavesTheCartAsItWas(t *testing.T) {
	table := cart.DefaultTaxTable()
	for name, items := range map[string][]command.Item{
		"unknown tax code on the second item": {item("A", 1, "10", "01"), item("B", 1, "10", "99")},
		"line amount past the int64 range":    {item("A", 9999, "99999999999999.9999", "01")},
		"line amount daprd would round":       {item("A", 1, "1234567890123.4567", "01")},
	} {
		t.Run(name, func(t *testing.T) {
			d := fresh(t)
			require.NoError(t, cart.AddItems(d, []command.Item{item("X", 2, "5", "01")}, table))
			before := encode(t, d)

			require.Error(t, cart.AddItems(d, items, table))
			require.Equal(t, before, encode(t, d))
			require.Equal(t, cart.StatusEnteringItem, d.Status())

			// The next command applies as if the refused one never came.
			require.NoError(t, cart.AddItems(d, []command.Item{item("Y", 1, "1", "00")}, table))
			var doc struct {
				Lines []struct {
					LineNo   int    `json:"line_no"`
					ItemCode string `json:"item_code"`
				} `json:"line_items"`
				Subtotal json.Number `json:"subtotal_amount"`
			}
			require.NoError(t, json.Unmarshal([]byte(encode(t, d)), &doc))
			require.Len(t, doc.Lines, 2)
			require.Equal(t, 2, doc.Lines[1].LineNo)
			require.Equal(t, "Y", doc.Lines[1].ItemCode)
			require.Equal(t, "11", doc.Subtotal.String())
		})
	}
}

// The status has one source of truth: what Status reports is what Encode
// writes, after any rule changed it.
func TestStatusHasOneSourceOfTruth(t *testing.T) {
	d := fresh(t)
	require.Equal(t, cart.StatusIdle, d.Status())
	require.Contains(t, encode(t, d), `"status":"Idle"`)

	require.NoError(t, cart.AddItems(d, []command.Item{item("A", 1, "1", "00")}, cart.DefaultTaxTable()))
	require.Equal(t, cart.StatusEnteringItem, d.Status())
	raw := encode(t, d)
	require.Contains(t, raw, `"status":"EnteringItem"`)

	back, err := cart.Parse([]byte(raw))
	require.NoError(t, err)
	require.Equal(t, cart.StatusEnteringItem, back.Status())
}

func TestApplyDispatch(t *testing.T) {
	table := cart.DefaultTaxTable()

	_, err := cart.Apply(nil, command.Command{Type: command.TypeAddItem, CartID: "c1", Items: []command.Item{item("A", 1, "1", "00")}}, table, now)
	require.ErrorIs(t, err, cart.ErrCartNotFound)

	paying, err := cart.Parse([]byte(`{"status":"Paying","line_items":[]}`))
	require.NoError(t, err)
	_, err = cart.Apply(paying, command.Command{Type: command.TypeAddItem, CartID: "c1", Items: []command.Item{item("A", 1, "1", "00")}}, table, now)
	require.ErrorIs(t, err, cart.ErrInvalidState)

	next, err := cart.Apply(fresh(t), command.Command{Type: command.TypeDelete, CartID: "c1"}, table, now)
	require.NoError(t, err)
	require.Nil(t, next, "a delete returns no cart")

	_, err = cart.Apply(fresh(t), command.Command{Type: "frobnicate", CartID: "c1"}, table, now)
	require.ErrorIs(t, err, cart.ErrUnknownType)
	require.NotErrorIs(t, err, cart.ErrInvalidCart)

	_, err = cart.Parse([]byte(`{"line_items":"not a list"}`))
	require.ErrorIs(t, err, cart.ErrInvalidCart)
}

// EncodedLen is what the size limit is checked on after every command of a
// batch: it must be the length Encode writes, exactly, whatever the cart
// holds (lines added since the read or not, odd spacing in the stored
// array, keys that need escaping, handled ids and codes).
func TestEncodedLenIsEncodesLength(t *testing.T) {
	table := cart.DefaultTaxTable()
	stored := []string{
		`{}`,
		`{"line_items":null}`,
		`{"line_items": [ ] ,"k\"ey":"v"}`,
		`{"line_items":[ {"quantity":1,"amount":2,"tax_code":"01"} ],"status":"EnteringItem","caf\u00e9":1}`,
	}
	for _, raw := range stored {
		d, err := cart.Parse([]byte(raw))
		require.NoError(t, err, raw)
		check := func(what string) {
			n, err := d.EncodedLen(now)
			require.NoError(t, err)
			b, err := d.Encode(now)
			require.NoError(t, err)
			require.Len(t, b, n, "%s: %s", what, raw)
			require.True(t, json.Valid(b), "%s: %s encodes as %s", what, raw, b)
		}
		check("as read")
		d.SetApplied([]string{"a", `"quoted"`})
		d.SetRejected(map[string]string{"a": "cart_too_large"})
		check("with handled ids")
		if d.Status() == "" {
			continue // AddItems refuses a cart with no status
		}
		require.NoError(t, cart.AddItems(d, []command.Item{item("X", 2, "5", "01"), item("Y", 1, "1", "00")}, table))
		check("after AddItems")
		require.NoError(t, cart.AddItems(d, []command.Item{item("Z", 1, "3", "01")}, table))
		check("after a second AddItems")
	}
}

// A Checkpoint puts back every line, total and status the AddItems after
// it changed, and the document encodes as it did before them.
func TestCheckpointPutsBackAddItems(t *testing.T) {
	table := cart.DefaultTaxTable()
	d := fresh(t)
	require.NoError(t, cart.AddItems(d, []command.Item{item("X", 2, "5", "01")}, table))
	before := encode(t, d)
	undo := d.Checkpoint()
	require.NoError(t, cart.AddItems(d, []command.Item{item("Y", 1, "1", "00")}, table))
	require.NoError(t, cart.AddItems(d, []command.Item{item("Z", 3, "7", "01")}, table))
	require.NotEqual(t, before, encode(t, d))
	undo()
	require.Equal(t, before, encode(t, d))
	// And the cart goes on from there.
	require.NoError(t, cart.AddItems(d, []command.Item{item("W", 1, "1", "00")}, table))
	require.Contains(t, encode(t, d), `"line_no":2,"item_code":"W"`)
}

// Parse keeps pointing into what it read rather than copying it; neither
// it nor Encode may write to it.
func TestParseAndEncodeLeaveTheReadBytesAlone(t *testing.T) {
	raw := []byte(`{"line_items":[{"line_no":1,"quantity":1,"amount":2,"tax_code":"01"}],"status":"EnteringItem","note":"x"}`)
	orig := string(raw)
	d, err := cart.Parse(raw)
	require.NoError(t, err)
	require.NoError(t, cart.AddItems(d, []command.Item{item("Y", 1, "1", "00")}, cart.DefaultTaxTable()))
	_ = encode(t, d)
	require.Equal(t, orig, string(raw))
	_, err = cart.Parse([]byte(`{"a":1} {"b":2}`))
	require.ErrorIs(t, err, cart.ErrInvalidCart, "trailing data is not a cart")
}
