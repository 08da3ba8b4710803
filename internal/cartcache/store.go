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
}
