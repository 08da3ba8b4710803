package statepool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
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

// Header names in canonical form, so assigning them straight into the
// header map skips canonicalisation on the hot path. HTTP/1.1 header names
// are case-insensitive, so Dapr's dapr-api-token matches.
const (
	headerAPIToken    = "Dapr-Api-Token"
	headerContentType = "Content-Type"
	headerIfMatch     = "If-Match"
	headerETag        = "Etag"
)

// maxDrain is the largest declared body worth draining to keep the
// connection. Dapr's bodies are tiny; past this, dropping the connection is
// cheaper than reading on.
const maxDrain = 1 << 20

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
type Client struct {
	doer        doer
	closeIdle   func()
	rpc         *grpcConn // ProtocolGRPC: the one channel; nil for HTTP
	hooks       Hooks
	timeout     time.Duration
	keyPrefix   string // <endpoint>/v1.0/state/<store>/
	saveURL     string // <endpoint>/v1.0/state/<store>
	metadataURL string // <endpoint>/v1.0/metadata
	store       string
	token       []string // shared header value, never mutated
	bufs        sync.Pool
	// oneByOne makes the bulk calls one call per key (ModePerRequest).
	oneByOne bool
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
		rpc, err := newGRPCConn(cfg)
		if err != nil {
			return nil, err
		}
		c := newClient(nil, rpc.close, cfg)
		c.rpc = rpc
		return c, nil
	}
	d, closeIdle := newDoer(cfg)
	return newClient(d, closeIdle, cfg), nil
}

// newClient takes the doer so that tests can put their own in; cfg has its
// defaults applied.
func newClient(d doer, closeIdle func(), cfg Config) *Client {
	if d != nil {
		d = &tracedDoer{next: d, t: newTracing(cfg.TracerProvider, httpHostPort(cfg.Endpoint))}
	}
	c := &Client{
		doer:        d,
		closeIdle:   closeIdle,
		hooks:       cfg.Hooks,
		timeout:     cfg.RequestTimeout,
		saveURL:     cfg.Endpoint + "/v1.0/state/" + url.PathEscape(cfg.StoreName),
		metadataURL: cfg.Endpoint + "/v1.0/metadata",
		store:       cfg.StoreName,
		oneByOne:    cfg.Mode == ModePerRequest,
	}
	c.keyPrefix = c.saveURL + "/"
	if cfg.APIToken != "" {
		c.token = []string{cfg.APIToken}
	}
	return c
}

// Close closes the client's idle connections, for a clean shutdown. Calls
// in flight finish and their connections close as they go idle; a call
// made after Close dials again. Close may be called more than once.
//
// With ProtocolGRPC, Close closes the one channel for good: calls in
// flight fail, and calls made after it return ErrClosed.
func (c *Client) Close() { c.closeIdle() }

// KeyURL is the URL of key in daprd's HTTP state API, whatever the
// client's protocol. It holds no secret (the API token travels in a
// header), so it can be shown to a user.
func (c *Client) KeyURL(key string) string {
	return c.keyPrefix + url.PathEscape(key)
}

// Get returns the document at key, or ErrNotFound.
func (c *Client) Get(ctx context.Context, key string) (Entry, error) {
	if key == "" {
		return Entry{}, ErrEmptyKey
	}
	if c.rpc != nil {
		return c.getGRPC(ctx, key)
	}
	value, etag, err := c.get(ctx, OpGet, key, c.KeyURL(key), ErrNotFound)
	return Entry{Value: value, ETag: etag}, err
}

// get is the GET that Get and Check share: it returns the body and ETag of
// a 200 answer. A 204 or 404 answer returns notFound when that is set and
// is a StatusError like any other status when it is not.
func (c *Client) get(ctx context.Context, op, key, u string, notFound error) (body []byte, etag string, err error) {
	start := time.Now()
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", wrap(op, key, err)
	}
	c.setAuth(req)
	resp, err := c.doer.Do(req)
	if err != nil {
		return nil, "", c.transportErr(op, key, start, err)
	}
	defer resp.Body.Close()

	switch {
	case resp.StatusCode == http.StatusOK:
		body, err := readBody(resp)
		if err != nil {
			return nil, "", c.transportErr(op, key, start, err)
		}
		c.report(op, start, resp.StatusCode)
		return body, resp.Header.Get(headerETag), nil
	case notFound != nil && (resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotFound):
		return nil, "", c.finish(op, start, resp, notFound)
	default:
		return nil, "", c.statusErr(op, key, start, resp)
	}
}

// Save stores value, which must be one JSON document, at key. With
// opts.ETag set it fails with ErrETagMismatch if the document changed.
func (c *Client) Save(ctx context.Context, key string, value []byte, opts SaveOptions) error {
	if key == "" {
		return ErrEmptyKey
	}
	if c.rpc != nil {
		return c.saveGRPC(ctx, key, value, opts)
	}
	// The value is spliced into the body raw, so it must be one JSON value
	// or it could smuggle in more items. segmentio's validator is several
	// times cheaper than encoding/json's on a cart, which counts here: this
	// runs on every save.
	if !sjson.Valid(value) {
		return ErrInvalidValue
	}
	return c.postSave(ctx, OpSave, key, func(b []byte) []byte {
		return appendSaveBody(b, key, value, opts)
	})
}

