// Package statetest holds the contract every state Store implementation must
// meet, run against a daprfake so each implementation is held to the same
// Dapr semantics.
package statetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
)

// Store is the contract under test, cartcache's one Store interface.
type Store = cartcache.Store

// NewStore builds a fresh Store talking to a fresh fake. It should register
// cleanup on t.
type NewStore func(t *testing.T) (store Store, fake *daprfake.Fake)

// callTimeout bounds every contract call so a hung implementation fails the
// test instead of the whole run.
const callTimeout = 5 * time.Second

// RunStoreContract runs the contract as subtests of t, with a new store and
// fake for each.
func RunStoreContract(t *testing.T, newStore NewStore) {
	t.Helper()
	tests := []struct {
		name string
		run  func(ctx context.Context, t *testing.T, s Store, f *daprfake.Fake)
	}{
		{"GetMissingIsNotFound", testGetMissing},
		{"SaveThenGetRoundTrips", testRoundTrip},
		{"SaveWithCurrentETag", testSaveCurrentETag},
		{"SaveWithStaleETagConflicts", testSaveStaleETag},
		{"SaveWithETagOnMissingKeyConflicts", testSaveETagMissingKey},
		{"DeleteWithStaleETagConflicts", testDeleteStaleETag},
		{"DeleteThenGetIsNotFound", testDeleteThenGet},
		{"DeleteMissingSucceeds", testDeleteMissing},
		{"TTLSentAsMetadata", testTTL},
		{"OddKeysRoundTrip", testOddKeys},
		{"ConcurrentSavesSameETagOneWins", testConcurrentSaves},
		{"GetBulkAnswersEachKeyInOrder", testGetBulk},
		{"SaveBulkRoundTrips", testSaveBulk},
		{"SaveBulkStaleETagConflictsAndSkipsThatItem", testSaveBulkStaleETag},
		{"BulkArgumentsChecked", testBulkArguments},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, f := newStore(t)
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			defer cancel()
			tt.run(ctx, t, s, f)
		})
	}
}

const (
	cartKey = "c-1"
	cartV1  = `{"id":"c-1","items":[{"sku":"A-1","qty":2,"price":19.98}],"note":"caf\u00e9 \"x\""}`
	cartV2  = `{"id":"c-1","items":[]}`
)

func testGetMissing(ctx context.Context, t *testing.T, s Store, _ *daprfake.Fake) {
	_, err := s.Get(ctx, "nope")
	require.ErrorIs(t, err, statepool.ErrNotFound)
}

func testRoundTrip(ctx context.Context, t *testing.T, s Store, f *daprfake.Fake) {
	require.NoError(t, s.Save(ctx, cartKey, []byte(cartV1), statepool.SaveOptions{}))

	got, err := s.Get(ctx, cartKey)
	require.NoError(t, err)
	// Dapr may re-encode the document, so compare JSON, not bytes.
	require.JSONEq(t, cartV1, string(got.Value))
	require.NotEmpty(t, got.ETag)

	stored, ok := f.Get(cartKey)
	require.True(t, ok)
	require.JSONEq(t, cartV1, string(stored), "value must be stored as a document, not a JSON string")
}

func testSaveCurrentETag(ctx context.Context, t *testing.T, s Store, _ *daprfake.Fake) {
	require.NoError(t, s.Save(ctx, cartKey, []byte(cartV1), statepool.SaveOptions{}))
	first, err := s.Get(ctx, cartKey)
	require.NoError(t, err)

	require.NoError(t, s.Save(ctx, cartKey, []byte(cartV2), statepool.SaveOptions{ETag: first.ETag}))

	second, err := s.Get(ctx, cartKey)
	require.NoError(t, err)
	require.JSONEq(t, cartV2, string(second.Value))
	require.NotEqual(t, first.ETag, second.ETag)
}

