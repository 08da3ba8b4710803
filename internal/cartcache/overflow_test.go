package cartcache_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"math/big"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/money"
)

// The black-box overflow scenario: add-items of 100 lines, each 9,999 ×
// a price at external 10 %. money.Amount tops out at
// 922,337,203,685,477.5807.
const (
	overflowQty   = 9999
	overflowLines = 100
	overflowAdds  = 10
)

func overflowAdd(cartID, price string, n int) command.Command {
	items := make([]command.Item, overflowLines)
	for i := range items {
		items[i] = item("BIG"+strconv.Itoa(i), overflowQty, price, "01")
	}
	return addCmd("big-"+strconv.Itoa(n), cartID, items...)
}

// TestOverflowingAddItemIsRefusedAndChangesNothing: the add-items whose
// totals the cart can hold are applied with exact totals; one that would
// take a total past money.Amount's range, or to a value the state store
// would round, fails with ErrAmountOverflow and the stored document stays
// byte for byte (and ETag for ETag) what it was.
func TestOverflowingAddItemIsRefusedAndChangesNothing(t *testing.T) {
	tests := []struct {
		name  string
		price string
		// applied is how many of the ten add-items fit; why says what the
		// first refusal names.
		applied int
		why     string
	}{
		// Whole amounts: exact in a float64 up to 2^53, past Amount's
		// range. 8 × 99,990,000,000,000 with tax is 879,912,000,000,000; a
		// ninth would be 989,901,000,000,000.
		{name: "whole prices overflow on the ninth", price: "100000000", applied: 8, why: "total with tax: money: overflow"},
		// The black-box run's prices. Its first subtotal,
		// 99,989,999,999,900.01, comes back from a float64 (as daprd stores
		// it) as …900.02, so nothing can be stored exactly.
		{name: "black-box prices would be stored rounded", price: "99999999.9999", applied: 0, why: "99989999999900.01 would be stored rounded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, cartcache.Config{})
			e.apply(t, cacheCmd("c1", ""))

			price, ok := new(big.Rat).SetString(tt.price)
			require.True(t, ok)
			line := new(big.Rat).Mul(price, big.NewRat(overflowQty, 1))
			perAdd := new(big.Rat).Mul(line, big.NewRat(overflowLines, 1))
			limit := new(big.Rat).SetFrac(big.NewInt(math.MaxInt64), big.NewInt(10_000))

			applied := 0
			subtotal := new(big.Rat)
			for n := 1; n <= overflowAdds; n++ {
				next := new(big.Rat).Add(subtotal, perAdd)
				tax := floorRat(new(big.Rat).Mul(next, big.NewRat(1, 10)))
				withTax := new(big.Rat).Add(next, tax)
				fits := withTax.Cmp(limit) <= 0 && survivesFloat64(line) &&
					survivesFloat64(next) && survivesFloat64(tax) && survivesFloat64(withTax)

				before, _ := e.fake.Get("c1")
				add := overflowAdd("c1", tt.price, n)
				_, err := e.svc.Apply(context.Background(), add)
				if !fits {
					require.ErrorIs(t, err, cart.ErrAmountOverflow, "add-item %d", n)
					require.Contains(t, err.Error(), tt.why)
					e.requireOnlyRefusalRecorded(t, "c1", before, add.ID, command.CodeAmountOverflow)
					continue
				}
				require.NoError(t, err, "add-item %d", n)
				applied++
				subtotal = next

				c := e.exactCart(t, "c1")
				requireExact(t, subtotal, c["subtotal_amount"], "subtotal_amount")
				sales := c["sales"].(map[string]any)
				requireExact(t, subtotal, sales["total_amount"], "total_amount")
				requireExact(t, tax, sales["tax_amount"], "tax_amount")
				requireExact(t, withTax, sales["total_amount_with_tax"], "total_amount_with_tax")
				requireExact(t, withTax, c["balance_amount"], "balance_amount")
				require.Equal(t, json.Number(strconv.Itoa(applied*overflowLines*overflowQty)), sales["total_quantity"])
				taxes := c["taxes"].([]any)
				require.Len(t, taxes, 1)
				requireExact(t, subtotal, taxes[0].(map[string]any)["target_amount"], "target_amount")
				requireExact(t, tax, taxes[0].(map[string]any)["tax_amount"], "taxes[0].tax_amount")
				lines := c["line_items"].([]any)
				require.Len(t, lines, applied*overflowLines)
				requireExact(t, line, lines[len(lines)-1].(map[string]any)["amount"], "line amount")
			}
			require.Equal(t, tt.applied, applied)
			ids := e.cart(t, "c1")[cart.AppliedIDsField].([]any)
			require.Len(t, ids, 1+overflowAdds, "every add-item is handled, applied or refused")
			require.Len(t, e.cart(t, "c1")[cart.RejectedIDsField], overflowAdds-applied, "the refused ones with their code")
		})
	}
}

