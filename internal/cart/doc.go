// Package cart holds the cart rules of the upstream POS service as pure
// functions: no I/O, no clock, no storage. A cart is a Document, the
// upstream snake_case JSON with its modelled fields typed and every other
// field kept byte for byte. Apply dispatches a validated command to
// AddItems, Cache or Delete; totals and taxes are recomputed with exact,
// checked arithmetic, and an amount that cannot be stored exactly is
// refused.
//
// Reading, de-duplicating and storing carts is cartcache's job.
package cart