func testSaveStaleETag(ctx context.Context, t *testing.T, s Store, f *daprfake.Fake) {
	stale := f.Put(cartKey, []byte(cartV1))
	f.Put(cartKey, []byte(cartV1))

	err := s.Save(ctx, cartKey, []byte(cartV2), statepool.SaveOptions{ETag: stale})
	require.ErrorIs(t, err, statepool.ErrETagMismatch)

	stored, _ := f.Get(cartKey)
	require.JSONEq(t, cartV1, string(stored), "a rejected save must not write")
}

func testSaveETagMissingKey(ctx context.Context, t *testing.T, s Store, f *daprfake.Fake) {
	err := s.Save(ctx, cartKey, []byte(cartV1), statepool.SaveOptions{ETag: "1"})
	require.ErrorIs(t, err, statepool.ErrETagMismatch)
	_, ok := f.Get(cartKey)
	require.False(t, ok)
}

func testDeleteStaleETag(ctx context.Context, t *testing.T, s Store, f *daprfake.Fake) {
	stale := f.Put(cartKey, []byte(cartV1))
	f.Put(cartKey, []byte(cartV2))

	require.ErrorIs(t, s.Delete(ctx, cartKey, stale), statepool.ErrETagMismatch)

	_, err := s.Get(ctx, cartKey)
	require.NoError(t, err, "a rejected delete must not delete")
}

func testDeleteThenGet(ctx context.Context, t *testing.T, s Store, _ *daprfake.Fake) {
	require.NoError(t, s.Save(ctx, cartKey, []byte(cartV1), statepool.SaveOptions{}))
	e, err := s.Get(ctx, cartKey)
	require.NoError(t, err)

	require.NoError(t, s.Delete(ctx, cartKey, e.ETag))

	_, err = s.Get(ctx, cartKey)
	require.ErrorIs(t, err, statepool.ErrNotFound)
}

func testDeleteMissing(ctx context.Context, t *testing.T, s Store, _ *daprfake.Fake) {
	require.NoError(t, s.Delete(ctx, "nope", ""))
}

func testTTL(ctx context.Context, t *testing.T, s Store, f *daprfake.Fake) {
	require.NoError(t, s.Save(ctx, cartKey, []byte(cartV1), statepool.SaveOptions{TTL: 90 * time.Second}))
	ttl, ok := f.TTL(cartKey)
	require.True(t, ok)
	require.Equal(t, 90*time.Second, ttl)

	require.NoError(t, s.Save(ctx, "no-ttl", []byte(cartV1), statepool.SaveOptions{}))
	ttl, ok = f.TTL("no-ttl")
	require.True(t, ok)
	require.Zero(t, ttl)
}

func testOddKeys(ctx context.Context, t *testing.T, s Store, f *daprfake.Fake) {
	for _, key := range []string{"c-1_A", "cart:42", "c.1~x", "C-0001"} {
		t.Run(key, func(t *testing.T) {
			require.NoError(t, s.Save(ctx, key, []byte(cartV1), statepool.SaveOptions{}))
			_, ok := f.Get(key)
			require.True(t, ok, "stored under a different key")

			e, err := s.Get(ctx, key)
			require.NoError(t, err)
			require.JSONEq(t, cartV1, string(e.Value))

			require.NoError(t, s.Delete(ctx, key, e.ETag))
			_, ok = f.Get(key)
			require.False(t, ok)
		})
	}
}

func testConcurrentSaves(ctx context.Context, t *testing.T, s Store, f *daprfake.Fake) {
	const writers = 16
	etag := f.Put(cartKey, []byte(cartV1))

	var wg sync.WaitGroup
	errs := make([]error, writers)
	start := make(chan struct{})
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = s.Save(ctx, cartKey, []byte(cartV2), statepool.SaveOptions{ETag: etag})
		}()
	}
	close(start)
	wg.Wait()

	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, statepool.ErrETagMismatch):
		default:
			require.NoError(t, err, "losers must see ErrETagMismatch")
		}
	}
	require.Equal(t, 1, wins)
}