// postSave posts the save body that fill appends to an empty buffer, to
// daprd's HTTP save endpoint; op and key name the call in errors and
// reports.
func (c *Client) postSave(ctx context.Context, op, key string, fill func([]byte) []byte) error {
	start := time.Now()
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()

	body := c.newBody()
	defer body.release() // postSave's own reference; the transport holds others.
	body.data = fill(body.data[:0])

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.saveURL, nil)
	if err != nil {
		return wrap(op, key, err)
	}
	req.Body = body.reader()
	req.GetBody = func() (io.ReadCloser, error) { return body.reader(), nil }
	req.ContentLength = int64(len(body.data))
	req.Header[headerContentType] = jsonContentType
	c.setAuth(req)

	resp, err := c.doer.Do(req)
	if err != nil {
		return c.transportErr(op, key, start, err)
	}
	defer resp.Body.Close()

	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK, http.StatusCreated:
		return c.finish(op, start, resp, nil)
	case http.StatusConflict:
		return c.finish(op, start, resp, ErrETagMismatch)
	default:
		return c.statusErr(op, key, start, resp)
	}
}

// Delete removes key. With etag set it fails with ErrETagMismatch if the
// document changed. Deleting a missing key without an etag succeeds.
func (c *Client) Delete(ctx context.Context, key, etag string) error {
	if key == "" {
		return ErrEmptyKey
	}
	if c.rpc != nil {
		return c.deleteGRPC(ctx, key, etag)
	}
	start := time.Now()
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()

	u := c.KeyURL(key)
	if etag != "" {
		u += "?concurrency=first-write"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u, nil)
	if err != nil {
		return wrap(OpDelete, key, err)
	}
	if etag != "" {
		req.Header[headerIfMatch] = []string{etag}
	}
	c.setAuth(req)

	resp, err := c.doer.Do(req)
	if err != nil {
		return c.transportErr(OpDelete, key, start, err)
	}
	defer resp.Body.Close()

	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK:
		return c.finish(OpDelete, start, resp, nil)
	case http.StatusConflict:
		return c.finish(OpDelete, start, resp, ErrETagMismatch)
	default:
		return c.statusErr(OpDelete, key, start, resp)
	}
}

var jsonContentType = []string{"application/json"}

// withTimeout applies RequestTimeout unless the caller's deadline is already
// sooner, which saves a timer per call when the caller is the tighter bound.
func (c *Client) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= c.timeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.timeout)
}

func (c *Client) setAuth(req *http.Request) {
	if c.token != nil {
		req.Header[headerAPIToken] = c.token
	}
}

// finish drains the body so the connection goes back to the pool, then
// reports the call. A failed drain is reported but does not override err:
// the status was already received and decides the outcome.
func (c *Client) finish(op string, start time.Time, resp *http.Response, err error) error {
	drain(resp)
	c.report(op, start, resp.StatusCode)
	return err
}

func (c *Client) statusErr(op, key string, start time.Time, resp *http.Response) error {
	var head [maxErrorBody]byte
	n, _ := io.ReadFull(resp.Body, head[:])
	drain(resp)
	c.report(op, start, resp.StatusCode)
	return &StatusError{Op: op, Key: key, StatusCode: resp.StatusCode, Body: string(head[:n]), ErrorCode: errorCode(head[:n])}
}

// errorCode extracts Dapr's errorCode from an error body, "" if none. The
// body may be cut short at maxErrorBody, so a failed decode still searches
// for the field.
func errorCode(body []byte) string {
	var v struct {
		ErrorCode string `json:"errorCode"`
	}
	if sjson.Unmarshal(body, &v) == nil {
		return v.ErrorCode
	}
	_, rest, ok := bytes.Cut(body, []byte(`"errorCode":"`))
	if !ok {
		return ""
	}
	code, _, ok := bytes.Cut(rest, []byte(`"`))
	if !ok {
		return ""
	}
	return string(code)
}

func (c *Client) transportErr(op, key string, start time.Time, err error) error {
	// url.Error repeats the method and full URL; the key is context enough.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		// Nothing reached daprd: its absence, not the call, is at fault.
		err = fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	if c.hooks.OnRequest != nil {
		code := CodeError
		if isTimeout(err) {
			code = CodeTimeout
		}
		c.hooks.OnRequest(op, code, time.Since(start))
	}
	return wrap(op, key, err)
}

func (c *Client) report(op string, start time.Time, status int) {
	if c.hooks.OnRequest != nil {
		c.hooks.OnRequest(op, statusCode(status), time.Since(start))
	}
}

