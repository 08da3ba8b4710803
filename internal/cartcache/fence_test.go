package cartcache_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
)

// applyPath applies one cart's commands at an epoch, on its own or in a
// bulk call among other carts, and returns that cart's outcomes and error.
type applyPath struct {
	name  string
	apply func(t *testing.T, e *env, cartID string, epoch cartcache.Epoch, cmds ...command.Command) ([]cartcache.Outcome, error)
}

// paths are UpdateBatchAt and the bulk path of UpdateCarts, where the cart
// shares the call with a bystander cart.
var paths = []applyPath{
	{name: "UpdateBatchAt", apply: func(t *testing.T, e *env, cartID string, epoch cartcache.Epoch, cmds ...command.Command) ([]cartcache.Outcome, error) {
		steps := make([]cartcache.Step, len(cmds))
		for i, cmd := range cmds {
			steps[i] = cartcache.Step{CmdID: cmd.ID, Change: func(cur *cart.Document) (*cart.Document, error) {
				return cart.Apply(cur, cmd, cart.DefaultTaxTable(), e.now())
			}}
		}
		return e.svc.UpdateBatchAt(context.Background(), cartID, epoch, steps)
	}},
	{name: "ApplyCarts", apply: func(t *testing.T, e *env, cartID string, epoch cartcache.Epoch, cmds ...command.Command) ([]cartcache.Outcome, error) {
		t.Helper()
		bystander := "bystander-of-" + cartID
		e.fake.Put(bystander, []byte(`{"status":"Idle"}`))
		res := e.svc.ApplyCarts(context.Background(), []cartcache.CartBatch{
			{CartID: cartID, Epoch: epoch, Cmds: cmds},
			{CartID: bystander, Epoch: epoch, Cmds: []command.Command{addCmd(cmds[0].ID+"-bystander", bystander, item("A", 1, "1", "00"))}},
		})
		require.Len(t, res, 2)
		require.NoError(t, res[1].Err, "the bystander")
		return res[0].Outcomes, res[0].Err
	}},
}

func ep(era int64, seq uint64) cartcache.Epoch { return cartcache.Epoch{Era: era, Seq: seq} }

// storedEpoch reads the epoch a cart, or else its tombstone, stores.
func (e *env) storedEpoch(t *testing.T, cartID string) cart.Epoch {
	t.Helper()
	if raw, ok := e.fake.Get(cartID); ok {
		d, err := cart.Parse(raw)
		require.NoError(t, err)
		return d.Epoch()
	}
	var ts cart.Tombstone
	require.NoError(t, json.Unmarshal(must(e.fake.Get(cartcache.TombstoneKey(cartID))), &ts))
	return ts.Epoch
}

func TestEpochOrder(t *testing.T) {
	tests := []struct {
		a, b   cartcache.Epoch
		before bool
	}{
		{ep(1, 5), ep(1, 6), true},
		{ep(1, 6), ep(1, 5), false},
		{ep(1, 5), ep(1, 5), false},
		// A re-created bucket restarts its revisions: the era decides.
		{ep(1, 900), ep(2, 1), true},
		{ep(2, 1), ep(1, 900), false},
		{cartcache.Epoch{}, ep(0, 1), true},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.before, tt.a.Before(tt.b), "%s before %s", tt.a, tt.b)
	}
	assert.True(t, cartcache.Epoch{}.IsZero())
	assert.False(t, ep(0, 1).IsZero())
	assert.False(t, ep(1, 0).IsZero())
}

