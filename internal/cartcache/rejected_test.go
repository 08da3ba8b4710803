package cartcache_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/daprfake"
)

// requirePrior checks that an outcome is a replay of a command refused
// with code: a duplicate, refused again the same way.
func requirePrior(t *testing.T, out cartcache.Outcome, code string) {
	t.Helper()
	require.True(t, out.Duplicate, "a replay is a duplicate")
	var prior *cartcache.PriorRejection
	require.True(t, errors.As(out.Err, &prior), "%v", out.Err)
	require.Equal(t, code, prior.Code)
}

// tombstone reads a cart's tombstone.
func (e *env) tombstone(t *testing.T, cartID string) cart.Tombstone {
	t.Helper()
	var ts cart.Tombstone
	raw, ok := e.fake.Get(cartcache.TombstoneKey(cartID))
	require.True(t, ok, "no tombstone of %s", cartID)
	require.NoError(t, json.Unmarshal(raw, &ts))
	return ts
}

// Each rejection of the cart rules is recorded with its code, and its
// replay is refused again with that code, as a duplicate, writing nothing;
// an error that is no rejection is not recorded.
func TestRejectionsAreRecordedAndReplayed(t *testing.T) {
	tests := []struct {
		name string
		cart string // the cart cached first; "" for none
		cmd  command.Command
		err  error
		code string // "" when not recorded
	}{
		{name: "invalid state", cart: `{"status":"Paying"}`, cmd: addCmd("x", "c1", item("A", 1, "1", "00")), err: cart.ErrInvalidState, code: command.CodeInvalidState},
		{name: "unknown tax code", cart: "{}", cmd: addCmd("x", "c1", item("A", 1, "1", "99")), err: cart.ErrUnknownTaxCode, code: command.CodeUnknownTaxCode},
		{name: "amount overflow", cart: "{}", cmd: addCmd("x", "c1", item("A", 9999, "99999999.9997", "00")), err: cart.ErrAmountOverflow, code: command.CodeAmountOverflow},
		{name: "cart not found", cmd: addCmd("x", "c1", item("A", 1, "1", "00")), err: cart.ErrCartNotFound, code: command.CodeCartNotFound},
		{name: "invalid cached document", cmd: command.Command{ID: "x", Type: command.TypeCache, CartID: "c1", Cart: json.RawMessage(`{"line_items":7}`)}, err: cart.ErrInvalidCart},
		{name: "unknown type", cart: "{}", cmd: command.Command{ID: "x", Type: "frobnicate", CartID: "c1"}, err: cart.ErrUnknownType},
	}
	for _, path := range paths {
		for _, tt := range tests {
			t.Run(path.name+"/"+tt.name, func(t *testing.T) {
				e := newEnv(t, cartcache.Config{})
				if tt.cart != "" {
					e.apply(t, cacheCmd("c1", tt.cart))
				}
				out, err := path.apply(t, e, "c1", cartcache.Epoch{}, tt.cmd)
				require.NoError(t, err)
				require.ErrorIs(t, out[0].Err, tt.err)
				require.False(t, out[0].Duplicate)
				key := "c1"
				if tt.cart == "" {
					key = cartcache.TombstoneKey("c1")
				}
				_, stored := e.fake.Get(key)
				if tt.code == "" {
					require.False(t, stored && tt.cart == "", "nothing recorded")
					if stored {
						require.NotContains(t, e.cart(t, "c1")[cart.AppliedIDsField], "x", "not recorded")
					}
					return
				}
				require.True(t, stored)
				etag, _ := e.fake.ETag(key)
				saves := e.fake.Requests(daprfake.OpSave)

				out, err = path.apply(t, e, "c1", cartcache.Epoch{}, tt.cmd, tt.cmd)
				require.NoError(t, err)
				for _, o := range out {
					requirePrior(t, o, tt.code)
					require.ErrorIs(t, o.Err, tt.err, "the replay's error is the rule's, as the consumer tells them apart")
				}
				after, _ := e.fake.ETag(key)
				require.Equal(t, etag, after, "a replay writes nothing")
				if path.name == "UpdateBatchAt" {
					require.Equal(t, saves, e.fake.Requests(daprfake.OpSave))
				}
			})
		}
	}
}

// Update, one command, gives a replay's PriorRejection as its error, with
// the duplicate result.
func TestUpdateReturnsThePriorRejection(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	e.apply(t, cacheCmd("c1", `{"status":"Completed"}`))
	add := addCmd("x", "c1", item("A", 1, "1", "00"))
	_, err := e.svc.Apply(context.Background(), add)
	require.ErrorIs(t, err, cart.ErrInvalidState)
	res, err := e.svc.Apply(context.Background(), add)
	require.True(t, res.Duplicate)
	var prior *cartcache.PriorRejection
	require.ErrorAs(t, err, &prior)
	require.Equal(t, command.CodeInvalidState, prior.Code)
	require.Equal(t, "command refused before: invalid_state", err.Error())
}

