package cartcache

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

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
	d.fields[name] = strconv.AppendQuote(nil, v)
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
func (d *document) appendItems(items []command.Item) error {
	for _, it := range items {
		l := newLine{
			LineNo:             len(d.views) + 1,
			ItemCode:           it.ItemCode,
			CategoryCode:       it.CategoryCode,
			Description:        it.Description,
			DescriptionShort:   it.Description,
			UnitPrice:          it.UnitPrice,
			UnitPriceOriginal:  it.UnitPrice,
			Quantity:           it.Quantity,
			Discounts:          []json.RawMessage{},
			DiscountsAllocated: []json.RawMessage{},
			Amount:             it.UnitPrice.MulInt(int64(it.Quantity)),
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
// the subtotal discounts and the payments, following upstream's rules.
func (d *document) recompute(table TaxTable) error {
	type group struct {
		target money.Amount
		qty    int
	}
	groups := map[string]*group{}
	var subtotal money.Amount
	qty := 0
	for i, l := range d.views {
		if l.IsCancelled {
			continue
		}
		subtotal = subtotal.Add(l.Amount)
		qty += l.Quantity
		target := l.Amount
		for _, a := range l.DiscountsAllocated {
			target = target.Sub(a.Amount)
		}
		if _, ok := table[l.TaxCode]; !ok {
			return fmt.Errorf("%w: %q on line %d", ErrUnknownTaxCode, l.TaxCode, i+1)
		}
		g := groups[l.TaxCode]
		if g == nil {
			g = &group{}
			groups[l.TaxCode] = g
		}
		g.target = g.target.Add(target)
		g.qty += l.Quantity
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
			external = external.Add(amt)
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
		total = total.Sub(s.Amount)
	}
	var payments []payment
	if err := d.decodeField("payments", &payments); err != nil {
		return err
	}
	withTax := total.Add(external)
	balance := withTax
	for _, p := range payments {
		balance = balance.Sub(p.Amount)
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
	var err error
	for i, k := range keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf, err = appendKey(buf, k)
		if err != nil {
			return nil, err
		}
		buf = append(buf, ':')
		buf = append(buf, d.fields[k]...)
	}
	return append(buf, '}'), nil
}

// appendKey appends k as a JSON string. Keys are nearly always plain ASCII,
// which needs no escaping; anything else goes through the encoder.
func appendKey(b []byte, k string) ([]byte, error) {
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			kb, err := json.Marshal(k)
			if err != nil {
				return b, fmt.Errorf("encode key: %w", err)
			}
			return append(b, kb...), nil
		}
	}
	b = append(b, '"')
	b = append(b, k...)
	return append(b, '"'), nil
}
