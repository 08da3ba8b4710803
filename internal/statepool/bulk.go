package statepool

import (
	"bytes"
	"context"
	"fmt"
	"strconv"

	sjson "github.com/segmentio/encoding/json"
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
	return c.backend.getBulk(ctx, c.newCall(OpGetBulk, keys[0]), keys)
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
	return c.backend.saveBulk(ctx, c.newCall(OpSaveBulk, items[0].Key), items)
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
