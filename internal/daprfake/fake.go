// Package daprfake is an in-process fake of Dapr's HTTP and gRPC state APIs
// for unit tests and benchmarks.
//
// It serves the endpoints the worker uses on an httptest.Server, and, from
// the first call of GRPCAddr, the same calls of daprd's gRPC API
// (GetState, SaveState, DeleteState, GetMetadata) on a grpc.Server. Both
// share one in-memory store with integer ETags, honour first-write
// concurrency and TTL metadata, the API token, the store name and the
// injected faults, and let tests read back what they saw, including how
// many TCP connections clients opened.
//
// ETags come from one counter for the whole fake, so they never repeat.
// Dapr's Redis store instead versions each key from 1, so a key deleted and
// re-created there can reuse an old ETag; do not test logic that relies on
// either behaviour.
package daprfake

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// Operation names accepted by Requests.
const (
	OpGet      = "get"
	OpGetBulk  = "get_bulk"
	OpSave     = "save"
	OpDelete   = "delete"
	OpHealthz  = "healthz"
	OpMetadata = "metadata"
)

// DefaultStoreName is the store the fake serves unless WithStoreName says
// otherwise.
const DefaultStoreName = "cartstore"

// Option configures a Fake.
type Option func(*Fake)

// WithAPIToken makes the fake require the dapr-api-token header on state
// calls, answering 401 without it. /v1.0/healthz stays open, as in daprd.
func WithAPIToken(token string) Option {
	return func(f *Fake) { f.token = token }
}

// WithStoreName sets the only store name the fake answers for; other names
// get 400 ERR_STATE_STORE_NOT_FOUND. Default DefaultStoreName.
func WithStoreName(name string) Option {
	return func(f *Fake) { f.store = name }
}

// WithClock replaces time.Now for TTL expiry, so tests can expire documents
// without waiting.
func WithClock(now func() time.Time) Option {
	return func(f *Fake) { f.now = now }
}

type item struct {
	doc     []byte
	etag    uint64
	ttl     time.Duration
	expires time.Time // zero: never
}

// Fake is a running fake Dapr sidecar. All methods are safe for concurrent
// use.
type Fake struct {
	srv   *httptest.Server
	store string
	token string
	now   func() time.Time
	done  chan struct{}
	close sync.Once

	grpcOnce sync.Once
	grpcSrv  *grpc.Server // nil until GRPCAddr
	grpcAddr string

	mu       sync.Mutex
	items    map[string]item
	lastETag uint64
	failCode int
	failErr  string // Dapr errorCode of injected failures
	failLeft int    // < 0: until Heal
	delay    time.Duration
	opened   int
	open     int
	maxOpen  int
	requests map[string]int
	// traceparents are the W3C traceparent values requests carried, by op.
	traceparents map[string][]string
}

