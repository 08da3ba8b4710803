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
	sum, err := d.sumLines(table)
	if err != nil {
		return err
	}
	taxes, external, err := taxesOf(table, sum.groups)
	if err != nil {
		return err
	}
	t, err := d.totals(sum, external)
	if err != nil {
		return err
	}
	return d.writeTotals(t, taxes)
}

// taxGroup is the lines of one tax code: their taxable amount and quantity.
type taxGroup struct {
	target money.Amount
	qty    int
}

// lineSums are the sums over the lines that are not cancelled.
type lineSums struct {
	subtotal money.Amount
	qty      int
	groups   map[string]*taxGroup
}

// sumLines sums the lines that are not cancelled: the subtotal, the
// quantity, and by tax code the amount taxed (after the discounts
// allocated to each line) and its quantity. A line with a tax code the
// table does not have is ErrUnknownTaxCode.
func (d *Document) sumLines(table TaxTable) (lineSums, error) {
	sum := lineSums{groups: map[string]*taxGroup{}}
	var err error
	for i, l := range d.views {
		if l.IsCancelled {
			continue
		}
		line := i + 1
		if sum.subtotal, err = addAmount(sum.subtotal, l.Amount, "subtotal"); err != nil {
			return lineSums{}, err
		}
		if sum.qty, err = addQuantity(sum.qty, l.Quantity, "total quantity"); err != nil {
			return lineSums{}, err
		}
		target := l.Amount
		for _, a := range l.DiscountsAllocated {
			if target, err = subAmount(target, a.Amount, "tax target"); err != nil {
				return lineSums{}, fmt.Errorf("line %d: %w", line, err)
			}
		}
		if _, ok := table[l.TaxCode]; !ok {
			return lineSums{}, fmt.Errorf("%w: %q on line %d", ErrUnknownTaxCode, l.TaxCode, line)
		}
		g := sum.groups[l.TaxCode]
		if g == nil {
			g = &taxGroup{}
			sum.groups[l.TaxCode] = g
		}
		if g.target, err = addAmount(g.target, target, "tax target"); err != nil {
			return lineSums{}, fmt.Errorf("tax code %q: %w", l.TaxCode, err)
		}
		if g.qty, err = addQuantity(g.qty, l.Quantity, "tax target quantity"); err != nil {
			return lineSums{}, fmt.Errorf("tax code %q: %w", l.TaxCode, err)
		}
	}
	return sum, nil
}

// taxesOf computes the tax of each group, in the table's order, and the sum
// of the external ones, which is added to the total (internal taxes are
// inside the prices).
func taxesOf(table TaxTable, groups map[string]*taxGroup) (taxes []Tax, external money.Amount, err error) {
	codes := make([]string, 0, len(groups))
	for c := range groups {
		codes = append(codes, c)
	}
	sort.Slice(codes, func(i, j int) bool { return table[codes[i]].No < table[codes[j]].No })
	taxes = make([]Tax, 0, len(codes))
	for _, c := range codes {
		r, g := table[c], groups[c]
		amt, err := r.amount(g.target)
		if err != nil {
			return nil, money.Amount{}, err
		}
		if r.Type == TaxExternal {
			if external, err = addAmount(external, amt, "tax amount"); err != nil {
				return nil, money.Amount{}, err
			}
		}
		if err := storable(g.target, "tax target"); err != nil {
			return nil, money.Amount{}, fmt.Errorf("tax code %q: %w", c, err)
		}
		if err := storable(amt, "tax"); err != nil {
			return nil, money.Amount{}, fmt.Errorf("tax code %q: %w", c, err)
		}
		if err := storableQuantity(g.qty, "tax target quantity"); err != nil {
			return nil, money.Amount{}, fmt.Errorf("tax code %q: %w", c, err)
		}
		taxes = append(taxes, Tax{
			TaxNo: r.No, TaxCode: c, TaxType: r.Type, TaxName: r.Name,
			TaxAmount: amt, TargetAmount: g.target, TargetQuantity: g.qty,
		})
	}
	return taxes, external, nil
}

// cartTotals are the totals recompute writes.
type cartTotals struct {
	subtotal, total, external, withTax, balance money.Amount
	qty                                         int
}

// totals computes the total (the subtotal less the subtotal discounts), the
// total with the external taxes, and the balance left after the payments,
// and checks that each can be stored exactly.
func (d *Document) totals(sum lineSums, external money.Amount) (cartTotals, error) {
	t := cartTotals{subtotal: sum.subtotal, total: sum.subtotal, external: external, qty: sum.qty}
	var subDiscounts []discount
	if err := d.decodeField("subtotal_discounts", &subDiscounts); err != nil {
		return cartTotals{}, err
	}
	var err error
	for _, s := range subDiscounts {
		if t.total, err = subAmount(t.total, s.Amount, "total"); err != nil {
			return cartTotals{}, err
		}
	}
	var payments []payment
	if err := d.decodeField("payments", &payments); err != nil {
		return cartTotals{}, err
	}
	if t.withTax, err = addAmount(t.total, external, "total with tax"); err != nil {
		return cartTotals{}, err
	}
	t.balance = t.withTax
	for _, p := range payments {
		if t.balance, err = subAmount(t.balance, p.Amount, "balance"); err != nil {
			return cartTotals{}, err
		}
	}
	for _, v := range [...]struct {
		what string
		a    money.Amount
	}{
		{"subtotal", t.subtotal}, {"total", t.total}, {"tax amount", t.external},
		{"total with tax", t.withTax}, {"balance", t.balance},
	} {
		if err := storable(v.a, v.what); err != nil {
			return cartTotals{}, err
		}
	}
	if err := storableQuantity(t.qty, "total quantity"); err != nil {
		return cartTotals{}, err
	}
	return t, nil
}

// writeTotals sets the fields recompute rewrites.
func (d *Document) writeTotals(t cartTotals, taxes []Tax) error {
	// sales carries fields this package does not model (change_amount,
	// is_cancelled, ...): merge into it rather than replacing it.
	sales := map[string]json.RawMessage{}
	if err := d.decodeField("sales", &sales); err != nil {
		return err
	}
	for k, v := range map[string]any{
		"total_amount":          t.total,
		"tax_amount":            t.external,
		"total_amount_with_tax": t.withTax,
		"total_quantity":        t.qty,
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
	if err := d.set("subtotal_amount", t.subtotal); err != nil {
		return err
	}
	return d.set("balance_amount", t.balance)
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
