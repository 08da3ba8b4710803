// Package statepool is the worker's client for Dapr's state API, over
// daprd's HTTP API or its gRPC API (Config.Protocol).
//
// The process builds one Client with New and shares it; Close releases its
// connections at shutdown. Each Client owns its keep-alive pool to the one
// sidecar, or with ProtocolGRPC its one gRPC channel, a single HTTP/2
// connection that multiplexes every call. Pooling is the point of the
// package: the upstream service built a fresh client per state call, paying
// a TCP handshake every time and leaving sockets in TIME_WAIT.
// ModePerRequest reproduces that behaviour over HTTP only so that
// benchmarks can compare the two.
//
// Client speaks the subset of the API the cart worker needs (get, save with
// first-write concurrency and TTL, delete, bulk get and save, and a
// metadata check) and maps Dapr's HTTP status codes and gRPC status codes
// onto the same sentinel errors in errors.go, so that callers and the
// contract suite in internal/statetest cannot tell the protocols apart.
// Answers with no sentinel are a *StatusError (HTTP) or a *GRPCError
// (gRPC). It never logs; callers decide what an error is worth.
//
// What every protocol shares is Client's, in client.go: the argument
// checks, the per-call timeout and the Hooks.OnRequest reports. One backend
// per transport does the rest, mapping daprd's answers onto those errors:
// httpBackend (http.go), grpcBackend (grpc.go), and perRequestBackend
// (onebyone.go), ModePerRequest's HTTP backend, which makes a bulk call one
// call per key.
package statepool
