// Package statepool is the worker's HTTP client for Dapr's state API.
//
// The process builds one Client with New and shares it; Close releases its
// idle connections at shutdown. Each Client owns its keep-alive pool to the
// one sidecar. Pooling is the point of the package: the upstream service
// built a fresh client per state call, paying a TCP handshake every time and
// leaving sockets in TIME_WAIT. ModePerRequest reproduces that behaviour
// only so that benchmarks can compare the two.
//
// Client speaks the subset of the API the cart worker needs (get, save with
// first-write concurrency and TTL, delete, and a metadata check) and maps
// Dapr's status codes onto the sentinel errors in errors.go. It never logs;
// callers decide what an error is worth.
package statepool
