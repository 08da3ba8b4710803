package cart

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/cartworker/cartworker/money"
	sjson "github.com/segmentio/encoding/json"
)

// recomputed lists the fields recompute rewrites.
var recomputed = []string{"sales", "taxes", "subtotal_amount", "balance_amount"}

// recompute rewrites taxes, subtotal, sales totals and balance from the lines,
// the subtotal discounts and the payments, following upstream's rules. Every
// sum is checked: a total that does not fit money.Amount, that the store
// would round (see storable) or a quantity sum that does not fit fails with
// ErrAmountOverflow before anything is written, so no stored total is ever
// wrong.
func (d *Document) recompute(table TaxTable) error {
	type group struct {
		target money.Amount
		qty    int
	}
	groups := map[string]*group{}
	var (
		subtotal money.Amount
		qty      int
		err      error
	)
	for i, l := range d.views {
		if l.IsCancelled {
			continue
		}
		line := i + 1
		if subtotal, err = addAmount(subtotal, l.Amount, "subtotal"); err != nil {
			return err
		}
		if qty, err = addQuantity(qty, l.Quantity, "total quantity"); err != nil {
			return err
		}
		target := l.Amount
		for _, a := range l.DiscountsAllocated {
			if target, err = subAmount(target, a.Amount, "tax target"); err != nil {
				return fmt.Errorf("line %d: %w", line, err)
			}
		}
		if _, ok := table[l.TaxCode]; !ok {
			return fmt.Errorf("%w: %q on line %d", ErrUnknownTaxCode, l.TaxCode, line)
		}
		g := groups[l.TaxCode]
		if g == nil {
			g = &group{}
			groups[l.TaxCode] = g
		}
		if g.target, err = addAmount(g.target, target, "tax target"); err != nil {
			return fmt.Errorf("tax code %q: %w", l.TaxCode, err)
		}
		if g.qty, err = addQuantity(g.qty, l.Quantity, "tax target quantity"); err != nil {
			return fmt.Errorf("tax code %q: %w", l.TaxCode, err)
		}
	}
	codes := make([]string, 0, len(groups))
	for c := range groups {
		codes = append(codes, c)
	}
	sort.Slice(codes, func(i, j int) bool { return table[codes[i]].No < table[codes[j]].No })
	taxes := make([]Tax, 0, len(codes))
	var external money.Amount
	for _, c := range codes {
		r, g := table[c], groups[c]
		amt, err := r.amount(g.target)
		if err != nil {
			return err
		}
		if r.Type == TaxExternal {
			if external, err = addAmount(external, amt, "tax amount"); err != nil {
				return err
			}
		}
		if err := storable(g.target, "tax target"); err != nil {
			return fmt.Errorf("tax code %q: %w", c, err)
		}
		if err := storable(amt, "tax"); err != nil {
			return fmt.Errorf("tax code %q: %w", c, err)
		}
		if err := storableQuantity(g.qty, "tax target quantity"); err != nil {
			return fmt.Errorf("tax code %q: %w", c, err)
		}
		taxes = append(taxes, Tax{
			TaxNo: r.No, TaxCode: c, TaxType: r.Type, TaxName: r.Name,
			TaxAmount: amt, TargetAmount: g.target, TargetQuantity: g.qty,
		})
	}

	var subDiscounts []discount
	if err := d.decodeField("subtotal_discounts", &subDiscounts); err != nil {
		return err
	}
	total := subtotal
	for _, s := range subDiscounts {
		if total, err = subAmount(total, s.Amount, "total"); err != nil {
			return err
		}
	}
	var payments []payment
	if err := d.decodeField("payments", &payments); err != nil {
		return err
	}
	withTax, err := addAmount(total, external, "total with tax")
	if err != nil {
		return err
	}
	balance := withTax
	for _, p := range payments {
		if balance, err = subAmount(balance, p.Amount, "balance"); err != nil {
			return err
		}
	}

	for _, v := range [...]struct {
		what string
		a    money.Amount
	}{
		{"subtotal", subtotal}, {"total", total}, {"tax amount", external},
		{"total with tax", withTax}, {"balance", balance},
	} {
		if err := storable(v.a, v.what); err != nil {
			return err
		}
	}
	if err := storableQuantity(qty, "total quantity"); err != nil {
		return err
	}

	// sales carries fields this package does not model (change_amount,
	// is_cancelled, ...): merge into it rather than replacing it.
	sales := map[string]json.RawMessage{}
	if err := d.decodeField("sales", &sales); err != nil {
		return err
	}
	for k, v := range map[string]any{
		"total_amount":          total,
		"tax_amount":            external,
		"total_amount_with_tax": withTax,
		"total_quantity":        qty,
	} {
		b, err := sjson.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode sales.%s: %w", k, err)
		}
		sales[k] = b
	}
	if err := d.set("sales", sales); err != nil {
		return err
	}
	if err := d.set("taxes", taxes); err != nil {
		return err
	}
	if err := d.set("subtotal_amount", subtotal); err != nil {
		return err
	}
	return d.set("balance_amount", balance)
}

// addAmount returns a + b, or ErrAmountOverflow naming the total it was
// computing. what is a constant: building it per line would allocate on the
// hot path.
func addAmount(a, b money.Amount, what string) (money.Amount, error) {
	s, err := a.AddChecked(b)
	if err != nil {
		return money.Amount{}, fmt.Errorf("%w: %s: %w", ErrAmountOverflow, what, err)
	}
	return s, nil
}

// subAmount returns a − b, or ErrAmountOverflow naming the total it was
// computing.
func subAmount(a, b money.Amount, what string) (money.Amount, error) {
	s, err := a.SubChecked(b)
	if err != nil {
		return money.Amount{}, fmt.Errorf("%w: %s: %w", ErrAmountOverflow, what, err)
	}
	return s, nil
}

// addQuantity returns a + b, or ErrAmountOverflow when the sum does not fit
// an int. Stored quantities come from cached documents and are not bounded
// by command validation.
func addQuantity(a, b int, what string) (int, error) {
	s := a + b
	if (s > a) != (b > 0) {
		return 0, fmt.Errorf("%w: %s: %d + %d", ErrAmountOverflow, what, a, b)
	}
	return s, nil
}

// maxExactQuantity is the largest integer a float64 holds exactly, 2^53.
const maxExactQuantity = 1 << 53

// storable refuses, with ErrAmountOverflow, an amount the cart document
// cannot hold exactly although money.Amount can. daprd's state API decodes
// every JSON number it saves into a float64 and stores that (daprd 1.18
// turns 799919999999200.08 into 799919999999200.1 in Redis), and upstream
// reads them as Python floats: past 2^39 (about 550 billion) a total with
// decimals may come back rounded. No real cart gets near; a cart that does
// is refused rather than stored wrong.
func storable(a money.Amount, what string) error {
	if a.Float64Exact() {
		return nil
	}
	return fmt.Errorf("%w: %s %s would be stored rounded: it has more digits than a float64, as daprd and upstream hold numbers, keeps",
		ErrAmountOverflow, what, a)
}

// storableQuantity is storable for a quantity sum.
func storableQuantity(q int, what string) error {
	if v := int64(q); v <= maxExactQuantity && v >= -maxExactQuantity {
		return nil
	}
	return fmt.Errorf("%w: %s %d would be stored rounded: it is past 2^53, the last integer a float64 keeps exactly",
		ErrAmountOverflow, what, q)
}