// A write at an epoch below the stored one is refused before any step
// runs and writes nothing; an equal or higher one writes and stores its
// epoch; the zero epoch writes and keeps the stored one.
func TestFence(t *testing.T) {
	stored := ep(10, 5)
	tests := []struct {
		name   string
		epoch  cartcache.Epoch
		fenced bool
		// want is the epoch stored after the write.
		want cartcache.Epoch
	}{
		{name: "lower seq", epoch: ep(10, 4), fenced: true},
		{name: "lower era, higher seq", epoch: ep(9, 99), fenced: true},
		{name: "equal", epoch: ep(10, 5), want: ep(10, 5)},
		{name: "higher seq", epoch: ep(10, 6), want: ep(10, 6)},
		{name: "higher era, lower seq", epoch: ep(11, 1), want: ep(11, 1)},
		{name: "zero keeps the stored epoch", epoch: cartcache.Epoch{}, want: stored},
	}
	for _, path := range paths {
		for _, tt := range tests {
			t.Run(path.name+"/"+tt.name, func(t *testing.T) {
				e := newEnv(t, cartcache.Config{})
				_, err := path.apply(t, e, "c1", stored, cacheCmd("c1", ""))
				require.NoError(t, err)
				require.Equal(t, cart.Epoch(stored), e.storedEpoch(t, "c1"))
				before, _ := e.fake.Get("c1")
				etag, _ := e.fake.ETag("c1")

				out, err := path.apply(t, e, "c1", tt.epoch, addCmd("a1", "c1", item("A", 1, "10", "00")))
				after, _ := e.fake.Get("c1")
				if tt.fenced {
					require.ErrorIs(t, err, cartcache.ErrFenced)
					require.Contains(t, err.Error(), "c1", "the error names the cart")
					require.Nil(t, out)
					etagAfter, _ := e.fake.ETag("c1")
					require.Equal(t, string(before), string(after), "nothing written")
					require.Equal(t, etag, etagAfter, "nothing written")
					return
				}
				require.NoError(t, err)
				require.NoError(t, out[0].Err)
				require.False(t, out[0].Duplicate)
				require.Len(t, e.cart(t, "c1")["line_items"], 1)
				require.Equal(t, cart.Epoch(tt.want), e.storedEpoch(t, "c1"))
			})
		}
	}
}

// A fenced batch runs none of its steps, duplicates included.
func TestFencedBatchRunsNoStep(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	ctx := context.Background()
	_, err := e.svc.UpdateBatchAt(ctx, "c1", ep(1, 2), []cartcache.Step{{CmdID: "k", Change: func(*cart.Document) (*cart.Document, error) {
		return cart.Parse([]byte(`{"status":"Idle"}`))
	}}})
	require.NoError(t, err)
	gets := e.fake.Requests(daprfake.OpGet)
	never := func(*cart.Document) (*cart.Document, error) {
		t.Error("a fenced batch ran a step")
		return nil, nil
	}
	out, err := e.svc.UpdateBatchAt(ctx, "c1", ep(1, 1), []cartcache.Step{{CmdID: "k", Change: never}, {CmdID: "new", Change: never}})
	require.ErrorIs(t, err, cartcache.ErrFenced)
	require.NotErrorIs(t, err, cartcache.ErrConflict)
	require.Nil(t, out)
	require.Equal(t, gets+1, e.fake.Requests(daprfake.OpGet), "fenced at once: one read, no retry")
}

// A cart written before epochs existed has none: any owner may write it,
// and the first fenced write marks it.
func TestLegacyCartWithoutEpochTakesAnyEpoch(t *testing.T) {
	for _, path := range paths {
		t.Run(path.name, func(t *testing.T) {
			e := newEnv(t, cartcache.Config{})
			e.fake.Put("c1", []byte(`{"cart_id":"c1","status":"Idle","line_items":[],"applied_command_ids":["cache-c1"]}`))
			out, err := path.apply(t, e, "c1", ep(1, 1), cacheCmd("c1", ""), addCmd("a1", "c1", item("A", 1, "10", "00")))
			require.NoError(t, err)
			require.True(t, out[0].Duplicate, "the legacy history is honoured")
			require.NoError(t, out[0].Err)
			require.NoError(t, out[1].Err)
			require.False(t, out[1].Duplicate)
			require.Equal(t, cart.Epoch{Era: 1, Seq: 1}, e.storedEpoch(t, "c1"))
			require.Equal(t, []any{"cache-c1", "a1"}, e.cart(t, "c1")[cart.AppliedIDsField])
		})
	}
}

// An unfenced writer (Apply, the zero epoch) never writes an epoch of its
// own: the document gets no writer_epoch field.
func TestUnfencedWriterWritesNoEpoch(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	e.apply(t, cacheCmd("c1", ""))
	e.apply(t, addCmd("a1", "c1", item("A", 1, "10", "00")))
	require.NotContains(t, e.cart(t, "c1"), cart.WriterEpochField)
	// A cached document cannot smuggle an epoch in either.
	c := cacheCmd("c2", `{"writer_epoch":{"era":99,"seq":99}}`)
	e.apply(t, c)
	require.NotContains(t, e.cart(t, "c2"), cart.WriterEpochField)
}