// TestTotalsExactUpToTheLimits: a cart stores exactly every whole total up
// to the largest Amount and every total with decimals under 2^39; one unit
// more is refused.
func TestTotalsExactUpToTheLimits(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	e.apply(t, cacheCmd("c1", `{"status":"EnteringItem","line_items":[
	  {"line_no":1,"item_code":"A","quantity":1,"unit_price":461168601842738,"amount":461168601842738,"tax_code":"00"},
	  {"line_no":2,"item_code":"B","quantity":1,"unit_price":461168601842738,"amount":461168601842738,"tax_code":"00"}]}`))
	e.apply(t, addCmd("a1", "c1", item("C", 1, "1", "00")))
	c := e.exactCart(t, "c1")
	require.Equal(t, json.Number("922337203685477"), c["subtotal_amount"])
	require.Equal(t, json.Number("922337203685477"), c["sales"].(map[string]any)["total_amount_with_tax"])
	require.Equal(t, json.Number("922337203685477"), c["balance_amount"])

	for _, tc := range []struct{ price, why string }{
		{"1", "money: overflow"},              // 922,337,203,685,478 is past the largest Amount
		{"0.0001", "would be stored rounded"}, // …477.0001 fits an Amount, not a float64
	} {
		before, _ := e.fake.Get("c1")
		_, err := e.svc.Apply(context.Background(), addCmd("over-"+tc.price, "c1", item("D", 1, tc.price, "00")))
		require.ErrorIs(t, err, cart.ErrAmountOverflow, tc.price)
		require.Contains(t, err.Error(), tc.why)
		e.requireOnlyRefusalRecorded(t, "c1", before, "over-"+tc.price, command.CodeAmountOverflow)
	}

	// With decimals, up to 2^39 whole units.
	e.apply(t, cacheCmd("c2", `{"status":"EnteringItem","line_items":[
	  {"line_no":1,"item_code":"A","quantity":1,"unit_price":549755813886.9999,"amount":549755813886.9999,"tax_code":"00"}]}`))
	e.apply(t, addCmd("a2", "c2", item("C", 1, "1", "00")))
	require.Equal(t, json.Number("549755813887.9999"), e.exactCart(t, "c2")["subtotal_amount"])
}

// TestLineAmountTheStoreWouldRoundIsRefused: a single valid line whose
// amount a float64 does not keep (99,999,999.9997 × 9,999 =
// 999,899,999,997.0003) is refused before anything is written.
func TestLineAmountTheStoreWouldRoundIsRefused(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	e.apply(t, cacheCmd("c1", ""))
	before, _ := e.fake.Get("c1")
	_, err := e.svc.Apply(context.Background(), addCmd("a1", "c1", item("A", 9999, "99999999.9997", "00")))
	require.ErrorIs(t, err, cart.ErrAmountOverflow)
	require.Contains(t, err.Error(), "line 1")
	require.Contains(t, err.Error(), "999899999997.0003 would be stored rounded")
	e.requireOnlyRefusalRecorded(t, "c1", before, "a1", command.CodeAmountOverflow)
}

// TestCacheWithOverflowingTotalsIsRefused: a cache command whose document
// has totals (or amounts) past money.Amount's range is ErrAmountOverflow,
// not ErrInvalidCart, and stores nothing.
func TestCacheWithOverflowingTotalsIsRefused(t *testing.T) {
	line := func(amount, qty, tax string, extra string) string {
		return `{"item_code":"X","quantity":` + qty + `,"unit_price":` + amount + `,"amount":` + amount +
			`,"tax_code":"` + tax + `"` + extra + `}`
	}
	doc := func(lines []string, rest string) string {
		return `{"status":"Idle","line_items":[` + strings.Join(lines, ",") + `]` + rest + `}`
	}
	half := "500000000000000" // two of them pass the limit
	tests := []struct {
		name string
		doc  string
	}{
		{"subtotal", doc([]string{line(half, "1", "00", ""), line(half, "1", "00", "")}, "")},
		{"total with tax", doc([]string{line("900000000000000", "1", "01", "")}, "")},
		{"tax target", doc([]string{line("-900000000000000", "1", "00", `,"discounts_allocated":[{"discount_amount":100000000000000}]`)}, "")},
		{"total after subtotal discounts", doc([]string{line("-900000000000000", "1", "00", "")}, `,"subtotal_discounts":[{"discount_amount":100000000000000}]`)},
		{"balance after payments", doc([]string{line("900000000000000", "1", "00", "")}, `,"payments":[{"amount":-100000000000000}]`)},
		{"total quantity", doc([]string{line("1", "9223372036854775807", "00", ""), line("1", "1", "00", "")}, "")},
		{"line amount beyond the range", doc([]string{line("1e20", "1", "00", "")}, "")},
		{"subtotal the store would round", doc([]string{line("799919999999200.08", "1", "00", "")}, "")},
		{"total quantity past 2^53", doc([]string{line("1", "9007199254740993", "00", "")}, "")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, cartcache.Config{})
			_, err := e.svc.Apply(context.Background(), cacheCmd("c1", tt.doc))
			require.ErrorIs(t, err, cart.ErrAmountOverflow)
			require.NotErrorIs(t, err, cart.ErrInvalidCart)
			_, stored := e.fake.Get("c1")
			require.False(t, stored, "a refused cache stored a cart")
			var ts cart.Tombstone
			require.NoError(t, json.Unmarshal(must(e.fake.Get(cartcache.TombstoneKey("c1"))), &ts))
			require.Equal(t, map[string]string{"cache-c1": command.CodeAmountOverflow}, ts.Rejected, "the refusal is recorded")

			// Over an existing cart: the cart stays as it was.
			e.apply(t, cacheCmd("c2", ""))
			before, _ := e.fake.Get("c2")
			recache := cacheCmd("c2", tt.doc)
			recache.ID = "recache"
			_, err = e.svc.Apply(context.Background(), recache)
			require.ErrorIs(t, err, cart.ErrAmountOverflow)
			e.requireOnlyRefusalRecorded(t, "c2", before, "recache", command.CodeAmountOverflow)
		})
	}
}

