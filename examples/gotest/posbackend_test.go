package posbackend_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cartworker/cartworker/cartworkertest"
	"github.com/cartworker/cartworker/money"

	"example.com/posbackend"
)

// The stack's workers run in this test's process: nothing of theirs may
// outlive Terminate.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A till opens a cart and scans three items; cartworker stores the cart
// with exact totals, read back through daprd.
func TestTillTotals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := cartworkertest.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Terminate(context.Background()); err != nil {
			t.Error(err)
		}
	})

	till := posbackend.NewTill(st.Publisher(), "T1", "S1", 7)
	const cart = "till-7-0001"
	if err := till.Open(ctx, cart); err != nil {
		t.Fatal(err)
	}
	for _, scan := range []struct {
		item         string
		qty          int
		price, taxes string
	}{
		{"COFFEE", 2, "120", "01"}, // 10 % on top: 24
		{"BREAD", 1, "450", "11"},  // 8 % on top: 36
		{"STAMP", 1, "84", "00"},   // exempt
	} {
		if err := till.Scan(ctx, cart, scan.item, scan.qty, scan.price, scan.taxes); err != nil {
			t.Fatal(err)
		}
	}

	got, err := st.Cart(ctx, cart)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct{ got, want money.Amount }{
		"subtotal":       {got.SubtotalAmount, money.FromInt(774)},
		"tax":            {got.Sales.TaxAmount, money.FromInt(60)},
		"total with tax": {got.Sales.TotalAmountWithTax, money.FromInt(834)},
	}
	for name, v := range want {
		if v.got != v.want {
			t.Errorf("%s: got %s, want %s", name, v.got, v.want)
		}
	}
	if got.Sales.TotalQuantity != 4 || len(got.LineItems) != 3 || got.TerminalNo != 7 {
		t.Errorf("quantity %d, %d lines, terminal %d; want 4, 3, 7", got.Sales.TotalQuantity, len(got.LineItems), got.TerminalNo)
	}
}
