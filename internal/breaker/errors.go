package breaker

import "errors"

// ErrOpen is returned, without calling the store, while the breaker rejects
// calls: when it is open, or half-open with all probe slots taken. The error
// then also wraps gobreaker.ErrOpenState or gobreaker.ErrTooManyRequests.
// It is also wrapped, next to the store's own error, by a failure that
// opened the breaker (the call that tripped it, a failed half-open probe)
// and by one that was waiting on the store when the breaker opened. That is
// settled by each call as it runs, never by the state after it returned.
// The consumer holds the command until the store answers again, or hands it
// back uncounted, and never dead-letters it.
var ErrOpen = errors.New("state store circuit open")

// errNilStore is returned by New for a nil Store.
var errNilStore = errors.New("breaker: nil Store")