// The key scenario of a replay after a takeover: an add-item refused as
// cart_not_found, its cart's cache, then the add-item again. It is refused
// again as it was, though the cart now exists, and the cart is unchanged.
func TestRefusedBeforeItsCartStaysRefusedAfterTheCache(t *testing.T) {
	add := addCmd("x", "c1", item("A", 1, "10", "00"))
	for _, path := range paths {
		t.Run(path.name, func(t *testing.T) {
			e := newEnv(t, cartcache.Config{})
			epoch := ep(1, 1)
			out, err := path.apply(t, e, "c1", epoch, add)
			require.NoError(t, err)
			require.ErrorIs(t, out[0].Err, cart.ErrCartNotFound)
			require.False(t, out[0].Duplicate)
			_, ok := e.fake.Get("c1")
			require.False(t, ok, "a refusal creates no cart")
			ts := e.tombstone(t, "c1")
			assert.Equal(t, []string{"x"}, ts.Applied)
			assert.Equal(t, map[string]string{"x": command.CodeCartNotFound}, ts.Rejected)
			assert.Equal(t, cart.Epoch(epoch), ts.Epoch)
			assert.Empty(t, ts.DeletedBy, "never deleted")
			ttl, ok := e.fake.TTL(cartcache.TombstoneKey("c1"))
			require.True(t, ok)
			assert.Equal(t, cartcache.DefaultTombstoneTTL, ttl)

			out, err = path.apply(t, e, "c1", epoch, cacheCmd("c1", ""))
			require.NoError(t, err)
			require.NoError(t, out[0].Err)
			c := e.cart(t, "c1")
			require.Equal(t, []any{"x", "cache-c1"}, c[cart.AppliedIDsField], "the cart starts from the tombstone's history")
			require.Equal(t, map[string]any{"x": command.CodeCartNotFound}, c[cart.RejectedIDsField])
			before, _ := e.fake.Get("c1")
			etag, _ := e.fake.ETag("c1")

			out, err = path.apply(t, e, "c1", epoch, add)
			require.NoError(t, err)
			requirePrior(t, out[0], command.CodeCartNotFound)
			after, _ := e.fake.Get("c1")
			etagAfter, _ := e.fake.ETag("c1")
			require.Equal(t, string(before), string(after), "the cart is unchanged")
			require.Equal(t, etag, etagAfter)
		})
	}
}

// In one batch too: the refusal before the cache is carried into the cart
// the cache makes.
func TestRefusalBeforeACacheInOneBatch(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	add := addCmd("x", "c1", item("A", 1, "10", "00"))
	out, err := applyBatch(context.Background(), e.svc, "c1", []command.Command{add, cacheCmd("c1", ""), add})
	require.NoError(t, err)
	require.ErrorIs(t, out[0].Err, cart.ErrCartNotFound)
	require.NoError(t, out[1].Err)
	requirePrior(t, out[2], command.CodeCartNotFound)
	c := e.cart(t, "c1")
	require.Empty(t, c["line_items"])
	require.Equal(t, map[string]any{"x": command.CodeCartNotFound}, c[cart.RejectedIDsField])
	_, ok := e.fake.Get(cartcache.TombstoneKey("c1"))
	require.False(t, ok, "one write: the cart")
}

// A refusal after a delete rewrites the delete's tombstone, guarded by its
// ETag, and keeps who deleted the cart.
func TestRefusalAfterADeleteKeepsTheTombstone(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	e.apply(t, cacheCmd("c1", ""))
	e.apply(t, command.Command{ID: "d1", Type: command.TypeDelete, CartID: "c1"})
	deleted := e.tombstone(t, "c1")

	rs := &racingStore{Store: e.store, fake: e.fake, races: 1}
	_, err := cartcache.New(rs, cartcache.Config{Now: e.now}).Apply(context.Background(), addCmd("x", "c1", item("A", 1, "1", "00")))
	require.ErrorIs(t, err, cart.ErrCartNotFound)
	require.Zero(t, rs.races, "the tombstone's save was guarded by its ETag, and retried after the race")
	ts := e.tombstone(t, "c1")
	require.Equal(t, deleted.DeletedBy, ts.DeletedBy)
	require.Equal(t, deleted.DeletedAt, ts.DeletedAt)
	require.Equal(t, []string{"cache-c1", "d1", "x"}, ts.Applied)
	require.Equal(t, map[string]string{"x": command.CodeCartNotFound}, ts.Rejected)
}

