package statepool

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	sjson "github.com/segmentio/encoding/json"
	"google.golang.org/grpc/codes"
)

// Operation names of the bulk calls, reported to Hooks.OnRequest and in
// errors.
const (
	OpGetBulk  = "get_bulk"
	OpSaveBulk = "save_bulk"
)

// MaxBulkKeys is the most keys one GetBulk or SaveBulk takes. daprd runs a
// bulk call's keys in parallel against the store, so the bound keeps one
// call from flooding it.
const MaxBulkKeys = 256

// ErrTooManyKeys is returned by GetBulk and SaveBulk when given more than
// MaxBulkKeys keys.
var ErrTooManyKeys = fmt.Errorf("statepool: more than %d keys in one bulk call", MaxBulkKeys)

// BulkEntry is one key's answer to GetBulk.
type BulkEntry struct {
	// Key is the key asked for.
	Key string
	// Entry is the document and its ETag when Err is nil.
	Entry
	// Err is ErrNotFound for a key with no document, or an *ItemError
	// when the store failed for this key alone.
	Err error
}

// SaveItem is one document of SaveBulk.
type SaveItem struct {
	// Key is the state key; it must not be empty.
	Key string
	// Value is one JSON document.
	Value []byte
	// Opts makes the item's save conditional, or gives it a TTL, as in
	// Save.
	Opts SaveOptions
}

// ItemError is a store failure daprd reports for one key of a bulk get
// while it answered the others. It is a failure of the store, like a 5xx.
type ItemError struct {
	// Key is the key that failed.
	Key string
	// Message is daprd's error text.
	Message string
}

// Error implements error.
func (e *ItemError) Error() string {
	return "statepool: " + OpGetBulk + " " + strconv.Quote(e.Key) + ": " + e.Message
}

