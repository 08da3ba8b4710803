package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cartworker/cartworker/money"
)

// Codes of InvalidError. Each is also the dead-letter code header.
const (
	CodeBodyTooLarge    = "body_too_large"
	CodeMalformedJSON   = "malformed_json"
	CodeUnknownType     = "unknown_type"
	CodeSubjectMismatch = "subject_mismatch"
	CodeInvalidCartID   = "invalid_cart_id"
	CodeMissingID       = "missing_id"
	CodeNoItems         = "no_items"
	CodeTooManyItems    = "too_many_items"
	CodeInvalidQuantity = "invalid_quantity"
	CodeInvalidPrice    = "invalid_price"
	CodeInvalidItem     = "invalid_item"
	CodeInvalidCart     = "invalid_cart"
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
// data. Every failure is an *InvalidError.
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
		return c, invalid(CodeMalformedJSON, "%v", err)
	}
	if dec.More() {
		return c, invalid(CodeMalformedJSON, "trailing data after the JSON object")
	}
	c = w.Command
	if err := c.validateHeader(subjCart, Type(subjType)); err != nil {
		return c, err
	}
	if c.Type == TypeAddItem {
		items, err := decodeItems(w.Items)
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

// decodeItems counts the elements of the raw items array, refuses too few
// or too many, and only then decodes them.
func decodeItems(raw json.RawMessage) ([]Item, error) {
	n, err := countElements(raw)
	if err != nil {
		return nil, invalid(CodeMalformedJSON, "items: %v", err)
	}
	if n == 0 {
		return nil, invalid(CodeNoItems, "add-item carries no items")
	}
	if n > MaxItems {
		return nil, invalid(CodeTooManyItems, "%d items, limit %d", n, MaxItems)
	}
	items := make([]Item, 0, n)
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, itemError(raw, err)
	}
	return items, nil
}

// itemError explains why items failed to decode, naming the item: the
// common path decodes them all at once, so only a failure pays for a
// second, item by item, pass.
func itemError(raw json.RawMessage, err error) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, terr := dec.Token(); terr == nil { // '['
		for i := 0; dec.More(); i++ {
			var it Item
			if ierr := dec.Decode(&it); ierr != nil {
				return itemInvalid(fmt.Sprintf("items[%d]", i), ierr)
			}
		}
	}
	return itemInvalid("items", err)
}

// itemInvalid classifies an item's decoding error. Item's only money field
// is unit_price: a number it cannot hold (1e-999999, 1e30) is a bad price,
// not bad JSON.
func itemInvalid(where string, err error) *InvalidError {
	if errors.Is(err, money.ErrInvalid) || errors.Is(err, money.ErrOverflow) {
		return invalid(CodeInvalidPrice, "%s: unit_price: %v", where, err)
	}
	return invalid(CodeMalformedJSON, "%s: %v", where, err)
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
		return invalid(CodeMissingID, "id is empty")
	}
	if !c.Type.Valid() {
		return invalid(CodeUnknownType, "type %q", c.Type)
	}
	if c.Type != subjType {
		return invalid(CodeSubjectMismatch, "body type %q, subject type %q", c.Type, subjType)
	}
	if c.CartID != subjCart {
		return invalid(CodeSubjectMismatch, "body cart_id %q, subject cart id %q", c.CartID, subjCart)
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
				return invalid(CodeInvalidCart, "cart must be a JSON object")
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
		if it.ItemCode == "" {
			return invalid(CodeInvalidItem, "items[%d]: item_code is empty", i)
		}
		if it.Quantity < 1 || it.Quantity > MaxQuantity {
			return invalid(CodeInvalidQuantity, "items[%d]: quantity %d not in 1..%d", i, it.Quantity, MaxQuantity)
		}
		if it.UnitPrice.IsNegative() || it.UnitPrice.Units() > money.FromInt(MaxUnitPrice).Units() {
			return invalid(CodeInvalidPrice, "items[%d]: unit_price %s not in 0..%d", i, it.UnitPrice, MaxUnitPrice)
		}
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