// The refused ids share the bounded list with the applied ones, and their
// codes go when their ids are trimmed out of it.
func TestRejectionsAreBoundedWithTheHistory(t *testing.T) {
	e := newEnv(t, cartcache.Config{KeepAppliedIDs: 10}) // raised to the minimum
	const keep = cartcache.MinKeepAppliedIDs
	ctx := context.Background()
	e.apply(t, cacheCmd("c1", `{"status":"Paying"}`))
	adds := make([]command.Command, keep+5)
	for i := range adds {
		adds[i] = addCmd("a"+strconv.Itoa(i), "c1", item("A", 1, "1", "00"))
	}
	out, err := applyBatch(ctx, e.svc, "c1", adds)
	require.NoError(t, err)
	for _, o := range out {
		require.ErrorIs(t, o.Err, cart.ErrInvalidState)
	}
	c := e.cart(t, "c1")
	require.Len(t, c[cart.AppliedIDsField], keep)
	require.Len(t, c[cart.RejectedIDsField], keep)
	require.NotContains(t, c[cart.RejectedIDsField], "a4", "trimmed with its id")
	require.Contains(t, c[cart.RejectedIDsField], "a5")

	// Applied commands push the oldest refusals out.
	const recaches = 600
	cmds := make([]command.Command, recaches)
	for i := range cmds {
		cmds[i] = cacheCmd("c1", `{"status":"Paying"}`)
		cmds[i].ID = "r" + strconv.Itoa(i)
	}
	_, err = applyBatch(ctx, e.svc, "c1", cmds)
	require.NoError(t, err)
	c = e.cart(t, "c1")
	ids := c[cart.AppliedIDsField].([]any)
	codes := c[cart.RejectedIDsField].(map[string]any)
	require.Len(t, ids, keep)
	require.Len(t, codes, keep-recaches, "a605 to a1004")
	listed := make(map[string]bool, len(ids))
	for _, id := range ids {
		listed[id.(string)] = true
	}
	for id := range codes {
		require.True(t, listed[id], "%s has a code but is no longer listed", id)
	}

	out, err = applyBatch(ctx, e.svc, "c1", []command.Command{adds[len(adds)-1], adds[recaches+4]})
	require.NoError(t, err)
	requirePrior(t, out[0], command.CodeInvalidState)
	require.ErrorIs(t, out[1].Err, cart.ErrInvalidState, "forgotten: refused afresh")
	require.False(t, out[1].Duplicate)
}

// A cart from before rejections were recorded has no rejected_command_ids:
// its applied ids stay plain duplicates, and the first refusal adds the
// field. An applied command adds none.
func TestOldDocumentsWithoutRejections(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	e.fake.Put("c1", []byte(`{"cart_id":"c1","status":"Idle","line_items":[],"applied_command_ids":["cache-c1","a0"]}`))
	out, err := applyBatch(context.Background(), e.svc, "c1", []command.Command{
		addCmd("a0", "c1", item("A", 1, "1", "00")),
		addCmd("a1", "c1", item("A", 1, "1", "00")),
	})
	require.NoError(t, err)
	require.True(t, out[0].Duplicate)
	require.NoError(t, out[0].Err, "applied before: no rejection")
	require.NoError(t, out[1].Err)
	require.NotContains(t, e.cart(t, "c1"), cart.RejectedIDsField)

	_, err = e.svc.Apply(context.Background(), addCmd("bad", "c1", item("A", 1, "1", "99")))
	require.ErrorIs(t, err, cart.ErrUnknownTaxCode)
	require.Equal(t, map[string]any{"bad": command.CodeUnknownTaxCode}, e.cart(t, "c1")[cart.RejectedIDsField])

	// An old tombstone, without codes or epoch, still de-duplicates.
	e.fake.Put(cartcache.TombstoneKey("gone"), []byte(`{"cart_id":"gone","deleted_by":"d1","deleted_at":"2026-11-27T10:00:00Z","applied_command_ids":["d1"]}`))
	res, err := e.svc.Apply(context.Background(), command.Command{ID: "d1", Type: command.TypeDelete, CartID: "gone"})
	require.NoError(t, err)
	require.True(t, res.Duplicate)
}

// A bulk save that meets an outside write on another cart leaves a cart
// whose only effect was a recorded refusal with that refusal as its
// outcome, not a replay of it.
func TestApplyCartsConflictKeepsARecordedRefusal(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, cartcache.Config{})
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
		{CartID: "c1", Cmds: []command.Command{addCmd("x", "c1", item("A", 1, "1", "00"))}},
		{CartID: "c2", Cmds: []command.Command{addCmd("b1", "c2", item("B", 1, "1", "00"))}},
	})
	require.NoError(t, res[0].Err)
	require.NoError(t, res[1].Err)
	require.ErrorIs(t, res[0].Outcomes[0].Err, cart.ErrCartNotFound)
	require.False(t, res[0].Outcomes[0].Duplicate, "refused by this call, not before it")
	var prior *cartcache.PriorRejection
	require.False(t, errors.As(res[0].Outcomes[0].Err, &prior))
	require.False(t, res[1].Outcomes[0].Duplicate)
	require.Equal(t, map[string]string{"x": command.CodeCartNotFound}, e.tombstone(t, "c1").Rejected)
}