// New starts a fake. Call Close when done, typically via t.Cleanup.
func New(opts ...Option) *Fake {
	f := &Fake{
		store:    DefaultStoreName,
		now:      time.Now,
		done:     make(chan struct{}),
		items:    make(map[string]item),
		requests: make(map[string]int),

		traceparents: make(map[string][]string),
	}
	for _, o := range opts {
		o(f)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1.0/state/{store}", f.handleSave)
	mux.HandleFunc("GET /v1.0/state/{store}/{key}", f.handleGet)
	mux.HandleFunc("POST /v1.0/state/{store}/bulk", f.handleGetBulk)
	mux.HandleFunc("DELETE /v1.0/state/{store}/{key}", f.handleDelete)
	mux.HandleFunc("GET /v1.0/healthz", f.handleHealthz)
	mux.HandleFunc("GET /v1.0/metadata", f.handleMetadata)

	f.srv = httptest.NewUnstartedServer(mux)
	f.srv.Config.ConnState = f.connState
	f.srv.Start()
	return f
}

// URL is the base URL to use as statepool.Config.Endpoint.
func (f *Fake) URL() string { return f.srv.URL }

// Close stops the servers, cutting short any delayed requests. It is safe to
// call more than once.
func (f *Fake) Close() {
	f.close.Do(func() {
		close(f.done)
		f.srv.Close()
		// Waits for a GRPCAddr starting the server, and keeps any later
		// one from starting it.
		f.grpcOnce.Do(func() {})
		if f.grpcSrv != nil {
			f.grpcSrv.Stop()
		}
	})
}

// FailWith makes every request answer code until Heal.
func (f *Fake) FailWith(code int) { f.FailNext(-1, code) }

// FailNext makes the next n requests answer code; n < 0 means until Heal.
func (f *Fake) FailNext(n, code int) { f.FailNextWith(n, code, "ERR_FAKE_INJECTED") }

// FailNextWith makes the next n state requests answer status with Dapr's
// errorCode in the body, as daprd does: for example 400
// ERR_STATE_SAVE, or 403 ERR_UNAUTHORIZED. n < 0 means until Heal. Health
// and metadata requests are not affected; SetToken and SetStoreName change
// what those see.
//
// Over gRPC the fault is the status daprd 1.18 answers in its place (see
// GRPCCode): 400 InvalidArgument, 401 Unauthenticated, 403
// PermissionDenied, 409 Aborted, 413 and 429 ResourceExhausted, 500
// Internal, 503 Unavailable, 504 DeadlineExceeded, and
// FailedPrecondition for a store that is not
// configured, with errorCode as the reason of an ErrorInfo detail (the
// store codes as daprd's gRPC API spells them: DAPR_STATE_NOT_FOUND,
// DAPR_STATE_NOT_CONFIGURED).
func (f *Fake) FailNextWith(n, status int, errorCode string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failCode, f.failLeft, f.failErr = status, n, errorCode
}

// SetToken changes the API token the fake requires; "" requires none. It
// lets a test fix a wrong token while a client keeps running.
func (f *Fake) SetToken(token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.token = token
}

// SetStoreName changes the only store the fake serves and lists in its
// metadata.
func (f *Fake) SetStoreName(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.store = name
}

// Heal stops injected failures.
func (f *Fake) Heal() { f.FailNext(0, 0) }

// SetDelay holds every request for d before answering; zero removes it.
func (f *Fake) SetDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

// Conns reports how many TCP connections the fake has accepted and the most
// that were open at once, over HTTP and gRPC together.
func (f *Fake) Conns() (opened, maxOpen int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opened, f.maxOpen
}

// OpenConns reports how many connections are open now.
func (f *Fake) OpenConns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open
}

// Requests reports how many requests arrived for op (OpGet, OpSave,
// OpDelete, OpHealthz, OpMetadata) over either API, including rejected and
// failed ones.
func (f *Fake) Requests(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[op]
}

// Traceparents returns the W3C traceparent values that requests for op
// carried (the traceparent header, or gRPC metadata), in arrival order;
// requests without one are left out.
func (f *Fake) Traceparents(op string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.traceparents[op]...)
}

// Get returns a copy of the stored document at key, honouring TTL.
func (f *Fake) Get(key string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	it, ok := f.lookup(key)
	if !ok {
		return nil, false
	}
	return append([]byte(nil), it.doc...), true
}

// ETag returns the current ETag of key.
func (f *Fake) ETag(key string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	it, ok := f.lookup(key)
	if !ok {
		return "", false
	}
	return strconv.FormatUint(it.etag, 10), true
}

// TTL returns the ttlInSeconds last saved with key, zero if none.
func (f *Fake) TTL(key string) (time.Duration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	it, ok := f.lookup(key)
	if !ok {
		return 0, false
	}
	return it.ttl, true
}

// Put seeds key with doc, bypassing faults and concurrency checks, and
// returns the new ETag.
func (f *Fake) Put(key string, doc []byte) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastETag++
	f.items[key] = item{doc: append([]byte(nil), doc...), etag: f.lastETag}
	return strconv.FormatUint(f.lastETag, 10)
}

// Len reports how many live documents the fake holds.
func (f *Fake) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for k := range f.items {
		if _, ok := f.lookup(k); ok {
			n++
		}
	}
	return n
}

// lookup returns the live item at key, dropping it if expired. f.mu must be
// held.
func (f *Fake) lookup(key string) (item, bool) {
	it, ok := f.items[key]
	if !ok {
		return item{}, false
	}
	if !it.expires.IsZero() && !f.now().Before(it.expires) {
		delete(f.items, key)
		return item{}, false
	}
	return it, true
}

func (f *Fake) connState(_ net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		f.connOpened()
	case http.StateClosed, http.StateHijacked:
		f.connClosed()
	}
}

func (f *Fake) connOpened() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opened++
	f.open++
	f.maxOpen = max(f.maxOpen, f.open)
}

func (f *Fake) connClosed() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.open--
}

// fault is an answer other than success, in the HTTP API's terms: the
// status, Dapr's errorCode and a message. The gRPC server turns it into the
// status daprd would send instead.
type fault struct {
	status int
	code   string
	msg    string
}

// errGone is the fault of a request whose client went away: nothing is
// answered.
var errGone = &fault{}

