package statetest

import (
	"context"

	"github.com/cartworker/cartworker/internal/statepool"
)

// Single is a store of single-key calls: the rest of Store.
type Single interface {
	Get(ctx context.Context, key string) (statepool.Entry, error)
	Save(ctx context.Context, key string, value []byte, opts statepool.SaveOptions) error
	Delete(ctx context.Context, key, etag string) error
}

// Singles completes a Single into a Store, its bulk calls made one key at a
// time, in order, as an in-memory fake needs them.
type Singles struct{ Single }

var _ Store = Singles{}

// GetBulk gets each key in turn.
func (s Singles) GetBulk(ctx context.Context, keys []string) ([]statepool.BulkEntry, error) {
	out := make([]statepool.BulkEntry, len(keys))
	for i, k := range keys {
		e, err := s.Get(ctx, k)
		out[i] = statepool.BulkEntry{Key: k, Entry: e, Err: err}
	}
	return out, nil
}

// SaveBulk saves every item in turn, as daprd does, and returns the first
// error.
func (s Singles) SaveBulk(ctx context.Context, items []statepool.SaveItem) error {
	var first error
	for _, it := range items {
		if err := s.Save(ctx, it.Key, it.Value, it.Opts); err != nil && first == nil {
			first = err
		}
	}
	return first
}
