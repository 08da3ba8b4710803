// Package cartcache keeps carts in a Dapr state store. Every change of a
// cart is a read-modify-write that storage owns: read the cart, skip a
// command it has already handled, let a pure function (internal/cart)
// compute the next cart, and save it guarded by the ETag it read,
// re-reading after a conflicting write. UpdateBatchAt does it for several
// commands of one cart in one read and one save, UpdateCarts for several
// carts at once, in one bulk read and one bulk save, and ApplyCarts, what
// the worker calls, binds each command to the cart rules and takes one
// cart through UpdateBatchAt, several through UpdateCarts. Apply (Update for one command) is the same for a caller
// that applies one command at a time, such as the Watermill peer in
// bench/watermillpeer.
//
// The ids of the commands already handled travel inside the document, in
// the same guarded save, so a redelivered or republished command is
// recognised and changes nothing, however it arrives. A command the cart
// rules refused (cart.RejectionCode) is handled too: its id is listed with
// the applied ones and its code kept beside them, so a replay is refused
// again with the same code (PriorRejection), even after the cart has
// changed in a way that would now let it apply. A command that would make
// the cart larger than Config.MaxCartBytes is refused the same way
// (cart.ErrCartTooLarge), before daprd could refuse the save. A missing
// cart keeps that history in its tombstone for TombstoneTTL: after a
// delete, so that late redeliveries are still recognised, and after a
// refusal of a command that came before the cart's cache, which the cart
// starts from when the cache comes.
//
// Writes are fenced by partition ownership: each owner of a partition of
// the command stream writes at its Epoch, the document (or tombstone)
// keeps the Epoch of its last writer, and a write at a lower Epoch is
// refused with ErrFenced. The check is made on the document the write is
// guarded by, so the ETag compare-and-swap makes it part of the write, and
// a stale owner that loses an ETag race to a newer one is fenced on the
// re-read. The zero Epoch is unfenced and keeps the stored one.
package cartcache
