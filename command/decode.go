package command

import (
	"bytes"
	"encoding/json"
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
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		return c, invalid(CodeMalformedJSON, "%v", err)
	}
	if dec.More() {
		return c, invalid(CodeMalformedJSON, "trailing data after the JSON object")
	}
	return c, c.validate(subjCart, Type(subjType))
}

func (c *Command) validate(subjCart string, subjType Type) error {
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
