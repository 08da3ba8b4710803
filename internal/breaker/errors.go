package breaker

import "errors"

// ErrOpen is returned, without calling the store, while the breaker rejects
// calls: when it is open, or half-open with all probe slots taken. The error
// then also wraps gobreaker.ErrOpenState or gobreaker.ErrTooManyRequests.
// It is also wrapped, next to the store's own error, by a failure that
// leaves the breaker not closed: the call that tripped it and a failed
// half-open probe. The consumer Naks with a delay on it and never
// dead-letters.
var ErrOpen = errors.New("state store circuit open")

// errNilStore is returned by New for a nil Store.
var errNilStore = errors.New("breaker: nil Store")
