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
	"slices"
	"strconv"
	"sync"

	sjson "github.com/segmentio/encoding/json"
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

var jsonContentType = []string{"application/json"}

// maxMetadataBody bounds the metadata document Check reads. A sidecar lists
// every component, subscription and actor type there; a megabyte is far
// more than any real one.
const maxMetadataBody = 1 << 20

// httpURLs are the URLs of one store in daprd's HTTP API.
type httpURLs struct {
	keyPrefix   string // <endpoint>/v1.0/state/<store>/
	saveURL     string // <endpoint>/v1.0/state/<store>
	metadataURL string // <endpoint>/v1.0/metadata
}

// newHTTPURLs builds the URLs of cfg, which has its defaults applied.
func newHTTPURLs(cfg Config) httpURLs {
	save := cfg.Endpoint + "/v1.0/state/" + url.PathEscape(cfg.StoreName)
	return httpURLs{keyPrefix: save + "/", saveURL: save, metadataURL: cfg.Endpoint + "/v1.0/metadata"}
}

// key is the URL of key.
func (u httpURLs) key(key string) string {
	return u.keyPrefix + url.PathEscape(key)
}

// httpBackend calls daprd's HTTP state API through a doer: the keep-alive
// pool of ModePooled, or perRequestDoer's connection per call, traced by
// tracedDoer.
type httpBackend struct {
	httpURLs
	doer      doer
	closeIdle func()
	token     []string // shared header value, never mutated
	bufs      sync.Pool
}

var _ backend = (*httpBackend)(nil)

// newHTTPBackend returns the backend that sends cfg's calls through d,
// whose idle connections closeIdle releases: the HTTP backend itself, or
// with ModePerRequest perRequestBackend, which makes a bulk call one call
// per key. cfg has its defaults applied.
func newHTTPBackend(d doer, closeIdle func(), cfg Config) backend {
	h := &httpBackend{
		httpURLs:  newHTTPURLs(cfg),
		doer:      &tracedDoer{next: d, t: newTracing(cfg.TracerProvider, httpHostPort(cfg.Endpoint))},
		closeIdle: closeIdle,
	}
	if cfg.APIToken != "" {
		h.token = []string{cfg.APIToken}
	}
	if cfg.Mode == ModePerRequest {
		return perRequestBackend{h}
	}
	return h
}

func (h *httpBackend) close() { h.closeIdle() }

func (h *httpBackend) get(ctx context.Context, k call) (Entry, error) {
	value, etag, err := h.fetch(ctx, k, h.key(k.key), ErrNotFound)
	return Entry{Value: value, ETag: etag}, err
}

// fetch is the GET that get and components share: it returns the body and
// ETag of a 200 answer. A 204 or 404 answer returns notFound when that is
// set and is a StatusError like any other status when it is not.
func (h *httpBackend) fetch(ctx context.Context, k call, u string, notFound error) (body []byte, etag string, err error) {
	err = h.roundTrip(ctx, k, http.MethodGet, u, nil, nil, func(resp *http.Response) error {
		switch {
		case resp.StatusCode == http.StatusOK:
			b, err := readAnswer(k, resp)
			if err != nil {
				return err
			}
			body, etag = b, resp.Header.Get(headerETag)
			return nil
		case notFound != nil && (resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotFound):
			return finish(k, resp, notFound)
		default:
			return statusErr(k, resp)
		}
	})
	return body, etag, err
}

func (h *httpBackend) save(ctx context.Context, k call, value []byte, opts SaveOptions) error {
	return h.post(ctx, k, func(b []byte) []byte {
		return appendSaveBody(b, k.key, value, opts)
	})
}

func (h *httpBackend) saveBulk(ctx context.Context, k call, items []SaveItem) error {
	return h.post(ctx, k, func(b []byte) []byte {
		b = append(b, '[')
		for i, it := range items {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendSaveItem(b, it.Key, it.Value, it.Opts)
		}
		return append(b, ']')
	})
}

// post posts the save body that fill appends to an empty buffer to daprd's
// save endpoint, which takes one item or many alike.
func (h *httpBackend) post(ctx context.Context, k call, fill func([]byte) []byte) error {
	body := h.newBody()
	defer body.release() // post's own reference; the transport holds others.
	body.data = fill(body.data[:0])

	return h.roundTrip(ctx, k, http.MethodPost, h.saveURL, nil, func(req *http.Request) {
		req.Body = body.reader()
		req.GetBody = func() (io.ReadCloser, error) { return body.reader(), nil }
		req.ContentLength = int64(len(body.data))
		req.Header[headerContentType] = jsonContentType
	}, func(resp *http.Response) error {
		return wrote(k, resp, http.StatusNoContent, http.StatusOK, http.StatusCreated)
	})
}