// Faults every API shares.
var (
	errUnauthorized = &fault{http.StatusUnauthorized, "ERR_UNAUTHORIZED", "invalid api token"}
	errMismatchSave = &fault{http.StatusConflict, "ERR_STATE_SAVE", "possible etag mismatch"}
	errMismatchDel  = &fault{http.StatusConflict, "ERR_STATE_DELETE", "possible etag mismatch"}
	errFakeClosed   = &fault{http.StatusServiceUnavailable, "ERR_FAKE_CLOSED", "fake is shutting down"}
)

// admit does what every request shares, over either API: count, record
// the trace context, delay, authenticate with the token the request
// presented, inject faults and check the store. It returns nil to go on, or
// the fault to answer.
func (f *Fake) admit(ctx context.Context, op, token, traceparent, store string) *fault {
	f.mu.Lock()
	f.requests[op]++
	if traceparent != "" {
		f.traceparents[op] = append(f.traceparents[op], traceparent)
	}
	delay, want, served := f.delay, f.token, f.store
	f.mu.Unlock()

	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return errGone
		case <-f.done:
			return errFakeClosed
		}
	}

	if op != OpHealthz && want != "" && token != want {
		return errUnauthorized
	}

	if op == OpHealthz || op == OpMetadata {
		return nil
	}
	f.mu.Lock()
	code, errCode := 0, f.failErr
	if f.failLeft != 0 {
		code = f.failCode
		if f.failLeft > 0 {
			f.failLeft--
		}
	}
	f.mu.Unlock()
	if code != 0 {
		return &fault{code, errCode, "injected failure"}
	}

	if store != served {
		return &fault{http.StatusBadRequest, "ERR_STATE_STORE_NOT_FOUND", "state store " + store + " is not found"}
	}
	return nil
}

// begin is admit for an HTTP request. It reports false when it has already
// answered.
func (f *Fake) begin(w http.ResponseWriter, r *http.Request, op string) bool {
	flt := f.admit(r.Context(), op, r.Header.Get("dapr-api-token"), r.Header.Get("traceparent"), r.PathValue("store"))
	switch flt {
	case nil:
		return true
	case errGone:
	default:
		writeError(w, flt.status, flt.code, flt.msg)
	}
	return false
}

func (f *Fake) handleHealthz(w http.ResponseWriter, r *http.Request) {
	if f.begin(w, r, OpHealthz) {
		w.WriteHeader(http.StatusNoContent)
	}
}

