// Package cartcache keeps carts in a Dapr state store. Update is its one
// way to change a cart: it reads the cart, skips a command it has already
// applied, lets a pure function (internal/cart) compute the next cart, and
// saves it guarded by the ETag it read, re-reading after a conflicting
// write.
//
// The ids of the commands already applied travel inside the document, in
// the same guarded save, so a redelivered or republished command is
// recognised and changes nothing, however it arrives. A deleted cart leaves
// a tombstone with those ids for a while, so that late redeliveries are
// still recognised after the delete.
package cartcache
