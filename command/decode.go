package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/cartworker/cartworker/money"
)

// Codes of InvalidError. Each is also the dead-letter code header.
const (
	// CodeBodyTooLarge: the body is over MaxBodyBytes.
	CodeBodyTooLarge = "body_too_large"
	// CodeMalformedJSON: the body is not one JSON object, or a value in it
	// has the wrong JSON type ("items[0].quantity: must be an integer, not
	// a string").
	CodeMalformedJSON = "malformed_json"
	// CodeUnknownType: the subject's or the body's type is not a Type.
	CodeUnknownType = "unknown_type"
	// CodeSubjectMismatch: the subject is not "<prefix>.cmd.<cart_id>.<type>",
	// or the body's type or cart_id differs from the subject's.
	CodeSubjectMismatch = "subject_mismatch"
	// CodeInvalidCartID: the cart id is not 1 to MaxCartIDLen of
	// [A-Za-z0-9_-].
	CodeInvalidCartID = "invalid_cart_id"
	// CodeMissingID: the body has no id.
	CodeMissingID = "missing_id"
	// CodeNoItems: an add-item carries no items.
	CodeNoItems = "no_items"
	// CodeTooManyItems: an add-item carries more than MaxItems items.
	CodeTooManyItems = "too_many_items"
	// CodeInvalidQuantity: a quantity is not in 1..MaxQuantity.
	CodeInvalidQuantity = "invalid_quantity"
	// CodeInvalidPrice: a unit_price is missing, not a decimal number, not
	// in 0..MaxUnitPrice, or has real digits past money.Places decimal
	// places (1.23456): money is exact or refused, never rounded. Digits
	// past the 15th significant one are float64 noise and are rounded
	// (0.30000000000000004 is 0.3): see money.Parse.
	CodeInvalidPrice = "invalid_price"
	// CodeInvalidItem: an item's item_code is empty.
	CodeInvalidItem = "invalid_item"
	// CodeInvalidCart: a cache command's cart is not a JSON object, or a
	// stored cart cannot be read.
	CodeInvalidCart = "invalid_cart"
)

// InvalidError reports a command that can never be applied, however often it
// is retried: the worker terminates it and dead-letters a copy.
type InvalidError struct {
	// Code is one of the Code* constants above.
	Code string
	// Reason is a human readable explanation.
	Reason string
}

func (e *InvalidError) Error() string { return "invalid command: " + e.Code + ": " + e.Reason }

