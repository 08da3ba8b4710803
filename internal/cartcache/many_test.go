package cartcache_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
)

// manyCarts is one call's worth of carts: two stored carts with a refused
// command in the middle of one, a cart made by a cache, an add to a cart
// that does not exist, and a cart whose only command was applied before.
func manyCarts(e *env, t *testing.T) []cartcache.CartBatch {
	e.apply(t, cacheCmd("c1", ""))
	e.apply(t, cacheCmd("c2", ""))
	e.apply(t, cacheCmd("c5", ""))
	e.apply(t, addCmd("old", "c5", item("A", 1, "1", "00")))
	return []cartcache.CartBatch{
		{CartID: "c1", Cmds: []command.Command{
			addCmd("a1", "c1", item("A", 2, "120", "01")),
			addCmd("bad", "c1", item("B", 1, "5", "99")), // unknown tax code
			addCmd("a2", "c1", item("C", 1, "10", "00")),
		}},
		{CartID: "c2", Cmds: []command.Command{addCmd("b1", "c2", item("A", 1, "1100", "02"))}},
		{CartID: "c3", Cmds: []command.Command{cacheCmd("c3", ""), addCmd("c3-1", "c3", item("D", 3, "1", "00"))}},
		{CartID: "c4", Cmds: []command.Command{addCmd("d1", "c4", item("A", 1, "1", "00"))}},
		{CartID: "c5", Cmds: []command.Command{addCmd("old", "c5", item("A", 1, "1", "00"))}},
	}
}

// Several carts take two calls to the store in all, one bulk read and one
// bulk save, and end exactly as applying each cart on its own leaves them,
// each command with its own outcome.
func TestApplyCartsIsTwoCallsAndAppliesEachCartAsOnItsOwn(t *testing.T) {
	ctx := context.Background()
	e, ref := newEnv(t, cartcache.Config{}), newEnv(t, cartcache.Config{})
	batches, _ := manyCarts(e, t), manyCarts(ref, t)
	gets, saves := e.fake.Requests(daprfake.OpGet), e.fake.Requests(daprfake.OpSave)

	res := e.svc.ApplyCarts(ctx, batches)

	require.Equal(t, gets, e.fake.Requests(daprfake.OpGet), "no read of its own for any cart")
	// One bulk read of the carts, one of the missing carts' tombstones.
	require.Equal(t, 2, e.fake.Requests(daprfake.OpGetBulk))
	require.Equal(t, saves+1, e.fake.Requests(daprfake.OpSave), "one bulk save for c1, c2 and c3, and c4's tombstone recording its refusal")
	require.Len(t, res, len(batches))
	for i, b := range batches {
		out, err := applyBatch(ctx, ref.svc, b.CartID, b.Cmds)
		require.NoError(t, err)
		require.NoError(t, res[i].Err, b.CartID)
		require.Len(t, res[i].Outcomes, len(out), b.CartID)
		for j := range out {
			require.Equal(t, out[j].Duplicate, res[i].Outcomes[j].Duplicate, "%s step %d", b.CartID, j)
			require.Equal(t, out[j].Err, res[i].Outcomes[j].Err, "%s step %d", b.CartID, j)
		}
		if want, ok := ref.fake.Get(b.CartID); ok {
			require.JSONEq(t, string(want), string(must(e.fake.Get(b.CartID))), b.CartID)
		} else {
			_, ok := e.fake.Get(b.CartID)
			require.False(t, ok, b.CartID)
		}
	}
	require.ErrorIs(t, res[0].Outcomes[1].Err, cart.ErrUnknownTaxCode)
	require.ErrorIs(t, res[3].Outcomes[0].Err, cart.ErrCartNotFound)
	require.True(t, res[4].Outcomes[0].Duplicate)
}

func must(b []byte, ok bool) []byte {
	if !ok {
		return nil
	}
	return b
}

// hookStore runs beforeSaveBulk before each bulk save.
type hookStore struct {
	cartcache.Store
	beforeSaveBulk func()
}

