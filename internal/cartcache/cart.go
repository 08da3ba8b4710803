package cartcache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"
	"unicode/utf8"

	// A drop-in decoder about twice as fast as encoding/json on cart
	// documents (BenchmarkApplyAddItem*), which are the worker's hot path.
	sjson "github.com/segmentio/encoding/json"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/money"
)

// Cart statuses, spelled as upstream stores them.
const (
	StatusInitial      = "Initial"
	StatusIdle         = "Idle"
	StatusEnteringItem = "EnteringItem"
	StatusPaying       = "Paying"
	StatusCompleted    = "Completed"
	StatusCancelled    = "Cancelled"
)

// AppliedIDsField is the document field that lists the ids of the commands
// already applied to the cart, oldest first.
const AppliedIDsField = "applied_command_ids"

// document is a cart as stored. fields holds every top-level field verbatim,
// so whatever this package does not model survives untouched; the modelled
// fields are decoded next to it and written back over it on encode.
type document struct {
	fields map[string]json.RawMessage
	// views are the lines as the totals need them; existing lines are never
	// re-encoded; new ones are spliced onto the stored array on encode.
	views    []lineView
	newLines [][]byte
	applied  []string
	status   string
}

// lineView is the part of a stored line item the totals need.
type lineView struct {
	Quantity           int          `json:"quantity"`
	Amount             money.Amount `json:"amount"`
	TaxCode            string       `json:"tax_code"`
	IsCancelled        bool         `json:"is_cancelled"`
	DiscountsAllocated []discount   `json:"discounts_allocated"`
}

type discount struct {
	Amount money.Amount `json:"discount_amount"`
}

type payment struct {
	Amount money.Amount `json:"amount"`
}

// newLine is the shape upstream gives a fresh line item.
type newLine struct {
	LineNo               int               `json:"line_no"`
	ItemCode             string            `json:"item_code"`
	CategoryCode         string            `json:"category_code"`
	Description          string            `json:"description"`
	DescriptionShort     string            `json:"description_short"`
	UnitPrice            money.Amount      `json:"unit_price"`
	UnitPriceOriginal    money.Amount      `json:"unit_price_original"`
	IsUnitPriceChanged   bool              `json:"is_unit_price_changed"`
	Quantity             int               `json:"quantity"`
	Discounts            []json.RawMessage `json:"discounts"`
	DiscountsAllocated   []json.RawMessage `json:"discounts_allocated"`
	Amount               money.Amount      `json:"amount"`
	TaxCode              string            `json:"tax_code"`
	IsCancelled          bool              `json:"is_cancelled"`
	ItemDetails          []json.RawMessage `json:"item_details"`
	ImageURLs            []string          `json:"image_urls"`
	IsDiscountRestricted bool              `json:"is_discount_restricted"`
}

func parseDocument(raw []byte) (*document, error) {
	d := &document{}
	if err := sjson.Unmarshal(raw, &d.fields); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidCart, err)
	}
	if d.fields == nil {
		d.fields = map[string]json.RawMessage{}
	}
	// One pass over the lines straight into the views: this is the hot
	// path, and the lines are most of the document.
	if err := d.decodeField("line_items", &d.views); err != nil {
		return nil, err
	}
	if err := d.decodeField(AppliedIDsField, &d.applied); err != nil {
		return nil, err
	}
	if err := d.decodeField("status", &d.status); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *document) decodeField(name string, v any) error {
	raw, ok := d.fields[name]
	if !ok || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	if err := sjson.Unmarshal(raw, v); err != nil {
		// An amount too large for money.Amount is a readable number the
		// worker cannot hold exactly, which is what ErrAmountOverflow says.
		if errors.Is(err, money.ErrOverflow) {
			return fmt.Errorf("%w: %s: %w", ErrAmountOverflow, name, err)
		}
		return fmt.Errorf("%w: %s: %v", ErrInvalidCart, name, err)
	}
	return nil
}

func (d *document) set(name string, v any) error {
	b, err := sjson.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	d.fields[name] = b
	return nil
}

func (d *document) setString(name, v string) {
	d.fields[name] = appendString(nil, v)
}

// appendString appends s as a JSON string, escaping what JSON requires and
// replacing each byte of invalid UTF-8 with U+FFFD, as encoding/json does.
// strconv.AppendQuote will not do: its escapes (\x01, \a) are Go's, not
// JSON's. Unlike json.Marshal it cannot fail, so setString and encode (for
// the document's keys) need no error path, and a plain ASCII value, the
// usual case, is copied as is.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0 // s[start:i] is pending, needing no escape
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			start = i + size
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// setDefault sets a field only when the document lacks it.
func (d *document) setDefault(name string, v any) error {
	if raw, ok := d.fields[name]; ok && !bytes.Equal(raw, []byte("null")) {
		return nil
	}
	return d.set(name, v)
}