// beforeSave runs hook once, before the first guarded save of key.
type beforeSave struct {
	cartcache.Store
	mu   sync.Mutex
	key  string
	hook func()
}

func (b *beforeSave) fire(key string) {
	b.mu.Lock()
	hook := b.hook
	if key == b.key {
		b.hook = nil
	}
	b.mu.Unlock()
	if key == b.key && hook != nil {
		hook()
	}
}

func (b *beforeSave) Save(ctx context.Context, key string, value []byte, opts statepool.SaveOptions) error {
	b.fire(key)
	return b.Store.Save(ctx, key, value, opts)
}

func (b *beforeSave) SaveBulk(ctx context.Context, items []statepool.SaveItem) error {
	for _, it := range items {
		b.fire(it.Key)
	}
	return b.Store.SaveBulk(ctx, items)
}

// A stale owner that read the cart before the newer owner wrote it loses
// the ETag race, and the re-read fences it: its command is not applied on
// top of the newer owner's work.
func TestStaleOwnerLosingTheETagRaceIsFenced(t *testing.T) {
	stale, newer := ep(1, 1), ep(1, 2)
	for _, path := range paths {
		t.Run(path.name, func(t *testing.T) {
			e := newEnv(t, cartcache.Config{})
			_, err := path.apply(t, e, "c1", stale, cacheCmd("c1", ""))
			require.NoError(t, err)
			store := &beforeSave{Store: e.store, key: "c1", hook: func() {
				_, err := paths[0].apply(t, e, "c1", newer, addCmd("n1", "c1", item("N", 1, "1", "00")))
				require.NoError(t, err)
			}}
			staleEnv := *e
			staleEnv.svc = cartcache.New(store, cartcache.Config{Now: e.now})

			_, err = path.apply(t, &staleEnv, "c1", stale, addCmd("s1", "c1", item("S", 1, "1", "00")))
			require.ErrorIs(t, err, cartcache.ErrFenced)
			c := e.cart(t, "c1")
			require.Equal(t, []any{"cache-c1", "n1"}, c[cart.AppliedIDsField], "the newer owner's work stands alone")
			require.Len(t, c["line_items"], 1)
			require.Equal(t, cart.Epoch(newer), e.storedEpoch(t, "c1"))
		})
	}
}

// A cart deleted by a newer owner stays deleted for a stale one: its
// tombstone keeps the newer epoch. The newer owner may create it again.
func TestTombstoneFencesAStaleRecreate(t *testing.T) {
	stale, newer := ep(3, 7), ep(4, 1)
	for _, path := range paths {
		t.Run(path.name, func(t *testing.T) {
			e := newEnv(t, cartcache.Config{})
			_, err := path.apply(t, e, "c1", stale, cacheCmd("c1", ""))
			require.NoError(t, err)
			_, err = path.apply(t, e, "c1", newer, command.Command{ID: "d1", Type: command.TypeDelete, CartID: "c1"})
			require.NoError(t, err)
			require.Equal(t, cart.Epoch(newer), e.storedEpoch(t, "c1"), "the tombstone keeps the deleting owner's epoch")
			tomb, _ := e.fake.ETag(cartcache.TombstoneKey("c1"))

			recache := cacheCmd("c1", "")
			recache.ID = "cache-2"
			_, err = path.apply(t, e, "c1", stale, recache)
			require.ErrorIs(t, err, cartcache.ErrFenced)
			_, ok := e.fake.Get("c1")
			require.False(t, ok, "the stale owner recreated the cart")
			after, _ := e.fake.ETag(cartcache.TombstoneKey("c1"))
			require.Equal(t, tomb, after, "nor touched its tombstone")

			out, err := path.apply(t, e, "c1", newer, recache)
			require.NoError(t, err)
			require.False(t, out[0].Duplicate)
			require.Equal(t, cart.Epoch(newer), e.storedEpoch(t, "c1"))
		})
	}
}