func (h hookStore) SaveBulk(ctx context.Context, items []statepool.SaveItem) error {
	h.beforeSaveBulk()
	return h.Store.SaveBulk(ctx, items)
}

// A bulk save that meets an outside write on one cart still saves the
// others, as daprd does. The saved cart keeps its outcomes (applied, not
// duplicate) and is not applied twice; the other is re-read and applied on
// top of the outside write.
func TestApplyCartsConflictOnOneCartSettlesEachOnItsOwn(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, cartcache.Config{})
	e.apply(t, cacheCmd("c1", ""))
	e.apply(t, cacheCmd("c2", ""))
	once := false
	svc := cartcache.New(hookStore{Store: e.store, beforeSaveBulk: func() {
		if !once {
			once = true
			_, err := e.svc.Apply(ctx, addCmd("outside", "c2", item("Z", 1, "1", "00")))
			require.NoError(t, err)
		}
	}}, cartcache.Config{Now: e.now})

	res := svc.ApplyCarts(ctx, []cartcache.CartBatch{
		{CartID: "c1", Cmds: []command.Command{addCmd("a1", "c1", item("A", 1, "1", "00"))}},
		{CartID: "c2", Cmds: []command.Command{addCmd("b1", "c2", item("B", 1, "1", "00"))}},
	})
	for i, r := range res {
		require.NoError(t, r.Err, i)
		require.Len(t, r.Outcomes, 1)
		require.False(t, r.Outcomes[0].Duplicate, "cart %d: applied by this call, not before it", i)
		require.NoError(t, r.Outcomes[0].Err)
	}
	require.Len(t, e.cart(t, "c1")["line_items"], 1, "c1 applied once")
	require.Equal(t, []any{"cache-c1", "a1"}, e.cart(t, "c1")[cart.AppliedIDsField])
	require.Len(t, e.cart(t, "c2")["line_items"], 2, "the outside write and b1")
	require.Equal(t, []any{"cache-c2", "outside", "b1"}, e.cart(t, "c2")[cart.AppliedIDsField])
}

// A delete among other carts writes its tombstone and deletes; the other
// carts are saved together.
func TestApplyCartsWithADelete(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, cartcache.Config{})
	e.apply(t, cacheCmd("c1", ""))
	e.apply(t, cacheCmd("c2", ""))
	res := e.svc.ApplyCarts(ctx, []cartcache.CartBatch{
		{CartID: "c1", Cmds: []command.Command{{ID: "d1", Type: command.TypeDelete, CartID: "c1"}}},
		{CartID: "c2", Cmds: []command.Command{addCmd("b1", "c2", item("B", 1, "1", "00"))}},
	})
	require.NoError(t, res[0].Err)
	require.NoError(t, res[1].Err)
	_, ok := e.fake.Get("c1")
	require.False(t, ok)
	_, ok = e.fake.Get(cartcache.TombstoneKey("c1"))
	require.True(t, ok)
	require.Len(t, e.cart(t, "c2")["line_items"], 1)
}

// A failed bulk read is every cart's error, and nothing is written.
func TestApplyCartsStoreFailureIsEveryCartsError(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, cartcache.Config{})
	e.apply(t, cacheCmd("c1", ""))
	e.apply(t, cacheCmd("c2", ""))
	saves := e.fake.Requests(daprfake.OpSave)
	e.fake.FailNext(1, 503)
	res := e.svc.ApplyCarts(ctx, []cartcache.CartBatch{
		{CartID: "c1", Cmds: []command.Command{addCmd("a1", "c1", item("A", 1, "1", "00"))}},
		{CartID: "c2", Cmds: []command.Command{addCmd("b1", "c2", item("B", 1, "1", "00"))}},
	})
	var se *statepool.StatusError
	for _, r := range res {
		require.True(t, errors.As(r.Err, &se), "%v", r.Err)
		require.Equal(t, 503, se.StatusCode)
	}
	require.Equal(t, saves, e.fake.Requests(daprfake.OpSave))
}

