package cartcache

import "errors"

var (
	// ErrCartNotFound is returned by an add-item whose cart does not exist.
	// The caller may retry for a short while: the cache that creates the
	// cart can still be in flight on another instance.
	ErrCartNotFound = errors.New("cart not found")

	// ErrInvalidState is returned by an add-item on a cart whose status is
	// neither Idle nor EnteringItem. Retrying cannot help.
	ErrInvalidState = errors.New("cart status does not allow this command")

	// ErrUnknownTaxCode is returned when a line's tax_code is not in the
	// tax table. Retrying cannot help.
	ErrUnknownTaxCode = errors.New("unknown tax code")

	// ErrInvalidCart is returned when a stored or cached cart document
	// cannot be read. Retrying cannot help.
	ErrInvalidCart = errors.New("invalid cart document")

	// ErrUnknownType is returned by Apply for a command type it does not
	// know. Command validation lets none through, so it means a caller
	// skipped validation; the cart is not at fault and retrying cannot help.
	ErrUnknownType = errors.New("unknown command type")

	// ErrAmountOverflow is returned when applying a command would produce
	// an amount or quantity that cannot be stored exactly: past
	// money.Amount's int64 range, or one that daprd, which decodes JSON
	// numbers as float64, would round on save. The cart is left unchanged
	// and retrying cannot help.
	ErrAmountOverflow = errors.New("cart amount out of range")

	// ErrConflict is returned when the document kept changing under us for
	// every allowed retry. It is transient.
	ErrConflict = errors.New("cart kept changing: too many ETag conflicts")
)