func invalid(code, format string, args ...any) *InvalidError {
	return &InvalidError{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// Decode parses and validates the command published on subject with body
// data. Every failure is an *InvalidError whose Reason speaks the contract,
// naming the offending value by its JSON path ("items[0].quantity: must be
// an integer, not a string"), never a Go type.
//
// The work it does is bounded by the limits before it is spent: the body
// size first, then the number of items, counted on the raw JSON before any
// item is decoded, so that a megabyte of items costs one linear scan rather
// than twenty thousand price conversions.
func (s Subjects) Decode(subject string, data []byte) (Command, error) {
	var c Command
	if len(data) > MaxBodyBytes {
		return c, invalid(CodeBodyTooLarge, "body is %d bytes, limit %d", len(data), MaxBodyBytes)
	}
	subjCart, subjType, ok := s.ParseCommand(subject)
	if !ok {
		return c, invalid(CodeSubjectMismatch, "subject %q is not %s", subject, s.Command("<cart_id>", "<type>"))
	}
	if !ValidCartID(subjCart) {
		return c, invalid(CodeInvalidCartID, "cart id %q in subject: want 1-%d of [A-Za-z0-9_-]", subjCart, MaxCartIDLen)
	}
	if !Type(subjType).Valid() {
		return c, invalid(CodeUnknownType, "type %q in subject", subjType)
	}
	var w wireCommand
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&w); err != nil {
		return c, jsonInvalid("", err)
	}
	if dec.More() {
		return c, invalid(CodeMalformedJSON, "trailing data after the JSON object")
	}
	c = w.Command
	if err := c.validateHeader(subjCart, Type(subjType)); err != nil {
		return c, err
	}
	if c.Type == TypeAddItem {
		items, err := DecodeItems(w.Items)
		if err != nil {
			return c, err
		}
		c.Items = items
	}
	return c, c.validateBody()
}

// wireCommand is a Command as it arrives. Its items stay raw JSON until
// they are counted; being less deeply nested, this Items field hides
// Command's from encoding/json.
type wireCommand struct {
	Command
	Items json.RawMessage `json:"items"`
}

// wireItem is an Item as it arrives: its unit_price, hiding Item's as
// wireCommand's Items hides Command's, is read by price.
type wireItem struct {
	Item
	UnitPrice price `json:"unit_price"`
}

// price is a unit_price as it arrives, read by money.Parse: exact, or
// refused when it has real digits past money.Places (money.Amount's own
// UnmarshalJSON, meant for stored documents, would round them). A JSON
// string holding a decimal is accepted as the number it holds, as it
// always was.
type price struct {
	amount money.Amount
	given  bool // false for a missing or null unit_price
}

// UnmarshalJSON reads b through money.Parse. Its errors are *priceError.
func (p *price) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var text string
	if len(b) > 0 && b[0] == '"' {
		var unquoted string // declared here: only a string price pays for it
		if err := json.Unmarshal(b, &unquoted); err != nil {
			return &priceError{text: string(b), err: err}
		}
		text = unquoted
	} else {
		text = string(b)
	}
	a, err := money.Parse(text)
	if err != nil {
		return &priceError{text: string(b), err: err}
	}
	p.amount, p.given = a, true
	return nil
}

// priceError is a unit_price that money.Parse refused; text is the JSON
// value as written.
type priceError struct {
	text string
	err  error
}

func (e *priceError) Error() string { return e.err.Error() }
func (e *priceError) Unwrap() error { return e.err }

// explain says why, in the contract's words.
func (e *priceError) explain() string {
	text := describe(e.text)
	if firstByte([]byte(e.text)) == '"' {
		text = e.text
		if len(text) > 40 {
			text = text[:40] + `..."`
		}
	}
	switch {
	case errors.Is(e.err, money.ErrPrecision):
		return fmt.Sprintf("%s has more than %d decimal places", text, money.Places)
	case errors.Is(e.err, money.ErrOverflow):
		return fmt.Sprintf("%s not in 0..%d", text, MaxUnitPrice)
	case errors.Is(e.err, money.ErrInvalid) && firstByte([]byte(e.text)) != '"' && !isNumber(e.text):
		return fmt.Sprintf("must be a number, not %s", describe(e.text))
	}
	return fmt.Sprintf("must be a decimal number from 0 to %d: %s", MaxUnitPrice, strings.TrimPrefix(e.err.Error(), "money: "))
}

// isNumber reports whether a JSON value, as written, is a number.
func isNumber(v string) bool {
	c := firstByte([]byte(v))
	return c == '-' || (c >= '0' && c <= '9')
}

// describe names the kind of a JSON value as written.
func describe(v string) string {
	switch firstByte([]byte(v)) {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	}
	if len(v) > 40 {
		return v[:40] + "..." // a number can be a megabyte long
	}
	return v
}