// tooBigStore answers every bulk read as daprd answers one over its
// max-body-size.
type tooBigStore struct{ cartcache.Store }

func (tooBigStore) GetBulk(context.Context, []string) ([]statepool.BulkEntry, error) {
	return nil, &statepool.GRPCError{Op: statepool.OpGetBulk, Code: codes.ResourceExhausted, Message: "grpc: trying to send message larger than max"}
}

// Carts too big to read together are applied one by one, never failed.
func TestApplyCartsTooBigToReadTogetherGoOneByOne(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, cartcache.Config{})
	e.apply(t, cacheCmd("c1", ""))
	e.apply(t, cacheCmd("c2", ""))
	svc := cartcache.New(tooBigStore{Store: e.store}, cartcache.Config{Now: e.now})
	res := svc.ApplyCarts(ctx, []cartcache.CartBatch{
		{CartID: "c1", Cmds: []command.Command{addCmd("a1", "c1", item("A", 1, "1", "00"))}},
		{CartID: "c2", Cmds: []command.Command{addCmd("b1", "c2", item("B", 1, "1", "00"))}},
	})
	for i, r := range res {
		require.NoError(t, r.Err, i)
		require.False(t, r.Outcomes[0].Duplicate)
	}
	require.Len(t, e.cart(t, "c1")["line_items"], 1)
	require.Len(t, e.cart(t, "c2")["line_items"], 1)
}

// daprSizeLimit refuses to save a document over max bytes, as daprd
// refuses a message over its max-body-size: alone, and in a bulk save
// that holds one, which it refuses whole.
type daprSizeLimit struct {
	cartcache.Store
	max int
}

func (d daprSizeLimit) Save(ctx context.Context, key string, value []byte, opts statepool.SaveOptions) error {
	if len(value) > d.max {
		return &statepool.GRPCError{Op: statepool.OpSave, Key: key, Code: codes.ResourceExhausted, Message: "grpc: received message larger than max"}
	}
	return d.Store.Save(ctx, key, value, opts)
}

func (d daprSizeLimit) SaveBulk(ctx context.Context, items []statepool.SaveItem) error {
	for _, it := range items {
		if len(it.Value) > d.max {
			return &statepool.GRPCError{Op: statepool.OpSaveBulk, Key: items[0].Key, Code: codes.ResourceExhausted, Message: "grpc: received message larger than max"}
		}
	}
	return d.Store.SaveBulk(ctx, items)
}

// A bulk save daprd refuses as too large is settled cart by cart: the cart
// too large for daprd gets the final refusal, ErrTooLarge, which is an
// ErrBadRequest (state_rejected) and no transient failure; the others in
// the call are saved.
func TestApplyCartsBulkSaveTooLargeForDaprSettlesEachOnItsOwn(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, cartcache.Config{})
	e.apply(t, cacheCmd("c1", ""))
	e.apply(t, cacheCmd("c2", ""))
	raw, _ := e.fake.Get("c1")
	svc := cartcache.New(daprSizeLimit{Store: e.store, max: len(raw) + 1000}, cartcache.Config{Now: e.now})
	var many []command.Item
	for range command.MaxItems {
		many = append(many, item("A", 1, "1", "00"))
	}
	res := svc.ApplyCarts(ctx, []cartcache.CartBatch{
		{CartID: "c1", Cmds: []command.Command{addCmd("a1", "c1", many...)}},
		{CartID: "c2", Cmds: []command.Command{addCmd("b1", "c2", item("B", 1, "1", "00"))}},
	})
	require.ErrorIs(t, res[0].Err, statepool.ErrTooLarge)
	require.ErrorIs(t, res[0].Err, statepool.ErrBadRequest)
	require.NotErrorIs(t, res[0].Err, statepool.ErrResourceExhausted, "a save's size refusal is no split signal")
	require.NoError(t, res[1].Err)
	require.False(t, res[1].Outcomes[0].Duplicate)
	require.Empty(t, e.cart(t, "c1")["line_items"])
	require.Len(t, e.cart(t, "c2")["line_items"], 1)
}
