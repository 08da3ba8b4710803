package breaker

import "errors"

// ErrOpen is returned, without calling the store, while the breaker rejects
// calls: when it is open, or half-open with all probe slots taken. The error
// also wraps gobreaker.ErrOpenState or gobreaker.ErrTooManyRequests. The
// consumer should Nak with a delay rather than retry at once.
var ErrOpen = errors.New("state store circuit open")

// errNilStore is returned by New for a nil Store.
var errNilStore = errors.New("breaker: nil Store")