func (h *httpBackend) delete(ctx context.Context, k call, etag string) error {
	u := h.key(k.key)
	if etag != "" {
		u += "?concurrency=first-write"
	}
	return h.roundTrip(ctx, k, http.MethodDelete, u, nil, func(req *http.Request) {
		if etag != "" {
			req.Header[headerIfMatch] = []string{etag}
		}
	}, func(resp *http.Response) error {
		return wrote(k, resp, http.StatusNoContent, http.StatusOK)
	})
}

// bulkGetItem is one element of the HTTP bulk get answer.
type bulkGetItem struct {
	Key   string           `json:"key"`
	Data  sjson.RawMessage `json:"data"`
	ETag  *string          `json:"etag"`
	Error string           `json:"error"`
}

func (h *httpBackend) getBulk(ctx context.Context, k call, keys []string) ([]BulkEntry, error) {
	reqBody, err := sjson.Marshal(struct {
		Keys []string `json:"keys"`
	}{keys})
	if err != nil {
		return nil, k.wrap(err)
	}
	var items []bulkGetItem
	err = h.roundTrip(ctx, k, http.MethodPost, h.keyPrefix+"bulk", bytes.NewReader(reqBody), func(req *http.Request) {
		req.Header[headerContentType] = jsonContentType
	}, func(resp *http.Response) error {
		if resp.StatusCode != http.StatusOK {
			return statusErr(k, resp)
		}
		body, err := readAnswer(k, resp)
		if err != nil {
			return err
		}
		if err := sjson.Unmarshal(body, &items); err != nil {
			return k.wrap(fmt.Errorf("decode answer: %w", err))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return matchBulk(keys, len(items), func(i int) (string, []byte, string, string) {
		it := items[i]
		etag := ""
		if it.ETag != nil {
			etag = *it.ETag
		}
		return it.Key, it.Data, etag, it.Error
	})
}

// components asks GET /v1.0/metadata.
func (h *httpBackend) components(ctx context.Context, k call) ([]component, error) {
	body, _, err := h.fetch(ctx, k, h.metadataURL, nil)
	if err != nil {
		return nil, err
	}
	if len(body) > maxMetadataBody {
		body = body[:maxMetadataBody]
	}
	var md struct {
		Components []component `json:"components"`
	}
	if err := sjson.Unmarshal(body, &md); err != nil {
		return nil, fmt.Errorf("statepool: daprd metadata: %w", err)
	}
	return md.Components, nil
}

// roundTrip makes call k as one HTTP request, method to u with body,
// bounded by the call's timeout and carrying the API token and whatever
// headers prep, when set, adds. answer turns daprd's response into the
// call's outcome while the request's context still runs; roundTrip closes
// the body after it. A request that got no response is reported and
// failed here.
func (h *httpBackend) roundTrip(ctx context.Context, k call, method, u string, body io.Reader,
	prep func(*http.Request), answer func(*http.Response) error,
) error {
	ctx, cancel := k.bound(ctx)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return k.wrap(err)
	}
	if prep != nil {
		prep(req)
	}
	if h.token != nil {
		req.Header[headerAPIToken] = h.token
	}
	resp, err := h.doer.Do(req)
	if err != nil {
		return transportErr(k, err)
	}
	defer resp.Body.Close()
	return answer(resp)
}

// readAnswer reads a 200 answer's body and reports the call; a body cut
// short fails the call like a transport error.
func readAnswer(k call, resp *http.Response) ([]byte, error) {
	body, err := readBody(resp)
	if err != nil {
		return nil, transportErr(k, err)
	}
	k.report(statusCode(resp.StatusCode))
	return body, nil
}

// wrote is the outcome of a write (a save or a delete): success for the
// statuses in ok, ErrETagMismatch for 409, a StatusError for any other.
func wrote(k call, resp *http.Response, ok ...int) error {
	switch {
	case slices.Contains(ok, resp.StatusCode):
		return finish(k, resp, nil)
	case resp.StatusCode == http.StatusConflict:
		return finish(k, resp, ErrETagMismatch)
	default:
		return statusErr(k, resp)
	}
}

// finish drains the body so the connection goes back to the pool, then
// reports the call. A failed drain is reported but does not override err:
// the status was already received and decides the outcome.
func finish(k call, resp *http.Response, err error) error {
	drain(resp)
	k.report(statusCode(resp.StatusCode))
	return err
}

func statusErr(k call, resp *http.Response) error {
	var head [maxErrorBody]byte
	n, _ := io.ReadFull(resp.Body, head[:])
	drain(resp)
	k.report(statusCode(resp.StatusCode))
	return &StatusError{Op: k.op, Key: k.key, StatusCode: resp.StatusCode, Body: string(head[:n]), ErrorCode: errorCode(head[:n])}
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

// transportErr reports and returns a call that got no complete response.
func transportErr(k call, err error) error {
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
	code := CodeError
	if isTimeout(err) {
		code = CodeTimeout
	}
	k.report(code)
	return k.wrap(err)
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