func testGetBulk(ctx context.Context, t *testing.T, s Store, f *daprfake.Fake) {
	etag := f.Put(cartKey, []byte(cartV1))
	other := f.Put("c-2", []byte(cartV2))

	got, err := s.GetBulk(ctx, []string{"c-2", "nope", cartKey})
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.Equal(t, "c-2", got[0].Key)
	require.NoError(t, got[0].Err)
	require.JSONEq(t, cartV2, string(got[0].Value))
	require.Equal(t, other, got[0].ETag)
	require.Equal(t, "nope", got[1].Key)
	require.ErrorIs(t, got[1].Err, statepool.ErrNotFound)
	require.Equal(t, cartKey, got[2].Key)
	require.NoError(t, got[2].Err)
	require.JSONEq(t, cartV1, string(got[2].Value))
	require.Equal(t, etag, got[2].ETag, "the ETag a bulk read gives must guard a save like Get's")

	none, err := s.GetBulk(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, none)
}

func testSaveBulk(ctx context.Context, t *testing.T, s Store, f *daprfake.Fake) {
	etag := f.Put(cartKey, []byte(cartV1))
	require.NoError(t, s.SaveBulk(ctx, []statepool.SaveItem{
		{Key: cartKey, Value: []byte(cartV2), Opts: statepool.SaveOptions{ETag: etag}},
		{Key: "c-2", Value: []byte(cartV1), Opts: statepool.SaveOptions{TTL: 90 * time.Second}},
	}))

	got, err := s.GetBulk(ctx, []string{cartKey, "c-2"})
	require.NoError(t, err)
	require.JSONEq(t, cartV2, string(got[0].Value))
	require.NotEqual(t, etag, got[0].ETag)
	require.JSONEq(t, cartV1, string(got[1].Value))
	stored, _ := f.Get("c-2")
	require.JSONEq(t, cartV1, string(stored), "value must be stored as a document, not a JSON string")
	ttl, _ := f.TTL("c-2")
	require.Equal(t, 90*time.Second, ttl)
	require.NoError(t, s.SaveBulk(ctx, nil))
}

func testSaveBulkStaleETag(ctx context.Context, t *testing.T, s Store, f *daprfake.Fake) {
	stale := f.Put(cartKey, []byte(cartV1))
	f.Put(cartKey, []byte(cartV1))

	err := s.SaveBulk(ctx, []statepool.SaveItem{
		{Key: "c-2", Value: []byte(cartV2)},
		{Key: cartKey, Value: []byte(cartV2), Opts: statepool.SaveOptions{ETag: stale}},
	})
	require.ErrorIs(t, err, statepool.ErrETagMismatch)
	stored, _ := f.Get(cartKey)
	require.JSONEq(t, cartV1, string(stored), "the item with the stale ETag must not be written")
	// Whether c-2 was written is not part of the contract: the caller reads
	// again to know.
}

func testBulkArguments(ctx context.Context, t *testing.T, s Store, _ *daprfake.Fake) {
	_, err := s.GetBulk(ctx, []string{"a", ""})
	require.ErrorIs(t, err, statepool.ErrEmptyKey)
	require.ErrorIs(t, s.SaveBulk(ctx, []statepool.SaveItem{{Key: "", Value: []byte(`{}`)}}), statepool.ErrEmptyKey)
	require.ErrorIs(t, s.SaveBulk(ctx, []statepool.SaveItem{{Key: "a", Value: []byte(`{"a":1}{}`)}}), statepool.ErrInvalidValue)

	many := make([]string, statepool.MaxBulkKeys+1)
	items := make([]statepool.SaveItem, len(many))
	for i := range many {
		many[i] = fmt.Sprintf("k%d", i)
		items[i] = statepool.SaveItem{Key: many[i], Value: []byte(`{}`)}
	}
	_, err = s.GetBulk(ctx, many)
	require.ErrorIs(t, err, statepool.ErrTooManyKeys)
	require.ErrorIs(t, s.SaveBulk(ctx, items), statepool.ErrTooManyKeys)
}