// handleMetadata lists the one state store, as daprd's metadata API does.
func (f *Fake) handleMetadata(w http.ResponseWriter, r *http.Request) {
	if !f.begin(w, r, OpMetadata) {
		return
	}
	f.mu.Lock()
	store := f.store
	f.mu.Unlock()
	type component struct {
		Name    string `json:"name"`
		Type    string `json:"type"`
		Version string `json:"version"`
	}
	body, _ := json.Marshal(struct {
		ID         string      `json:"id"`
		Components []component `json:"components"`
	}{"daprfake", []component{{Name: store, Type: "state.in-memory", Version: "v1"}}})
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

func (f *Fake) handleGet(w http.ResponseWriter, r *http.Request) {
	if !f.begin(w, r, OpGet) {
		return
	}
	key := r.PathValue("key")
	f.mu.Lock()
	it, ok := f.lookup(key)
	f.mu.Unlock()
	if !ok {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	h := w.Header()
	h.Set("ETag", strconv.FormatUint(it.etag, 10))
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(it.doc)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(it.doc)
}

// setRequest mirrors one element of Dapr's bulk save body.
type setRequest struct {
	Key      string            `json:"key"`
	Value    json.RawMessage   `json:"value"`
	ETag     *string           `json:"etag,omitempty"`
	Options  setOptions        `json:"options"`
	Metadata map[string]string `json:"metadata"`
}

type setOptions struct {
	Concurrency string `json:"concurrency"`
}

func (f *Fake) handleSave(w http.ResponseWriter, r *http.Request) {
	if !f.begin(w, r, OpSave) {
		return
	}
	var reqs []setRequest
	if err := json.NewDecoder(r.Body).Decode(&reqs); err != nil {
		writeError(w, http.StatusBadRequest, "ERR_MALFORMED_REQUEST", err.Error())
		return
	}

	writes := make([]write, 0, len(reqs))
	for _, req := range reqs {
		if req.Key == "" || len(req.Value) == 0 {
			writeError(w, http.StatusBadRequest, "ERR_MALFORMED_REQUEST", "key and value are required")
			return
		}
		var etag string
		if req.ETag != nil {
			etag = *req.ETag
		}
		wr, flt := newWrite(req.Key, req.Value, etag, req.Options.Concurrency == "last-write", req.Metadata)
		if flt != nil {
			writeError(w, flt.status, flt.code, flt.msg)
			return
		}
		writes = append(writes, wr)
	}
	if flt := f.apply(writes); flt != nil {
		writeError(w, flt.status, flt.code, flt.msg)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// write is one item of a save.
type write struct {
	key   string
	check bool // first-write: etag must match
	etag  uint64
	it    item
}

// newWrite reads one item of a save: etag, when set and not overridden by
// last-write concurrency, must match; metadata may hold ttlInSeconds.
func newWrite(key string, doc []byte, etag string, lastWrite bool, metadata map[string]string) (write, *fault) {
	ttl, err := parseTTL(metadata["ttlInSeconds"])
	if err != nil {
		return write{}, &fault{http.StatusBadRequest, "ERR_STATE_SAVE", "invalid ttlInSeconds: " + err.Error()}
	}
	wr := write{key: key, it: item{doc: doc, ttl: ttl}}
	if etag != "" && !lastWrite {
		wr.check = true
		if wr.etag, err = strconv.ParseUint(etag, 10, 64); err != nil {
			return write{}, &fault{http.StatusBadRequest, "ERR_STATE_SAVE", "invalid etag value: " + etag}
		}
	}
	return wr, nil
}

// apply writes a save's items the way daprd 1.18 writes a bulk save: each
// on its own, so an item whose ETag does not match is left out while the
// others are written, and the save answers a mismatch.
func (f *Fake) apply(writes []write) *fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	var flt *fault
	for _, wr := range writes {
		// An etag on a missing key is a mismatch too. daprd 1.18's Redis
		// store accepts it instead, for saves and deletes alike
		// (integration/grpc_test.go); the contract keeps the stricter
		// rule, so no caller may rely on either.
		if cur, ok := f.lookup(wr.key); wr.check && (!ok || cur.etag != wr.etag) {
			flt = errMismatchSave
			continue
		}
		f.lastETag++
		it := wr.it
		it.etag = f.lastETag
		if it.ttl > 0 {
			it.expires = now.Add(it.ttl)
		}
		f.items[wr.key] = it
	}
	return flt
}

// bulkGetItem is one element of daprd's bulk get answer.
type bulkGetItem struct {
	Key  string          `json:"key"`
	Data json.RawMessage `json:"data,omitempty"`
	ETag *string         `json:"etag,omitempty"`
}

// handleGetBulk answers POST /v1.0/state/{store}/bulk as daprd does: an
// item per key, in order, with no data and no ETag for a missing key.
func (f *Fake) handleGetBulk(w http.ResponseWriter, r *http.Request) {
	if !f.begin(w, r, OpGetBulk) {
		return
	}
	var req struct {
		Keys []string `json:"keys"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "ERR_MALFORMED_REQUEST", err.Error())
		return
	}
	out := make([]bulkGetItem, len(req.Keys))
	f.mu.Lock()
	for i, k := range req.Keys {
		out[i].Key = k
		if it, ok := f.lookup(k); ok {
			etag := strconv.FormatUint(it.etag, 10)
			out[i].Data, out[i].ETag = append(json.RawMessage(nil), it.doc...), &etag
		}
	}
	f.mu.Unlock()
	body, _ := json.Marshal(out)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

func (f *Fake) handleDelete(w http.ResponseWriter, r *http.Request) {
	if !f.begin(w, r, OpDelete) {
		return
	}
	etag := r.Header.Get("If-Match")
	if r.URL.Query().Get("concurrency") == "last-write" {
		etag = ""
	}
	if flt := f.remove(r.PathValue("key"), etag); flt != nil {
		writeError(w, flt.status, flt.code, flt.msg)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// remove deletes key; with etag set, only at that ETag.
func (f *Fake) remove(key, etag string) *fault {
	var want uint64
	if etag != "" {
		v, err := strconv.ParseUint(etag, 10, 64)
		if err != nil {
			return &fault{http.StatusBadRequest, "ERR_STATE_DELETE", "invalid etag value: " + etag}
		}
		want = v
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.lookup(key)
	if etag != "" && (!ok || cur.etag != want) {
		return errMismatchDel
	}
	delete(f.items, key)
	return nil
}

// parseTTL reads ttlInSeconds; "" and -1 mean no expiry, as in Dapr.
func parseTTL(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if n <= 0 {
		return 0, nil
	}
	return time.Duration(n) * time.Second, nil
}

func writeError(w http.ResponseWriter, code int, errorCode, msg string) {
	body, _ := json.Marshal(struct {
		ErrorCode string `json:"errorCode"`
		Message   string `json:"message"`
	}{errorCode, msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}
