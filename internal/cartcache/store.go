package cartcache

import (
	"context"

	"github.com/cartworker/cartworker/internal/statepool"
)

// Store is the one state-store contract. Carts uses it; statepool.Client
// and breaker.Breaker implement it, and internal/statetest's contract suite
// checks every implementation against it.
type Store interface {
	// Get returns the document and its ETag, or statepool.ErrNotFound.
	Get(ctx context.Context, key string) (statepool.Entry, error)
	// Save writes the document; with opts.ETag set it fails with
	// statepool.ErrETagMismatch when the stored ETag differs.
	Save(ctx context.Context, key string, value []byte, opts statepool.SaveOptions) error
	// Delete removes the key; with etag set it fails with
	// statepool.ErrETagMismatch when the stored ETag differs.
	Delete(ctx context.Context, key, etag string) error
	// GetBulk reads several keys in one call: an entry per key, in order,
	// each with its document and ETag, statepool.ErrNotFound or its own
	// failure. The returned error is the whole call's.
	GetBulk(ctx context.Context, keys []string) ([]statepool.BulkEntry, error)
	// SaveBulk writes several documents in one call, each on its own: it is
	// not atomic. An item whose ETag differs is not written and the call
	// fails with statepool.ErrETagMismatch; after any error, any subset of
	// the items may have been written.
	SaveBulk(ctx context.Context, items []statepool.SaveItem) error
}
