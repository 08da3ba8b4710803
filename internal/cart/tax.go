package cart

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/cartworker/cartworker/money"
)

// TaxType says how a rate applies to a line's amount.
type TaxType string

// The tax types, spelled as upstream stores them.
const (
	// TaxExternal is added on top of the price: target × rate / 100.
	TaxExternal TaxType = "External"
	// TaxInternal is already inside the price: target / (1 + rate/100) × rate / 100.
	TaxInternal TaxType = "Internal"
	// TaxExempt is never charged.
	TaxExempt TaxType = "Exempt"
)

// TaxRule is one row of the tax table.
type TaxRule struct {
	Code string
	No   int
	Type TaxType
	// Rate is a percentage: 10 means 10 %.
	Rate money.Amount
	Name string
}

// TaxTable maps tax_code to its rule.
type TaxTable map[string]TaxRule

// DefaultTaxTable is upstream's default table. Its String is the default of
// CART_TAX_TABLE, and ParseTaxTable gives this very table back: every name
// comes from taxName, so a worker on the default table writes the same
// tax_name values whether it was given the table or parsed it.
func DefaultTaxTable() TaxTable {
	t := TaxTable{}
	for _, r := range []TaxRule{
		{Code: "00", No: 1, Type: TaxExempt, Rate: money.FromInt(0)},
		{Code: "01", No: 2, Type: TaxExternal, Rate: money.FromInt(10)},
		{Code: "02", No: 3, Type: TaxInternal, Rate: money.FromInt(10)},
		{Code: "11", No: 4, Type: TaxExternal, Rate: money.FromInt(8)},
		{Code: "12", No: 5, Type: TaxInternal, Rate: money.FromInt(8)},
	} {
		r.Name = taxName(r.Type, r.Rate)
		t[r.Code] = r
	}
	return t
}

// taxName is the one naming rule for tax rules, upstream's form: "External
// 10%", "Exempt 0%".
func taxName(typ TaxType, rate money.Amount) string {
	return fmt.Sprintf("%s %s%%", typ, rate)
}

// ParseTaxTable reads "code:type:rate[,code:type:rate...]", for example
// "00:exempt:0,01:external:10,02:internal:10". Tax numbers follow the order
// given. It is the format of CART_TAX_TABLE.
func ParseTaxTable(s string) (TaxTable, error) {
	t := TaxTable{}
	for i, entry := range strings.Split(s, ",") {
		parts := strings.Split(strings.TrimSpace(entry), ":")
		if len(parts) != 3 {
			return nil, fmt.Errorf("tax entry %q: want code:type:rate", entry)
		}
		code, typ := parts[0], taxType(parts[1])
		if code == "" {
			return nil, fmt.Errorf("tax entry %q: empty code", entry)
		}
		if typ != TaxExternal && typ != TaxInternal && typ != TaxExempt {
			return nil, fmt.Errorf("tax entry %q: type must be external, internal or exempt", entry)
		}
		rate, err := money.Parse(parts[2])
		if err != nil || rate.IsNegative() {
			return nil, fmt.Errorf("tax entry %q: rate must be a non-negative number", entry)
		}
		if _, dup := t[code]; dup {
			return nil, fmt.Errorf("tax entry %q: duplicate code", entry)
		}
		t[code] = TaxRule{Code: code, No: i + 1, Type: typ, Rate: rate, Name: taxName(typ, rate)}
	}
	return t, nil
}

// Set parses s with ParseTaxTable into t, so that a TaxTable is a
// flag.Value: a bad table is refused where it is given.
func (t *TaxTable) Set(s string) error {
	parsed, err := ParseTaxTable(s)
	if err != nil {
		return err
	}
	*t = parsed
	return nil
}

// String formats t in ParseTaxTable's format, ordered by tax number.
func (t TaxTable) String() string {
	rules := make([]TaxRule, 0, len(t))
	for _, r := range t {
		rules = append(rules, r)
	}
	sort.Slice(rules, func(i, j int) bool { return rules[i].No < rules[j].No })
	parts := make([]string, len(rules))
	for i, r := range rules {
		parts[i] = r.Code + ":" + strings.ToLower(string(r.Type)) + ":" + r.Rate.String()
	}
	return strings.Join(parts, ",")
}

// Tax is one entry of a cart's taxes[].
type Tax struct {
	TaxNo          int          `json:"tax_no"`
	TaxCode        string       `json:"tax_code"`
	TaxType        TaxType      `json:"tax_type"`
	TaxName        string       `json:"tax_name"`
	TaxAmount      money.Amount `json:"tax_amount"`
	TargetAmount   money.Amount `json:"target_amount"`
	TargetQuantity int          `json:"target_quantity"`
}

// taxType accepts any case: "external" and "External" are the same type.
func taxType(s string) TaxType {
	for _, t := range []TaxType{TaxExternal, TaxInternal, TaxExempt} {
		if strings.EqualFold(s, string(t)) {
			return t
		}
	}
	return TaxType(s)
}

var hundred = money.FromInt(100)

// amount returns the tax on target under r, floored to whole units. A tax
// that does not fit money.Amount is ErrAmountOverflow.
func (r TaxRule) amount(target money.Amount) (money.Amount, error) {
	var (
		t   money.Amount
		err error
	)
	switch r.Type {
	case TaxExternal:
		t, err = target.MulDivFloor(r.Rate, hundred)
	case TaxInternal:
		// target / (1 + rate/100) × rate / 100 == target × rate / (100 + rate),
		// which keeps the arithmetic exact.
		var den money.Amount
		if den, err = hundred.AddChecked(r.Rate); err == nil {
			t, err = target.MulDivFloor(r.Rate, den)
		}
	default:
		return money.Amount{}, nil
	}
	if err == nil {
		t, err = t.Floor()
	}
	switch {
	case errors.Is(err, money.ErrOverflow):
		return money.Amount{}, fmt.Errorf("%w: tax %s on %s: %w", ErrAmountOverflow, r.Code, target, err)
	case err != nil:
		return money.Amount{}, fmt.Errorf("tax %s on %s: %w", r.Code, target, err)
	}
	return t, nil
}