// DecodeItems reads and checks an add-item's JSON array of items as Decode
// does: it counts them first, refusing none (no_items) or more than
// MaxItems (too_many_items) before decoding any; reads each unit_price
// exactly with money.Parse, refusing one that is missing, not a decimal,
// out of range or with real digits past money.Places (invalid_price);
// checks every item as Command.Validate does; and names the item and field
// at fault. Every error is an *InvalidError. Programs that read items from
// their own input, such as cartctl's -items, call it to read prices as the
// worker will: decoding an Item with encoding/json rounds its price.
func DecodeItems(raw []byte) ([]Item, error) {
	n, err := countElements(raw)
	if err != nil {
		return nil, invalid(CodeMalformedJSON, "items: must be an array, not %s", describe(string(bytes.TrimSpace(raw))))
	}
	if n == 0 {
		return nil, invalid(CodeNoItems, "add-item carries no items")
	}
	if n > MaxItems {
		return nil, invalid(CodeTooManyItems, "%d items, limit %d", n, MaxItems)
	}
	wire := make([]wireItem, 0, n)
	if err := json.Unmarshal(raw, &wire); err != nil {
		return nil, itemError(raw, err)
	}
	items := make([]Item, len(wire))
	for i, w := range wire {
		items[i] = w.Item
		items[i].UnitPrice = w.UnitPrice.amount
		if err := validateItem(i, items[i]); err != nil {
			return nil, err
		}
		// Checked after the item's other fields, whose codes an item
		// without a price always had.
		if !w.UnitPrice.given {
			return nil, invalid(CodeInvalidPrice, "items[%d].unit_price: is required", i)
		}
	}
	return items, nil
}

// itemError explains why items failed to decode, naming the item: the
// common path decodes them all at once, so only a failure pays for a
// second, item by item, pass.
func itemError(raw []byte, err error) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, terr := dec.Token(); terr == nil { // '['
		for i := 0; dec.More(); i++ {
			var it wireItem
			if ierr := dec.Decode(&it); ierr != nil {
				return jsonInvalid(fmt.Sprintf("items[%d]", i), ierr)
			}
		}
	}
	return jsonInvalid("items", err)
}

// jsonInvalid turns an error of encoding/json decoding the value at path
// ("" for the body) into an *InvalidError in the contract's words: a bad
// unit_price is invalid_price, anything else malformed_json.
func jsonInvalid(path string, err error) *InvalidError {
	var (
		pe  *priceError
		te  *json.UnmarshalTypeError
		se  *json.SyntaxError
		at  = path
		the = path
	)
	if path == "" {
		at, the = "body", "the body"
	}
	switch {
	case errors.As(err, &pe):
		return invalid(CodeInvalidPrice, "%s: %s", join(path, "unit_price"), pe.explain())
	case errors.As(err, &te):
		// Field is the Go path, embedded structs included
		// ("Command.terminal_no"); every field the contract types is a
		// direct child of the body or of an item, so its last element is
		// the JSON name.
		field := te.Field
		if i := strings.LastIndexByte(field, '.'); i >= 0 {
			field = field[i+1:]
		}
		if field == "" {
			return invalid(CodeMalformedJSON, "%s: must be %s, not %s", at, wantKind(te.Type), gotKind(te.Value))
		}
		return invalid(CodeMalformedJSON, "%s: must be %s, not %s", join(path, field), wantKind(te.Type), gotKind(te.Value))
	case errors.As(err, &se):
		return invalid(CodeMalformedJSON, "%s is not valid JSON: %v (at byte %d)", the, se, se.Offset)
	case errors.Is(err, io.EOF):
		return invalid(CodeMalformedJSON, "%s is empty: want a JSON object", the)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid(CodeMalformedJSON, "%s is not valid JSON: it ends inside a value", the)
	}
	return invalid(CodeMalformedJSON, "%s: %v", at, err)
}

// join appends a field name to a JSON path.
func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// wantKind names, in JSON terms, what a Go type accepts.
func wantKind(t reflect.Type) string {
	if t == nil {
		return "another kind of value"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "another kind of value"
}

// gotKind names a json.UnmarshalTypeError's Value: "string", "number",
// "number 1.5", "object", "array" or "bool".
func gotKind(v string) string {
	switch v {
	case "string", "number":
		return "a " + v
	case "object", "array":
		return "an " + v
	case "bool":
		return "a boolean"
	}
	if n, ok := strings.CutPrefix(v, "number "); ok {
		return n
	}
	return v
}

// countElements returns the number of elements of the JSON array raw, or 0
// for null or nothing. raw must be syntactically valid JSON, as
// encoding/json leaves a RawMessage; the scan only tracks strings and
// nesting, without allocating.
func countElements(raw []byte) (int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return 0, nil
	}
	if raw[0] != '[' || raw[len(raw)-1] != ']' {
		return 0, errors.New("not an array")
	}
	var (
		n, depth      int
		inStr, escape bool
		empty         = true
	)
	for _, b := range raw[1 : len(raw)-1] {
		if inStr {
			switch {
			case escape:
				escape = false
			case b == '\\':
				escape = true
			case b == '"':
				inStr = false
			}
			continue
		}
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		case '"':
			inStr = true
		case '[', '{':
			depth++
		case ']', '}':
			depth--
		case ',':
			if depth == 0 {
				n++
			}
		}
		empty = false
	}
	if empty {
		return 0, nil
	}
	return n + 1, nil
}

