// Package command is cartworker's external contract: the cart commands that
// publishers send over NATS JetStream, the outcome events the worker emits,
// the subjects both travel on, and the validation every command passes before
// it touches a cart.
//
// Other programs depend on this package's wire format exactly; the README's
// "Contract" section documents the same rules for non-Go publishers, and
// command/schema holds them as JSON Schema (Schemas), checked against
// Decode by the package's tests.
package command

import (
	"encoding/json"

	"github.com/cartworker/cartworker/money"
)

// Type names a cart command. It is the last token of a command subject.
type Type string

// The command types.
const (
	// TypeAddItem appends 1 to MaxItems line items to a cart in status Idle
	// or EnteringItem and moves it to EnteringItem.
	TypeAddItem Type = "add-item"
	// TypeCache stores a whole cart document; it is how a cart is created.
	TypeCache Type = "cache"
	// TypeDelete removes a cart. Deleting a missing cart counts as applied.
	TypeDelete Type = "delete"
)

// Valid reports whether t is one of the known command types.
func (t Type) Valid() bool {
	switch t {
	case TypeAddItem, TypeCache, TypeDelete:
		return true
	}
	return false
}

// Limits every command is checked against.
const (
	// MaxBodyBytes is the largest command body accepted (1 MiB).
	MaxBodyBytes = 1 << 20
	// MaxItems is the most line items one add-item may carry.
	MaxItems = 100
	// MaxQuantity is the largest quantity of one line item.
	MaxQuantity = 9999
	// MaxCartIDLen is the longest cart id.
	MaxCartIDLen = 128
	// MaxUnitPrice is the highest unit price, in whole currency units. It
	// keeps every line and cart total far inside money.Amount's range.
	MaxUnitPrice = 100_000_000
)

// Command is the JSON body of a cart command.
type Command struct {
	// ID identifies the command for idempotency. Publishers also send it as
	// the Nats-Msg-Id header so JetStream drops quick republishes.
	ID         string `json:"id"`
	Type       Type   `json:"type"`
	CartID     string `json:"cart_id"`
	TenantID   string `json:"tenant_id,omitempty"`
	StoreCode  string `json:"store_code,omitempty"`
	TerminalNo int    `json:"terminal_no,omitempty"`
	// Items are the lines an add-item appends. Decode reads them only for
	// an add-item; other types ignore the field.
	Items []Item `json:"items,omitempty"`
	// Cart is the whole cart document a cache command stores. Fields the
	// worker does not model are kept verbatim.
	Cart json.RawMessage `json:"cart,omitempty"`
}

// Item is one line an add-item appends.
type Item struct {
	ItemCode     string       `json:"item_code"`
	Quantity     int          `json:"quantity"`
	UnitPrice    money.Amount `json:"unit_price"`
	Description  string       `json:"description,omitempty"`
	TaxCode      string       `json:"tax_code,omitempty"`
	CategoryCode string       `json:"category_code,omitempty"`
}

// Outcome is how a command ended. It is the last token of an event subject.
type Outcome string

// The outcomes.
const (
	// OutcomeApplied means the command's effect is in the cart, now or from
	// an earlier delivery (then Event.Duplicate is true).
	OutcomeApplied Outcome = "applied"
	// OutcomeRejected means the command was refused; Event.Error says why.
	OutcomeRejected Outcome = "rejected"
)

// Event is the body of an outcome event, published on core NATS.
type Event struct {
	CommandID string  `json:"command_id"`
	Type      Type    `json:"type"`
	CartID    string  `json:"cart_id"`
	Outcome   Outcome `json:"outcome"`
	// Duplicate is true when the command had already been applied and this
	// delivery changed nothing.
	Duplicate bool        `json:"duplicate"`
	Error     *EventError `json:"error,omitempty"`
}

// EventError explains a rejection. Code is stable and machine readable.
type EventError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Rejection codes that the worker itself emits for valid commands.
const (
	// CodeCartNotFound: an add-item found no cart. Commands apply in stream
	// order, so no cache of that cart was stored before it.
	CodeCartNotFound = "cart_not_found"
	// CodeInvalidState: an add-item hit a cart whose status forbids it.
	CodeInvalidState = "invalid_state"
	// CodeAmountOverflow: applying the command would take an amount of the
	// cart (a line, a tax, a total) past what money.Amount holds exactly,
	// or to a value the state store would not keep exactly (daprd stores
	// JSON numbers as float64: see money.Amount.Float64Exact). The cart is
	// left unchanged.
	CodeAmountOverflow = "amount_overflow"
	// CodeCartTooLarge: applying the command would make the cart's stored
	// document larger than the worker's size limit (WORKER_MAX_CART_BYTES,
	// well under what daprd takes), which no retry changes. The cart is
	// left unchanged; the event's message says the size and the limit. A
	// delete always applies, and so does a cache that does not grow the
	// cart.
	CodeCartTooLarge = "cart_too_large"
	// CodeStateRejected: the Dapr state store refused the document this
	// command produced (HTTP 400 for a reason of the command's own, or a
	// save refused as over daprd's size limit: HTTP 413, gRPC
	// ResourceExhausted). The command is dead-lettered at once.
	CodeStateRejected = "state_rejected"
	// CodeUnknownTaxCode: a line's tax_code is not in the worker's tax
	// table (CART_TAX_TABLE).
	CodeUnknownTaxCode = "unknown_tax_code"
	// CodeMaxDeliveries: a command kept failing transiently
	// WORKER_MAX_DELIVER times and was dead-lettered.
	CodeMaxDeliveries = "max_deliveries"
)
