package breaker

import (
	"context"
	"errors"
	"net/http"

	"github.com/cartworker/cartworker/internal/statepool"
)

// IsFailure reports whether err means the state store is unhealthy, which is
// what counts toward tripping the breaker:
//
//   - a *statepool.StatusError with a 5xx status;
//   - a timeout: context.DeadlineExceeded from the per-call timeout, or a
//     net.Error whose Timeout() is true;
//   - a connection failure: dial errors, refused or reset connections,
//     broken pipes, EOF mid-response;
//   - any other error not listed below, since statepool returns nothing
//     else but failures beneath HTTP (protocol errors, a closed idle
//     connection).
//
// These are normal outcomes, not failures: nil, statepool.ErrNotFound,
// statepool.ErrETagMismatch, statepool's argument errors (ErrEmptyKey,
// ErrInvalidValue), and a StatusError below 500 (a 4xx is our bug or our
// data, not Dapr's health).
//
// context.Canceled is neither: IsFailure reports false, and the Breaker does
// not count it at all. The Breaker likewise ignores any error returned after
// the caller's own context ended; IsFailure cannot see that context.
func IsFailure(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var se *statepool.StatusError
	if errors.As(err, &se) {
		return se.StatusCode >= http.StatusInternalServerError
	}
	switch {
	case errors.Is(err, statepool.ErrNotFound),
		errors.Is(err, statepool.ErrETagMismatch),
		errors.Is(err, statepool.ErrEmptyKey),
		errors.Is(err, statepool.ErrInvalidValue):
		return false
	}
	return true
}
