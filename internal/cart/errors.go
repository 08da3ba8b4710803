package cart

import (
	"errors"
	"strconv"

	"github.com/cartworker/cartworker/command"
)

// The rejections of the cart rules. Each is final: the same command on the
// same cart is refused the same way however often it is tried, and the
// function that returns one leaves the cart as it was.
var (
	// ErrCartNotFound: an add-item for a cart that does not exist.
	ErrCartNotFound = errors.New("cart not found")

	// ErrInvalidState: an add-item on a cart whose status is neither Idle
	// nor EnteringItem.
	ErrInvalidState = errors.New("cart status does not allow this command")

	// ErrUnknownTaxCode: a line's tax_code is not in the tax table.
	ErrUnknownTaxCode = errors.New("unknown tax code")

	// ErrInvalidCart: a stored or cached cart document cannot be read.
	ErrInvalidCart = errors.New("invalid cart document")

	// ErrUnknownType: Apply does not know the command type. Command
	// validation lets none through, so it means a caller skipped
	// validation; the cart is not at fault.
	ErrUnknownType = errors.New("unknown command type")

	// ErrAmountOverflow: the command would produce an amount or quantity
	// that cannot be stored exactly: past money.Amount's int64 range, or one
	// that daprd, which decodes JSON numbers as float64, would round on save.
	ErrAmountOverflow = errors.New("cart amount out of range")

	// ErrCartTooLarge: the command would make the cart's encoded document
	// larger than the worker's size limit, so it is not applied. A
	// *TooLargeError says by how much. The limit sits well under what
	// daprd takes (its max-body-size), so that a cart is refused a line
	// with a code that says why, rather than saved until daprd refuses
	// the document and every later command with it.
	ErrCartTooLarge = errors.New("cart too large")
)

// TooLargeError is ErrCartTooLarge for one command: the size in bytes the
// cart's document would have, and the limit it would be over.
type TooLargeError struct {
	Size, Limit int
}

// Error says the size and the limit, naming the limit's setting: it
// becomes the rejected event's message, and its reader needs both to tell
// a cart that grew too large from a limit set too low.
func (e *TooLargeError) Error() string {
	return "cart would be " + strconv.Itoa(e.Size) + " bytes, over WORKER_MAX_CART_BYTES " + strconv.Itoa(e.Limit)
}

// Is makes a *TooLargeError an ErrCartTooLarge for errors.Is.
func (e *TooLargeError) Is(target error) bool { return target == ErrCartTooLarge }

// rejections are the errors RejectionCode knows, with their codes.
var rejections = []struct {
	err  error
	code string
}{
	{ErrCartNotFound, command.CodeCartNotFound},
	{ErrInvalidState, command.CodeInvalidState},
	{ErrUnknownTaxCode, command.CodeUnknownTaxCode},
	{ErrAmountOverflow, command.CodeAmountOverflow},
	{ErrCartTooLarge, command.CodeCartTooLarge},
}

// RejectionCode returns the rejection code (command.Code*) of err when err
// is one of the final rejections of the cart rules: ErrCartNotFound,
// ErrInvalidState, ErrUnknownTaxCode, ErrAmountOverflow or
// ErrCartTooLarge. These are the
// refusals a cart records, so that a replayed command is refused again the
// same way. ErrInvalidCart and ErrUnknownType are not: they blame the
// document or the caller, not the command's effect on the cart.
func RejectionCode(err error) (code string, ok bool) {
	if err == nil {
		return "", false
	}
	for _, r := range rejections {
		if errors.Is(err, r.err) {
			return r.code, true
		}
	}
	return "", false
}