// GetBulk reads keys in one call: daprd reads them from the store in
// parallel. The answer has one BulkEntry per key, in the order of keys.
// Its error is the whole call's; a key that failed alone has its own Err.
func (c *Client) GetBulk(ctx context.Context, keys []string) ([]BulkEntry, error) {
	if len(keys) > MaxBulkKeys {
		return nil, ErrTooManyKeys
	}
	for _, k := range keys {
		if k == "" {
			return nil, ErrEmptyKey
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	if c.oneByOne {
		return OneByOne{c}.GetBulk(ctx, keys)
	}
	if c.rpc != nil {
		return c.getBulkGRPC(ctx, keys)
	}
	return c.getBulkHTTP(ctx, keys)
}

// SaveBulk writes items in one call. daprd writes each item on its own, in
// parallel, so SaveBulk is not atomic: when an item's ETag no longer
// matches, that item is not written, the others may be, and SaveBulk
// returns ErrETagMismatch. After any error, any subset of the items may have
// been written, and the caller must read them again to know which.
func (c *Client) SaveBulk(ctx context.Context, items []SaveItem) error {
	if len(items) > MaxBulkKeys {
		return ErrTooManyKeys
	}
	for _, it := range items {
		if it.Key == "" {
			return ErrEmptyKey
		}
		// Spliced in raw over HTTP, and checked over gRPC alike, as in
		// Save.
		if !sjson.Valid(it.Value) {
			return ErrInvalidValue
		}
	}
	if len(items) == 0 {
		return nil
	}
	if c.oneByOne {
		return OneByOne{c}.SaveBulk(ctx, items)
	}
	if c.rpc != nil {
		return c.saveBulkGRPC(ctx, items)
	}
	return c.postSave(ctx, OpSaveBulk, items[0].Key, func(b []byte) []byte {
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

// bulkGetItem is one element of the HTTP bulk get answer.
type bulkGetItem struct {
	Key   string           `json:"key"`
	Data  sjson.RawMessage `json:"data"`
	ETag  *string          `json:"etag"`
	Error string           `json:"error"`
}

func (c *Client) getBulkHTTP(ctx context.Context, keys []string) ([]BulkEntry, error) {
	start := time.Now()
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()

	reqBody, err := sjson.Marshal(struct {
		Keys []string `json:"keys"`
	}{keys})
	if err != nil {
		return nil, wrap(OpGetBulk, keys[0], err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.keyPrefix+"bulk", bytes.NewReader(reqBody))
	if err != nil {
		return nil, wrap(OpGetBulk, keys[0], err)
	}
	req.Header[headerContentType] = jsonContentType
	c.setAuth(req)
	resp, err := c.doer.Do(req)
	if err != nil {
		return nil, c.transportErr(OpGetBulk, keys[0], start, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, c.statusErr(OpGetBulk, keys[0], start, resp)
	}
	body, err := readBody(resp)
	if err != nil {
		return nil, c.transportErr(OpGetBulk, keys[0], start, err)
	}
	c.report(OpGetBulk, start, resp.StatusCode)
	var items []bulkGetItem
	if err := sjson.Unmarshal(body, &items); err != nil {
		return nil, wrap(OpGetBulk, keys[0], fmt.Errorf("decode answer: %w", err))
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

func (c *Client) getBulkGRPC(ctx context.Context, keys []string) ([]BulkEntry, error) {
	if c.rpc.closed.Load() {
		return nil, wrap(OpGetBulk, keys[0], ErrClosed)
	}
	start := time.Now()
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.api.GetBulkState(ctx, &runtimev1pb.GetBulkStateRequest{StoreName: c.store, Keys: keys})
	if err != nil {
		return nil, c.rpcErr(ctx, OpGetBulk, keys[0], start, err, nil)
	}
	c.reportCode(OpGetBulk, start, codes.OK)
	items := resp.GetItems()
	return matchBulk(keys, len(items), func(i int) (string, []byte, string, string) {
		it := items[i]
		return it.GetKey(), it.GetData(), it.GetEtag(), it.GetError()
	})
}

// matchBulk lines daprd's n answers up with keys. daprd answers in the
// order asked, but the answer names each key, so it is matched by name, and
// a key left unanswered is a failure of that key.
func matchBulk(keys []string, n int, item func(i int) (key string, data []byte, etag, errMsg string)) ([]BulkEntry, error) {
	at := make(map[string]int, len(keys))
	out := make([]BulkEntry, len(keys))
	for i, k := range keys {
		at[k] = i
		out[i] = BulkEntry{Key: k, Err: &ItemError{Key: k, Message: "daprd did not answer for this key"}}
	}
	for i := range n {
		key, data, etag, msg := item(i)
		j, ok := at[key]
		if !ok {
			continue
		}
		switch {
		case msg != "":
			out[j].Err = &ItemError{Key: key, Message: msg}
		case len(data) == 0 || bytes.Equal(data, jsonNull):
			// A missing key: no data and no ETag, as for Get.
			out[j].Err = ErrNotFound
		default:
			out[j] = BulkEntry{Key: key, Entry: Entry{Value: data, ETag: etag}}
		}
	}
	return out, nil
}

var jsonNull = []byte("null")

func (c *Client) saveBulkGRPC(ctx context.Context, items []SaveItem) error {
	if c.rpc.closed.Load() {
		return wrap(OpSaveBulk, items[0].Key, ErrClosed)
	}
	start := time.Now()
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()

	// One allocation for every item's messages.
	ms := make([]saveMessages, len(items))
	states := make([]*commonv1pb.StateItem, len(items))
	for i, it := range items {
		ms[i].fill(it.Key, it.Value, it.Opts)
		states[i] = &ms[i].item
	}
	req := &runtimev1pb.SaveStateRequest{StoreName: c.store, States: states}
	if _, err := c.rpc.api.SaveState(ctx, req); err != nil {
		return c.rpcErr(ctx, OpSaveBulk, items[0].Key, start, err, ErrETagMismatch)
	}
	c.reportCode(OpSaveBulk, start, codes.OK)
	return nil
}