func (c *Command) validate(subjCart string, subjType Type) error {
	if err := c.validateHeader(subjCart, subjType); err != nil {
		return err
	}
	return c.validateBody()
}

// validateHeader checks the fields every command has against the subject.
func (c *Command) validateHeader(subjCart string, subjType Type) error {
	if c.ID == "" {
		return invalid(CodeMissingID, "id: must not be empty")
	}
	if !c.Type.Valid() {
		return invalid(CodeUnknownType, "type: %q is not %s, %s or %s", c.Type, TypeAddItem, TypeCache, TypeDelete)
	}
	if c.Type != subjType {
		return invalid(CodeSubjectMismatch, "type: %q, but the subject says %q", c.Type, subjType)
	}
	if c.CartID != subjCart {
		return invalid(CodeSubjectMismatch, "cart_id: %q, but the subject says %q", c.CartID, subjCart)
	}
	return nil
}

// validateBody checks what the command's type carries.
func (c *Command) validateBody() error {
	switch c.Type {
	case TypeAddItem:
		return validateItems(c.Items)
	case TypeCache:
		if len(c.Cart) > 0 && !bytes.Equal(c.Cart, []byte("null")) {
			if t := firstByte(c.Cart); t != '{' {
				return invalid(CodeInvalidCart, "cart: must be an object, not %s", describe(string(bytes.TrimSpace(c.Cart))))
			}
		}
	}
	return nil
}

// Validate checks c as Decode would, for publishers that want to fail before
// sending. It does not know the subject, so it checks c against itself.
func (c *Command) Validate() error {
	if !ValidCartID(c.CartID) {
		return invalid(CodeInvalidCartID, "cart id %q: want 1-%d of [A-Za-z0-9_-]", c.CartID, MaxCartIDLen)
	}
	return c.validate(c.CartID, c.Type)
}

func validateItems(items []Item) error {
	if len(items) == 0 {
		return invalid(CodeNoItems, "add-item carries no items")
	}
	if len(items) > MaxItems {
		return invalid(CodeTooManyItems, "%d items, limit %d", len(items), MaxItems)
	}
	for i, it := range items {
		if err := validateItem(i, it); err != nil {
			return err
		}
	}
	return nil
}

// validateItem checks items[i].
func validateItem(i int, it Item) error {
	if it.ItemCode == "" {
		return invalid(CodeInvalidItem, "items[%d].item_code: must not be empty", i)
	}
	if it.Quantity < 1 || it.Quantity > MaxQuantity {
		return invalid(CodeInvalidQuantity, "items[%d].quantity: %d not in 1..%d", i, it.Quantity, MaxQuantity)
	}
	if it.UnitPrice.IsNegative() || it.UnitPrice.Units() > money.FromInt(MaxUnitPrice).Units() {
		return invalid(CodeInvalidPrice, "items[%d].unit_price: %s not in 0..%d", i, it.UnitPrice, MaxUnitPrice)
	}
	return nil
}

func firstByte(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}

// Marshal encodes c for publishing.
func Marshal(c Command) ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("command: encode %s %s: %w", c.Type, c.ID, err)
	}
	return b, nil
}

// MarshalEvent encodes e.
func MarshalEvent(e Event) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("command: encode event %s: %w", e.CommandID, err)
	}
	return b, nil
}