func wrap(op, key string, err error) error {
	return fmt.Errorf("statepool: %s %q: %w", op, key, err)
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// statusCode avoids an allocation per call for the statuses Dapr returns.
func statusCode(status int) string {
	switch status {
	case http.StatusOK:
		return "200"
	case http.StatusNoContent:
		return "204"
	case http.StatusBadRequest:
		return "400"
	case http.StatusUnauthorized:
		return "401"
	case http.StatusNotFound:
		return "404"
	case http.StatusConflict:
		return "409"
	case http.StatusInternalServerError:
		return "500"
	case http.StatusBadGateway:
		return "502"
	case http.StatusServiceUnavailable:
		return "503"
	default:
		return strconv.Itoa(status)
	}
}

// readBody reads the whole body into a slice sized from Content-Length, so
// the common case costs one allocation of exactly the document's size.
func readBody(resp *http.Response) ([]byte, error) {
	if n := resp.ContentLength; n >= 0 && n <= maxDrain {
		b := make([]byte, n)
		if _, err := io.ReadFull(resp.Body, b); err != nil {
			return nil, err
		}
		drain(resp)
		return b, nil
	}
	// daprd sends documents over ~2 KB chunked, without a length. Start
	// from a buffer that fits a typical cart so that io.ReadAll's doubling
	// does not copy it several times.
	buf := bytes.NewBuffer(make([]byte, 0, unknownLengthHint))
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// unknownLengthHint is the first buffer for a body of unknown length: a
// 20-line cart is about 9 KB.
const unknownLengthHint = 16 << 10

// drain reads the rest of the body so the transport can reuse the
// connection. A chunked body of unknown size is still bounded by the
// per-call timeout. io.Copy into io.Discard uses a pooled buffer, so this
// allocates nothing.
func drain(resp *http.Response) {
	if resp.ContentLength > maxDrain {
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
}

// appendSaveBody appends Dapr's bulk save body for one item: [item].
func appendSaveBody(b []byte, key string, value []byte, opts SaveOptions) []byte {
	b = append(b, '[')
	return append(appendSaveItem(b, key, value, opts), ']')
}

// appendSaveItem appends one item of Dapr's bulk save body:
//
//	{"key":K,"value":V,"etag":E,"options":{"concurrency":"first-write"},"metadata":{"ttlInSeconds":"N"}}
//
// value is spliced in raw (it is already JSON), so Dapr stores the document
// rather than a string holding it.
//
// The key and ETag are written by segmentio's AppendEscape, which allocates
// nothing and, like encoding/json, turns invalid UTF-8 into U+FFFD. Passing
// such bytes through instead would gain nothing: daprd decodes the body
// with encoding/json, which makes the same replacement without an error.
func appendSaveItem(b []byte, key string, value []byte, opts SaveOptions) []byte {
	b = append(b, `{"key":`...)
	b = sjson.AppendEscape(b, key, 0)
	b = append(b, `,"value":`...)
	b = append(b, value...)
	if opts.ETag != "" {
		b = append(b, `,"etag":`...)
		b = sjson.AppendEscape(b, opts.ETag, 0)
		b = append(b, `,"options":{"concurrency":"first-write"}`...)
	}
	if opts.TTL > 0 {
		secs := int64((opts.TTL + time.Second - 1) / time.Second)
		b = append(b, `,"metadata":{"ttlInSeconds":"`...)
		b = strconv.AppendInt(b, secs, 10)
		b = append(b, `"}`...)
	}
	return append(b, '}')
}

// saveBody is a pooled request buffer shared by Save and every reader the
// transport takes from it (the body and any GetBody replay). Each holds a
// reference; the buffer returns to the pool only when all have let go,
// because the transport may still read a body after Do returns.
//
// The pool is kept because it measurably pays: with a fresh buffer and
// http.NewRequest's bytes.Reader instead, BenchmarkClientOverhead/save-9KB
// went from about 1.3 KB, 11 allocs and 5 µs per save to 10.9 KB, 14
// allocs and 10 µs, and a 9 KB get+save round trip allocated 7 % more.
type saveBody struct {
	data  []byte
	refs  atomic.Int32
	pool  *sync.Pool
	first saveBodyReader // the request body; GetBody replays allocate
	used  bool           // first has been handed out
}

func (c *Client) newBody() *saveBody {
	b, ok := c.bufs.Get().(*saveBody)
	if !ok {
		b = &saveBody{pool: &c.bufs}
	}
	b.refs.Store(1)
	b.used = false
	return b
}

// reader is called by Save and by the transport inside Do, never
// concurrently, so used needs no lock.
func (b *saveBody) reader() io.ReadCloser {
	b.refs.Add(1)
	if !b.used {
		b.used = true
		b.first.Reader.Reset(b.data)
		b.first.owner = b
		b.first.closed.Store(false)
		return &b.first
	}
	r := &saveBodyReader{owner: b}
	r.Reader.Reset(b.data)
	return r
}

// maxPooledBody keeps one oversized cart from pinning its buffer forever.
const maxPooledBody = 64 << 10

func (b *saveBody) release() {
	if b.refs.Add(-1) == 0 && cap(b.data) <= maxPooledBody {
		b.pool.Put(b)
	}
}

type saveBodyReader struct {
	bytes.Reader
	owner  *saveBody
	closed atomic.Bool
}

func (r *saveBodyReader) Close() error {
	if r.closed.CompareAndSwap(false, true) {
		r.owner.release()
	}
	return nil
}
