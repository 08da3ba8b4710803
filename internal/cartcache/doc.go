// Package cartcache applies cart commands to cart documents kept in a Dapr
// state store.
//
// Every command is a read-modify-write guarded by the document's ETag: a
// conflicting writer makes the save answer 409, and the command is re-read
// and re-applied. The ids of the commands already applied travel inside the
// document, in the same guarded save, so a redelivered or republished command
// is recognised and changes nothing, however it arrives.
//
// The document keeps the upstream POS service's snake_case shape. Only the
// fields this package models are rewritten; every other field survives
// byte for byte.
package cartcache
