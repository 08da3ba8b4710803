package statepool

import "context"

// Single is a state store of single-key calls: Client's Get, Save and
// Delete.
type Single interface {
	Get(ctx context.Context, key string) (Entry, error)
	Save(ctx context.Context, key string, value []byte, opts SaveOptions) error
	Delete(ctx context.Context, key, etag string) error
}

// OneByOne adds GetBulk and SaveBulk to a Single by calling it once per
// key, in order: what ModePerRequest does, as upstream's service made its
// calls, and what a store with no bulk calls of its own (an in-memory
// fake, a benchmark peer) needs to be a cartcache.Store.
type OneByOne struct{ Single }

// GetBulk gets each key in turn. A key's failure is its own.
func (s OneByOne) GetBulk(ctx context.Context, keys []string) ([]BulkEntry, error) {
	out := make([]BulkEntry, len(keys))
	for i, k := range keys {
		e, err := s.Get(ctx, k)
		out[i] = BulkEntry{Key: k, Entry: e, Err: err}
	}
	return out, nil
}

// SaveBulk saves every item in turn, each on its own as daprd writes a
// bulk save's items, and returns the first error once every item was
// tried.
func (s OneByOne) SaveBulk(ctx context.Context, items []SaveItem) error {
	var first error
	for _, it := range items {
		if err := s.Save(ctx, it.Key, it.Value, it.Opts); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// perRequestBackend is the ModePerRequest backend: the HTTP backend, whose
// doer opens a connection per call (perRequestDoer), making each bulk call
// one call per key, as upstream's service did. OneByOne makes those calls
// through the Client's Get and Save, so each key is a call of its own,
// bounded by its own RequestTimeout and reported as a get or a save.
type perRequestBackend struct{ *httpBackend }

var _ backend = perRequestBackend{}

func (p perRequestBackend) getBulk(ctx context.Context, k call, keys []string) ([]BulkEntry, error) {
	return OneByOne{k.client}.GetBulk(ctx, keys)
}

func (p perRequestBackend) saveBulk(ctx context.Context, k call, items []SaveItem) error {
	return OneByOne{k.client}.SaveBulk(ctx, items)
}
