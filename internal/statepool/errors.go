package statepool

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrNotFound is returned by Get when the key holds no document. Dapr answers
// 204 No Content for a missing key (404 is treated the same way), and its
// gRPC API answers OK with no data.
var ErrNotFound = errors.New("statepool: key not found")

// ErrETagMismatch is returned by Save and Delete when Dapr rejects the ETag
// with 409 Conflict, or gRPC status Aborted: the document changed (or
// vanished) since it was read.
// The caller should re-read and retry.
var ErrETagMismatch = errors.New("statepool: etag mismatch")

// ErrEmptyKey is returned when a call is made with an empty key, which Dapr
// would route to a different endpoint rather than reject.
var ErrEmptyKey = errors.New("statepool: empty key")

// ErrInvalidValue is returned by Save when the value is not a single valid
// JSON document. The value is spliced raw into the request body, so an
// unchecked value could corrupt the request or smuggle in extra keys.
var ErrInvalidValue = errors.New("statepool: value is not valid JSON")

// The errors below say the fault is not the document's: daprd or its
// configuration is wrong, so retrying the same call later, after an operator
// acts, is the only remedy. StatusError and transport errors wrap them, so
// errors.Is finds them.
var (
	// ErrUnauthorized: daprd refused the API token (401 or 403; gRPC
	// Unauthenticated or PermissionDenied). The worker's DAPR_API_TOKEN
	// does not match the sidecar's.
	ErrUnauthorized = errors.New("statepool: daprd refused the API token")
	// ErrStoreNotFound: daprd has no state store of that name, or none at
	// all (ERR_STATE_STORE_NOT_FOUND, ERR_STATE_STORES_NOT_CONFIGURED).
	ErrStoreNotFound = errors.New("statepool: state store not found")
	// ErrUnreachable: no connection to daprd could be opened.
	ErrUnreachable = errors.New("statepool: daprd not reachable")
)

// ErrResourceExhausted is wrapped by a GRPCError for ResourceExhausted, and
// by a StatusError for 413, when the call was not a save: a message over a
// size limit (daprd sends and takes at most its max-body-size, 4 MiB by
// default, over gRPC too), or daprd out of some other resource. A bulk
// read that meets it may succeed split up. A save that meets it is
// ErrTooLarge instead.
var ErrResourceExhausted = errors.New("statepool: daprd resource exhausted, such as a message over its size limit")

// ErrClosed is returned by calls made after Close with ProtocolGRPC: Close
// closes the Client's one channel for good.
var ErrClosed = errors.New("statepool: client closed")

// ErrBadRequest is wrapped by a StatusError for any other 400, and by a
// GRPCError for InvalidArgument: daprd refused this particular request, for
// example a document it cannot save. Retrying the same call cannot help.
var ErrBadRequest = errors.New("statepool: daprd rejected the request")

// ErrTooLarge is wrapped by a StatusError for 413 and by a GRPCError for
// ResourceExhausted when the call was a save (OpSave, OpSaveBulk): daprd
// refused the documents as larger than it takes, its max-body-size. It
// wraps ErrBadRequest, because it is one: the same documents are refused
// however often they are sent, so a caller that retried them as a transient
// failure would only delay their refusal. A read meets the same limit on
// what daprd answers, where splitting the call helps: that stays
// ErrResourceExhausted.
var ErrTooLarge = fmt.Errorf("%w: the documents are over its size limit", ErrBadRequest)

// Dapr error codes that mean the store itself is missing: the HTTP API's
// errorCode, and the gRPC API's ErrorInfo reason (daprd 1.18 answers a
// missing store with InvalidArgument DAPR_STATE_NOT_FOUND, and no store at
// all with FailedPrecondition DAPR_STATE_NOT_CONFIGURED).
var storeNotFoundCodes = map[string]bool{
	"ERR_STATE_STORE_NOT_FOUND":       true,
	"ERR_STATE_STORES_NOT_CONFIGURED": true,
	"ERR_STATE_STORE_NOT_CONFIGURED":  true,
	"DAPR_STATE_NOT_FOUND":            true,
	"DAPR_STATE_NOT_CONFIGURED":       true,
}

// ErrInvalidConfig is wrapped by every error that Config.Validate returns.
var ErrInvalidConfig = errors.New("statepool: invalid config")

// maxErrorBody is how much of an unexpected response body StatusError keeps.
const maxErrorBody = 256

// StatusError is returned when Dapr answers with a status the operation does
// not expect and that has no sentinel of its own.
type StatusError struct {
	// Op is the operation: OpGet, OpSave, OpDelete, OpGetBulk, OpSaveBulk
	// or OpCheck.
	Op string
	// Key is the state key the call was for.
	Key string
	// StatusCode is the HTTP status Dapr returned.
	StatusCode int
	// Body holds at most the first 256 bytes of the response body; Dapr puts
	// its errorCode and message there.
	Body string
	// ErrorCode is Dapr's errorCode from the body, such as
	// ERR_STATE_STORE_NOT_FOUND, when the body carried one.
	ErrorCode string
}

// Unwrap returns the class of the failure, so errors.Is matches
// ErrUnauthorized, ErrStoreNotFound, ErrBadRequest, ErrTooLarge (413 on a
// save) or ErrResourceExhausted (413 on any other call); nil for other
// statuses.
func (e *StatusError) Unwrap() error {
	switch {
	case storeNotFoundCodes[e.ErrorCode]:
		return ErrStoreNotFound
	case e.StatusCode == 401 || e.StatusCode == 403:
		return ErrUnauthorized
	case e.StatusCode == 400:
		return ErrBadRequest
	case e.StatusCode == 413:
		return sizeRefusal(e.Op)
	}
	return nil
}

// sizeRefusal is the class of daprd's refusal of a call as too large, by
// the call's operation: a save's documents are refused for good
// (ErrTooLarge), a read's answer may fit once the call is split
// (ErrResourceExhausted).
func sizeRefusal(op string) error {
	if op == OpSave || op == OpSaveBulk {
		return ErrTooLarge
	}
	return ErrResourceExhausted
}

// Error implements error.
func (e *StatusError) Error() string {
	var b strings.Builder
	b.WriteString("statepool: ")
	b.WriteString(e.Op)
	b.WriteByte(' ')
	b.WriteString(strconv.Quote(e.Key))
	b.WriteString(": unexpected status ")
	b.WriteString(strconv.Itoa(e.StatusCode))
	if e.Body != "" {
		b.WriteString(": ")
		b.WriteString(e.Body)
	}
	return b.String()
}
