package cart

import "errors"

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
)