// hasApplied reports whether the command id was already applied.
func (d *document) hasApplied(id string) bool {
	return containsID(d.applied, id)
}

func containsID(ids []string, id string) bool {
	// Newest last: a redelivery is most likely a recent command.
	for i := len(ids) - 1; i >= 0; i-- {
		if ids[i] == id {
			return true
		}
	}
	return false
}

// recordApplied appends id, keeping the newest keep ids.
func (d *document) recordApplied(id string, keep int) {
	d.applied = appendID(d.applied, id, keep)
}

func appendID(ids []string, id string, keep int) []string {
	ids = append(ids, id)
	if len(ids) > keep {
		ids = append(ids[:0:0], ids[len(ids)-keep:]...)
	}
	return ids
}

// appendItems appends the items as new lines numbered after the last one.
// On error the document is half changed and must be discarded.
func (d *document) appendItems(items []command.Item) error {
	for _, it := range items {
		lineNo := len(d.views) + 1
		amount, err := it.UnitPrice.MulIntChecked(int64(it.Quantity))
		if err != nil {
			return fmt.Errorf("%w: amount of line %d: %w", ErrAmountOverflow, lineNo, err)
		}
		if err := storable(amount, "amount of line"); err != nil {
			return fmt.Errorf("line %d: %w", lineNo, err)
		}
		l := newLine{
			LineNo:             lineNo,
			ItemCode:           it.ItemCode,
			CategoryCode:       it.CategoryCode,
			Description:        it.Description,
			DescriptionShort:   it.Description,
			UnitPrice:          it.UnitPrice,
			UnitPriceOriginal:  it.UnitPrice,
			Quantity:           it.Quantity,
			Discounts:          []json.RawMessage{},
			DiscountsAllocated: []json.RawMessage{},
			Amount:             amount,
			TaxCode:            it.TaxCode,
			ItemDetails:        []json.RawMessage{},
			ImageURLs:          []string{},
		}
		raw, err := sjson.Marshal(l)
		if err != nil {
			return fmt.Errorf("encode line: %w", err)
		}
		d.newLines = append(d.newLines, raw)
		d.views = append(d.views, lineView{Quantity: l.Quantity, Amount: l.Amount, TaxCode: l.TaxCode})
	}
	d.fields["line_items"] = spliceArray(d.fields["line_items"], d.newLines)
	d.newLines = d.newLines[:0]
	return nil
}

// spliceArray appends elems to the JSON array arr without re-encoding the
// elements already there. arr may be empty or null.
func spliceArray(arr json.RawMessage, elems [][]byte) json.RawMessage {
	arr = bytes.TrimSpace(arr)
	if len(arr) < 2 || arr[0] != '[' {
		arr = []byte("[]")
	}
	body := bytes.TrimSpace(arr[1 : len(arr)-1])
	size := len(body) + 2
	for _, e := range elems {
		size += len(e) + 1
	}
	out := make([]byte, 0, size)
	out = append(out, '[')
	out = append(out, body...)
	for i, e := range elems {
		if i > 0 || len(body) > 0 {
			out = append(out, ',')
		}
		out = append(out, e...)
	}
	return append(out, ']')
}

// recompute rewrites taxes, subtotal, sales totals and balance from the lines,
// the subtotal discounts and the payments, following upstream's rules. Every
// sum is checked: a total that does not fit money.Amount, that the store
// would round (see storable) or a quantity sum that does not fit fails with
// ErrAmountOverflow before anything is written, so no stored total is ever
// wrong.
func (d *document) recompute(table TaxTable) error {
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

// encode writes the document with its modelled fields, keys sorted so equal
// documents encode equally.
func (d *document) encode(now time.Time) ([]byte, error) {
	d.setString("updated_at", now.UTC().Format(time.RFC3339Nano))
	if err := d.set(AppliedIDsField, d.applied); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(d.fields))
	size := 2
	for k, v := range d.fields {
		keys = append(keys, k)
		size += len(k) + len(v) + 4
	}
	sort.Strings(keys)
	buf := make([]byte, 0, size)
	buf = append(buf, '{')
	for i, k := range keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendString(buf, k)
		buf = append(buf, ':')
		buf = append(buf, d.fields[k]...)
	}
	return append(buf, '}'), nil
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
