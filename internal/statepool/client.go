package statepool

import (
	"context"
	"fmt"
	"time"

	sjson "github.com/segmentio/encoding/json"
)

// Operation names reported to Hooks.OnRequest and in StatusError.Op; Check
// reports OpCheck.
const (
	OpGet    = "get"
	OpSave   = "save"
	OpDelete = "delete"
)

// Codes reported to Hooks.OnRequest when no HTTP status was received.
const (
	CodeTimeout = "timeout"
	CodeError   = "error"
)

// Entry is a stored document and the ETag it was read at.
type Entry struct {
	// Value is the raw JSON document.
	Value []byte
	// ETag is Dapr's version of the document; pass it to Save or Delete to
	// make them conditional.
	ETag string
}

// SaveOptions tunes a Save.
type SaveOptions struct {
	// ETag, when set, makes the save conditional (first-write concurrency):
	// Dapr answers 409 (gRPC Aborted), surfaced as ErrETagMismatch, if the
	// document has changed or does not exist.
	ETag string
	// TTL, when positive, expires the document after that long. Dapr counts
	// whole seconds, so it is rounded up.
	TTL time.Duration
}

// Client calls Dapr's state API for one store through its own connection
// pool, or its own gRPC channel with ProtocolGRPC. It is safe for concurrent
// use. Build one per process and share it: a client per call defeats the
// pool.
//
// Client holds what every transport shares: the argument checks, the
// timeout and the OnRequest reports of each call. Its backend, fixed by
// New, does the transport's work and maps daprd's answers onto the errors
// in errors.go.
type Client struct {
	backend backend
	hooks   Hooks
	timeout time.Duration
	urls    httpURLs // for KeyURL, whatever the protocol
	store   string
}

// backend is one transport to daprd: httpBackend, perRequestBackend or
// grpcBackend. Client has checked the arguments; each method makes call k,
// bounded by k.bound and reported through k.report (perRequestBackend
// makes a bulk call as calls of its own, one per key), and returns the
// client's errors: the sentinels of errors.go, a *StatusError or a
// *GRPCError. The key of a single-key call is k.key.
type backend interface {
	get(ctx context.Context, k call) (Entry, error)
	save(ctx context.Context, k call, value []byte, opts SaveOptions) error
	delete(ctx context.Context, k call, etag string) error
	getBulk(ctx context.Context, k call, keys []string) ([]BulkEntry, error)
	saveBulk(ctx context.Context, k call, items []SaveItem) error
	// components lists the components daprd's metadata names, for Check.
	components(ctx context.Context, k call) ([]component, error)
	// close releases the connections; see Client.Close.
	close()
}

// New returns a Client for cfg, which must pass Validate, with the
// transport cfg.Protocol and cfg.Mode ask for: the HTTP keep-alive pool, a
// connection per call for benchmarks, or one gRPC channel. Close releases
// its connections.
//
// With ProtocolGRPC, New creates the channel without dialling: the first
// call connects, so New succeeds while daprd is still starting, as it does
// with HTTP.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.Protocol == ProtocolGRPC {
		g, err := newGRPCBackend(cfg)
		if err != nil {
			return nil, err
		}
		return newClient(g, cfg), nil
	}
	d, closeIdle := newDoer(cfg)
	return newClient(newHTTPBackend(d, closeIdle, cfg), cfg), nil
}

// newClient puts b behind a Client; cfg has its defaults applied.
func newClient(b backend, cfg Config) *Client {
	return &Client{
		backend: b,
		hooks:   cfg.Hooks,
		timeout: cfg.RequestTimeout,
		urls:    newHTTPURLs(cfg),
		store:   cfg.StoreName,
	}
}

// Close closes the client's idle connections, for a clean shutdown. Calls
// in flight finish and their connections close as they go idle; a call
// made after Close dials again. Close may be called more than once.
//
// With ProtocolGRPC, Close closes the one channel for good: calls in
// flight fail, and calls made after it return ErrClosed.
func (c *Client) Close() { c.backend.close() }

// KeyURL is the URL of key in daprd's HTTP state API, whatever the
// client's protocol. It holds no secret (the API token travels in a
// header), so it can be shown to a user.
func (c *Client) KeyURL(key string) string { return c.urls.key(key) }

// Get returns the document at key, or ErrNotFound.
func (c *Client) Get(ctx context.Context, key string) (Entry, error) {
	if key == "" {
		return Entry{}, ErrEmptyKey
	}
	return c.backend.get(ctx, c.newCall(OpGet, key))
}

// Save stores value, which must be one JSON document, at key. With
// opts.ETag set it fails with ErrETagMismatch if the document changed.
func (c *Client) Save(ctx context.Context, key string, value []byte, opts SaveOptions) error {
	if key == "" {
		return ErrEmptyKey
	}
	// The HTTP backend splices the value into the body raw, so it must be
	// one JSON value or it could smuggle in more items; the gRPC backend
	// is held to the same rule, so the protocols cannot be told apart.
	// segmentio's validator is several times cheaper than encoding/json's
	// on a cart, which counts here: this runs on every save.
	if !sjson.Valid(value) {
		return ErrInvalidValue
	}
	return c.backend.save(ctx, c.newCall(OpSave, key), value, opts)
}

// Delete removes key. With etag set it fails with ErrETagMismatch if the
// document changed. Deleting a missing key without an etag succeeds.
func (c *Client) Delete(ctx context.Context, key, etag string) error {
	if key == "" {
		return ErrEmptyKey
	}
	return c.backend.delete(ctx, c.newCall(OpDelete, key), etag)
}

// call is one state call as Client hands it to its backend: the operation
// and the key that name it in errors and reports (a bulk call's first
// key), when it started, and the Client whose RequestTimeout bounds it and
// whose OnRequest hook hears of it.
type call struct {
	client *Client
	op     string
	key    string
	start  time.Time
}

func (c *Client) newCall(op, key string) call {
	return call{client: c, op: op, key: key, start: time.Now()}
}

// bound applies RequestTimeout unless the caller's deadline is already
// sooner, which saves a timer per call when the caller is the tighter
// bound. A backend bounds each call itself rather than Client doing it
// for every call, because perRequestBackend makes a bulk call as one call
// per key, each with a RequestTimeout of its own.
func (k call) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	timeout := k.client.timeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= timeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, timeout)
}

// report tells Hooks.OnRequest that daprd answered the call with code, or
// that the call failed without an answer (CodeError, CodeTimeout).
func (k call) report(code string) {
	if on := k.client.hooks.OnRequest; on != nil {
		on(k.op, code, time.Since(k.start))
	}
}

// wrap names the call in err.
func (k call) wrap(err error) error {
	return fmt.Errorf("statepool: %s %q: %w", k.op, k.key, err)
}