// TestTaxOverflowIsRefused: a tax that does not fit, from a rate no real
// table has, is ErrAmountOverflow too.
func TestTaxOverflowIsRefused(t *testing.T) {
	for _, typ := range []cart.TaxType{cart.TaxExternal, cart.TaxInternal} {
		t.Run(string(typ), func(t *testing.T) {
			table := cart.TaxTable{"99": {Code: "99", No: 1, Type: typ, Rate: money.FromUnits(math.MaxInt64 - 10), Name: "absurd"}}
			e := newEnv(t, cartcache.Config{TaxTable: table})
			_, err := e.svc.Apply(context.Background(), cacheCmd("c1", `{"line_items":[{"item_code":"X","quantity":1,"amount":1000,"tax_code":"99"}]}`))
			require.ErrorIs(t, err, cart.ErrAmountOverflow)
			_, stored := e.fake.Get("c1")
			require.False(t, stored)
		})
	}
}

// requireOnlyRefusalRecorded checks that refusing cmdID with code left the
// stored cart as before but for its history: the cart is exactly what it
// was, every field and every byte of its lines, and cmdID is its newest
// handled id, with code.
func (e *env) requireOnlyRefusalRecorded(t *testing.T, cartID string, before []byte, cmdID, code string) {
	t.Helper()
	after, ok := e.fake.Get(cartID)
	require.True(t, ok)
	history := []string{cart.AppliedIDsField, cart.RejectedIDsField, "updated_at"}
	strip := func(raw []byte) map[string]json.RawMessage {
		var m map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(raw, &m))
		for _, k := range history {
			delete(m, k)
		}
		return m
	}
	b, a := strip(before), strip(after)
	require.Equal(t, len(b), len(a), "fields")
	for k, v := range b {
		require.True(t, bytes.Equal(v, a[k]), "%s changed: %s -> %s", k, v, a[k])
	}
	c := e.cart(t, cartID)
	ids := c[cart.AppliedIDsField].([]any)
	require.Equal(t, cmdID, ids[len(ids)-1], "the refused id is recorded")
	require.Equal(t, code, c[cart.RejectedIDsField].(map[string]any)[cmdID], "with its code")
}

// exactCart reads the stored document with its numbers as written, so that
// totals compare exactly rather than as float64.
func (e *env) exactCart(t *testing.T, id string) map[string]any {
	t.Helper()
	raw, ok := e.fake.Get(id)
	require.True(t, ok, "cart %s not stored", id)
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	require.NoError(t, dec.Decode(&m))
	return m
}

// requireExact checks that a stored JSON number equals want exactly.
func requireExact(t *testing.T, want *big.Rat, got any, what string) {
	t.Helper()
	n, ok := got.(json.Number)
	require.True(t, ok, "%s is %T, not a number", what, got)
	r, ok := new(big.Rat).SetString(string(n))
	require.True(t, ok, "%s: %q", what, n)
	require.Zero(t, want.Cmp(r), "%s: want %s, stored %s", what, want.FloatString(4), n)
}

// floorRat is ⌊r⌋ for r ≥ 0.
func floorRat(r *big.Rat) *big.Rat {
	return new(big.Rat).SetInt(new(big.Int).Quo(r.Num(), r.Denom()))
}

// survivesFloat64 reports whether r comes back unchanged from a float64 and
// its shortest decimal form, as daprd stores JSON numbers. It is the test's
// own oracle, independent of package money.
func survivesFloat64(r *big.Rat) bool {
	f, err := strconv.ParseFloat(r.FloatString(4), 64)
	if err != nil {
		return false
	}
	back, ok := new(big.Rat).SetString(strconv.FormatFloat(f, 'f', -1, 64))
	return ok && back.Cmp(r) == 0
}
