package breaker

import (
	"context"
	"errors"
	"net/http"

	"google.golang.org/grpc/codes"

	"github.com/cartworker/cartworker/internal/statepool"
)

// IsFailure reports whether err means the state store is unhealthy, which is
// what counts toward tripping the breaker:
//
//   - a *statepool.StatusError with a 5xx status;
//   - a *statepool.GRPCError whose code is a server fault, the codes that
//     map to a 5xx (Unknown, DeadlineExceeded, Unimplemented, Internal,
//     Unavailable, DataLoss), which includes a sidecar that cannot be
//     reached;
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
// ErrInvalidValue), a StatusError below 500 (a 4xx is our bug or our
// data, not Dapr's health), and a GRPCError with any other code
// (InvalidArgument, Unauthenticated, PermissionDenied, NotFound,
// FailedPrecondition, ResourceExhausted, ...: the 4xx of gRPC).
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
	var ge *statepool.GRPCError
	if errors.As(err, &ge) {
		return grpcServerFault(ge.Code)
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

// grpcServerFault reports whether a gRPC status code says the server, not
// the request, is at fault: the codes gRPC's HTTP mapping (grpc-gateway's)
// turns into a 5xx.
func grpcServerFault(code codes.Code) bool {
	switch code {
	case codes.Unknown, codes.DeadlineExceeded, codes.Unimplemented,
		codes.Internal, codes.Unavailable, codes.DataLoss:
		return true
	}
	return false
}
