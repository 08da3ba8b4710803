package cart

import (
	"bytes"
	"encoding/json"
	"errors"
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
// the cart already handled, oldest first: those applied and those refused
// with a rejection (RejectedIDsField tells which), so that a redelivery or
// a replay gets the outcome the command had.
const AppliedIDsField = "applied_command_ids"

// RejectedIDsField is the document field that maps the ids of
// AppliedIDsField that the cart refused to the rejection code each got
// (command.Code*), so that a replay is refused again the same way. The
// codes live beside the list, not inside it, because command ids are
// arbitrary strings. Absent when the cart refused none of them.
const RejectedIDsField = "rejected_command_ids"

// WriterEpochField is the document field that holds the Epoch of the
// partition owner that last wrote the cart, as {"era":<int>,"seq":<int>}.
// Absent when no fenced writer has written it.
const WriterEpochField = "writer_epoch"

// Epoch is the ownership of a command-stream partition that wrote a cart
// (cartcache.Epoch carries its ordering). The zero Epoch is an unfenced
// writer's, or no writer's.
type Epoch struct {
	Era int64  `json:"era"`
	Seq uint64 `json:"seq"`
}

// IsZero reports whether e is the zero Epoch.
func (e Epoch) IsZero() bool { return e == Epoch{} }

// Document is a cart as stored. fields holds every top-level field verbatim,
// so whatever this package does not model survives untouched. The modelled
// fields (the lines as the totals need them, the status, the handled
// command ids, the refused ones' codes and the writer's epoch) are decoded next to it; each has one source of truth, its
// typed field, which Encode writes back over the verbatim one.
type Document struct {
	// fields are the document's fields as read, each aliasing the bytes
	// Parse was given (which must not change while the Document is used),
	// or as set since.
	fields map[string]json.RawMessage
	// views are the lines as the totals need them. Stored lines are never
	// re-encoded: the lines added since the read, encoded, wait in added
	// and are spliced onto the stored array when the document is
	// encoded, so that adding a line to a large cart copies nothing.
	views   []lineView
	added   [][]byte
	applied []string
	// rejected is nil when the cart refused none of its applied ids, so
	// that the applied path allocates no map.
	rejected map[string]string
	epoch    Epoch
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

// Parse reads a stored cart. A document that is not a JSON object, or whose
// modelled fields have the wrong shape, is ErrInvalidCart; an amount too
// large to hold exactly is ErrAmountOverflow.
//
// The fields keep pointing into raw rather than copying it: a large cart is
// held once, not twice, while it is applied. raw must not change while the
// Document is in use.
func Parse(raw []byte) (*Document, error) {
	d := &Document{}
	rest, err := sjson.Parse(raw, &d.fields, sjson.DontCopyRawMessage)
	if err == nil && len(bytes.TrimSpace(rest)) > 0 {
		err = fmt.Errorf("%d bytes after the document", len(bytes.TrimSpace(rest)))
	}
	if err != nil {
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
	if err := d.decodeField(RejectedIDsField, &d.rejected); err != nil {
		return nil, err
	}
	if err := d.decodeField(WriterEpochField, &d.epoch); err != nil {
		return nil, err
	}
	if err := d.decodeField("status", &d.status); err != nil {
		return nil, err
	}
	return d, nil
}

// Status is the cart's status, such as StatusIdle.
func (d *Document) Status() string { return d.status }

// Applied returns the ids of the commands applied to the cart, oldest
// first. The caller must not modify the slice.
func (d *Document) Applied() []string { return d.applied }

// SetApplied replaces the applied command ids; Encode writes them.
func (d *Document) SetApplied(ids []string) { d.applied = ids }

// Rejected returns the codes of the applied ids the cart refused, by id
// (RejectedIDsField), nil when there are none. The caller must not modify
// the map.
func (d *Document) Rejected() map[string]string { return d.rejected }

// SetRejected replaces the rejected ids' codes; Encode writes them, or
// drops the field when m is empty.
func (d *Document) SetRejected(m map[string]string) { d.rejected = m }

// Epoch returns the Epoch of the cart's last fenced writer, zero when none
// is stored.
func (d *Document) Epoch() Epoch { return d.epoch }

// SetEpoch replaces the writer's Epoch; Encode writes it, or drops the
// field when e is zero.
func (d *Document) SetEpoch(e Epoch) { d.epoch = e }

func (d *Document) decodeField(name string, v any) error {
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

func (d *Document) set(name string, v any) error {
	b, err := sjson.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	d.fields[name] = b
	return nil
}

func (d *Document) setString(name, v string) {
	d.fields[name] = appendString(nil, v)
}

// appendString appends s as a JSON string. segmentio's AppendEscape
// escapes what JSON requires and, as encoding/json does, writes each byte
// of invalid UTF-8 as U+FFFD; unlike json.Marshal it cannot fail and does
// not allocate, so setString and Encode (for the document's keys) need no
// error path.
func appendString(b []byte, s string) []byte {
	return sjson.AppendEscape(b, s, 0)
}

// setDefault sets a field only when the document lacks it.
func (d *Document) setDefault(name string, v any) error {
	if raw, ok := d.fields[name]; ok && !bytes.Equal(raw, []byte("null")) {
		return nil
	}
	return d.set(name, v)
}

// appendItems appends the items as new lines numbered after the last one.
// On error the document is half changed: AddItems restores it.
func (d *Document) appendItems(items []command.Item) error {
	newLines := make([][]byte, 0, len(items))
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
		newLines = append(newLines, raw)
		d.views = append(d.views, lineView{Quantity: l.Quantity, Amount: l.Amount, TaxCode: l.TaxCode})
	}
	d.added = append(d.added, newLines...)
	return nil
}

// arrayBody is the elements of the JSON array arr, as written between its
// brackets; empty when arr is empty, null or not an array.
func arrayBody(arr json.RawMessage) []byte {
	arr = bytes.TrimSpace(arr)
	if len(arr) < 2 || arr[0] != '[' {
		return nil
	}
	return bytes.TrimSpace(arr[1 : len(arr)-1])
}

// splicedLen is the length of appendSpliced's output.
func splicedLen(arr json.RawMessage, elems [][]byte) int {
	body := arrayBody(arr)
	n := len(body) + 2
	for i, e := range elems {
		if i > 0 || len(body) > 0 {
			n++
		}
		n += len(e)
	}
	return n
}

// appendSpliced appends to b the JSON array arr with elems after its own
// elements, without re-encoding those. arr may be empty or null.
func appendSpliced(b []byte, arr json.RawMessage, elems [][]byte) []byte {
	body := arrayBody(arr)
	b = append(b, '[')
	b = append(b, body...)
	for i, e := range elems {
		if i > 0 || len(body) > 0 {
			b = append(b, ',')
		}
		b = append(b, e...)
	}
	return append(b, ']')
}

// Encode writes the document with its modelled fields and updated_at set to
// now, keys sorted so that equal documents encode equally.
func (d *Document) Encode(now time.Time) ([]byte, error) {
	keys, size, err := d.prepare(now)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 0, size)
	buf = append(buf, '{')
	for i, k := range keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendString(buf, k)
		buf = append(buf, ':')
		if k == "line_items" {
			buf = appendSpliced(buf, d.fields[k], d.added)
		} else {
			buf = append(buf, d.fields[k]...)
		}
	}
	return append(buf, '}'), nil
}

// EncodedLen is the length of what Encode(now) returns, measured without
// writing the document out: the size limit is checked after every command
// of a batch, and a large cart would otherwise be copied for each.
func (d *Document) EncodedLen(now time.Time) (int, error) {
	_, size, err := d.prepare(now)
	return size, err
}

// prepare sets the modelled fields and updated_at to what Encode writes,
// and returns the keys in the order Encode writes them and the exact
// length of its output.
func (d *Document) prepare(now time.Time) (keys []string, size int, err error) {
	d.setString("updated_at", now.UTC().Format(time.RFC3339Nano))
	if _, had := d.fields["status"]; had || d.status != "" {
		d.setString("status", d.status)
	}
	if err := d.set(AppliedIDsField, d.applied); err != nil {
		return nil, 0, err
	}
	// The typed fields are the truth: whatever a cached document carried
	// in these fields must not outlive them.
	if len(d.rejected) == 0 {
		delete(d.fields, RejectedIDsField)
	} else if err := d.set(RejectedIDsField, d.rejected); err != nil {
		return nil, 0, err
	}
	if d.epoch.IsZero() {
		delete(d.fields, WriterEpochField)
	} else {
		d.fields[WriterEpochField] = appendEpoch(nil, d.epoch)
	}
	if len(d.added) > 0 {
		if _, ok := d.fields["line_items"]; !ok {
			d.fields["line_items"] = json.RawMessage("[]")
		}
	}
	keys = make([]string, 0, len(d.fields))
	size = 2 // the braces
	var scratch [64]byte
	for k, v := range d.fields {
		keys = append(keys, k)
		if len(keys) > 1 {
			size++ // the comma before it
		}
		size += len(appendString(scratch[:0], k)) + 1 // the key and its colon
		if k == "line_items" {
			size += splicedLen(v, d.added)
		} else {
			size += len(v)
		}
	}
	sort.Strings(keys)
	return keys, size, nil
}

// appendEpoch appends e as WriterEpochField's JSON object, without
// reflection: it is written with every fenced save.
func appendEpoch(b []byte, e Epoch) []byte {
	b = append(b, `{"era":`...)
	b = strconv.AppendInt(b, e.Era, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	return append(b, '}')
}
