package cartcache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/statepool"
)

// sizeSpy remembers the size of the last document saved under each key, as
// cartcache encoded it: what the limit is checked on.
type sizeSpy struct {
	cartcache.Store
	mu   sync.Mutex
	last map[string]int
}

func (s *sizeSpy) Save(ctx context.Context, key string, value []byte, opts statepool.SaveOptions) error {
	s.note(key, value)
	return s.Store.Save(ctx, key, value, opts)
}

func (s *sizeSpy) SaveBulk(ctx context.Context, items []statepool.SaveItem) error {
	for _, it := range items {
		s.note(it.Key, it.Value)
	}
	return s.Store.SaveBulk(ctx, items)
}

func (s *sizeSpy) note(key string, value []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		s.last = map[string]int{}
	}
	s.last[key] = len(value)
}

func (s *sizeSpy) size(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last[key]
}

// limited returns e's carts with a size limit of max bytes, on e's store
// and clock, and the spy that sees their saves.
func limited(e *env, max int) (*cartcache.Carts, *sizeSpy) {
	spy := &sizeSpy{Store: e.store}
	return cartcache.New(spy, cartcache.Config{MaxCartBytes: max, Now: e.now}), spy
}

func lines(n int, code string) []command.Item {
	items := make([]command.Item, n)
	for i := range items {
		items[i] = item(code, 1, "10", "01")
	}
	return items
}

func del(cmdID, cartID string) command.Command {
	return command.Command{ID: cmdID, Type: command.TypeDelete, CartID: cartID}
}

// oneByOne applies cmds one batch each, as if each came alone.
func oneByOne(t *testing.T, svc *cartcache.Carts, cmds []command.Command) []cartcache.Outcome {
	t.Helper()
	var out []cartcache.Outcome
	for _, cmd := range cmds {
		o, err := applyBatch(context.Background(), svc, cmd.CartID, []command.Command{cmd})
		require.NoError(t, err)
		out = append(out, o...)
	}
	return out
}

// requireTooLarge checks that err is the size refusal of a cart of size
// bytes over limit, and says so in its message.
func requireTooLarge(t *testing.T, err error, size, limit int) {
	t.Helper()
	require.ErrorIs(t, err, cart.ErrCartTooLarge)
	code, ok := cart.RejectionCode(err)
	require.True(t, ok)
	require.Equal(t, command.CodeCartTooLarge, code)
	var tl *cart.TooLargeError
	require.ErrorAs(t, err, &tl)
	require.Equal(t, cart.TooLargeError{Size: size, Limit: limit}, *tl)
	require.Contains(t, err.Error(), fmt.Sprintf("cart would be %d bytes, over WORKER_MAX_CART_BYTES %d", size, limit))
}

// sizeAfter returns the size of cart c1 after cmds, applied one by one with
// no limit in the way, on a store of its own: the size a limited cart
// is measured against.
func sizeAfter(t *testing.T, cmds ...command.Command) int {
	t.Helper()
	ref := newEnv(t, cartcache.Config{})
	svc, spy := limited(ref, 0)
	for _, o := range oneByOne(t, svc, cmds) {
		require.NoError(t, o.Err)
	}
	return spy.size("c1")
}

// One command at the edges of the limit: a cart that would be exactly
// MaxCartBytes is saved; one byte more and the command is refused with
// the size and the limit, the cart is left as it was, and a replay is
// refused alike.
func TestCartSizeLimitEdgesOneCommand(t *testing.T) {
	ctx := context.Background()
	add := addCmd("a1", "c1", lines(20, "A")...)
	size := sizeAfter(t, cacheCmd("c1", ""), add)

	t.Run("exactly at the limit", func(t *testing.T) {
		e := newEnv(t, cartcache.Config{})
		svc, spy := limited(e, size)
		_, err := svc.Apply(ctx, cacheCmd("c1", ""))
		require.NoError(t, err)
		_, err = svc.Apply(ctx, add)
		require.NoError(t, err)
		require.Equal(t, size, spy.size("c1"))
		require.Len(t, e.cart(t, "c1")["line_items"], 20)
	})
	t.Run("one byte over", func(t *testing.T) {
		e := newEnv(t, cartcache.Config{})
		svc, _ := limited(e, size-1)
		_, err := svc.Apply(ctx, cacheCmd("c1", ""))
		require.NoError(t, err)
		res, err := svc.Apply(ctx, add)
		requireTooLarge(t, err, size, size-1)
		require.False(t, res.Duplicate)
		c := e.cart(t, "c1")
		require.Empty(t, c["line_items"], "the cart is as it was")
		require.Equal(t, cart.StatusIdle, c["status"])
		require.Equal(t, map[string]any{"a1": command.CodeCartTooLarge}, c[cart.RejectedIDsField], "the refusal is recorded")

		res, err = svc.Apply(ctx, add)
		require.True(t, res.Duplicate)
		var prior *cartcache.PriorRejection
		require.ErrorAs(t, err, &prior)
		require.Equal(t, command.CodeCartTooLarge, prior.Code)
		require.ErrorIs(t, err, cart.ErrCartTooLarge, "a replay is refused alike")
	})
}

// A batch at the edges of the limit: the steps before the one that would
// cross it apply, and that one is refused, each with its own outcome.
func TestCartSizeLimitEdgesBatch(t *testing.T) {
	ctx := context.Background()
	cmds := []command.Command{addCmd("a1", "c1", lines(10, "A")...), addCmd("a2", "c1", lines(10, "B")...)}
	size := sizeAfter(t, append([]command.Command{cacheCmd("c1", "")}, cmds...)...)

	e := newEnv(t, cartcache.Config{})
	svc, spy := limited(e, size)
	_, err := svc.Apply(ctx, cacheCmd("c1", ""))
	require.NoError(t, err)
	out, err := applyBatch(ctx, svc, "c1", cmds)
	require.NoError(t, err)
	require.NoError(t, out[0].Err)
	require.NoError(t, out[1].Err, "exactly at the limit")
	require.Equal(t, size, spy.size("c1"))

	e = newEnv(t, cartcache.Config{})
	svc, _ = limited(e, size-1)
	_, err = svc.Apply(ctx, cacheCmd("c1", ""))
	require.NoError(t, err)
	out, err = applyBatch(ctx, svc, "c1", cmds)
	require.NoError(t, err)
	require.NoError(t, out[0].Err, "the command before the crossing applies")
	requireTooLarge(t, out[1].Err, size, size-1)
	c := e.cart(t, "c1")
	require.Len(t, c["line_items"], 10)
	require.Equal(t, map[string]any{"a2": command.CodeCartTooLarge}, c[cart.RejectedIDsField])
}

// A batch that crosses the limit ends as its commands one by one would: the
// steps before the crossing apply, each later step is refused if it would
// take the cart over and applies if it fits, and a delete applies. The
// refusals are recorded in the tombstone.
func TestCartSizeLimitBatchIsAsOneByOne(t *testing.T) {
	ctx := context.Background()
	base := sizeAfter(t, cacheCmd("c1", ""), addCmd("a1", "c1", lines(5, "A")...))
	limit := base + 2000 // room for a few lines, not for fifty
	for name, cmds := range map[string][]command.Command{
		"refused, then one that fits": {
			addCmd("a1", "c1", lines(5, "A")...),
			addCmd("big", "c1", lines(50, "B")...),
			addCmd("small", "c1", lines(1, "C")...),
			addCmd("big2", "c1", lines(50, "D")...),
		},
		"refused, then a delete": {
			addCmd("a1", "c1", lines(5, "A")...),
			addCmd("big", "c1", lines(50, "B")...),
			del("d1", "c1"),
			addCmd("late", "c1", lines(1, "E")...),
		},
		"over the limit in between, then replaced": {
			addCmd("a1", "c1", lines(5, "A")...),
			addCmd("big", "c1", lines(50, "B")...),
			func() command.Command { c := cacheCmd("c1", ""); c.ID = "recache"; return c }(),
		},
		"over the limit in between, then deleted": {
			addCmd("big", "c1", lines(50, "B")...),
			del("d1", "c1"),
		},
	} {
		t.Run(name, func(t *testing.T) {
			batch, single := newEnv(t, cartcache.Config{}), newEnv(t, cartcache.Config{})
			bsvc, _ := limited(batch, limit)
			ssvc, _ := limited(single, limit)
			for _, svc := range []*cartcache.Carts{bsvc, ssvc} {
				_, err := svc.Apply(ctx, cacheCmd("c1", ""))
				require.NoError(t, err)
			}
			got, err := applyBatch(ctx, bsvc, "c1", cmds)
			require.NoError(t, err)
			want := oneByOne(t, ssvc, cmds)
			require.Len(t, got, len(want))
			for i := range want {
				require.Equal(t, want[i].Duplicate, got[i].Duplicate, cmds[i].ID)
				require.Equal(t, fmt.Sprint(want[i].Err), fmt.Sprint(got[i].Err), cmds[i].ID)
				if cmds[i].ID == "big" || cmds[i].ID == "big2" {
					require.ErrorIs(t, got[i].Err, cart.ErrCartTooLarge, cmds[i].ID)
				}
				if cmds[i].ID == "a1" || cmds[i].ID == "small" || cmds[i].ID == "d1" || cmds[i].ID == "recache" {
					require.NoError(t, got[i].Err, cmds[i].ID)
				}
			}
			for _, key := range []string{"c1", cartcache.TombstoneKey("c1")} {
				w, wok := single.fake.Get(key)
				g, gok := batch.fake.Get(key)
				require.Equal(t, wok, gok, key)
				if wok {
					require.JSONEq(t, string(w), string(g), key)
				}
			}
			if raw, ok := batch.fake.Get(cartcache.TombstoneKey("c1")); ok {
				var ts cart.Tombstone
				require.NoError(t, json.Unmarshal(raw, &ts))
				require.Equal(t, command.CodeCartTooLarge, ts.Rejected["big"], "the refusal outlives the cart")
			}
		})
	}
}

// A cart already over the limit, written before it or under a higher one,
// takes no command that grows it, and takes a cache that makes it smaller,
// even if still over the limit, and a delete.
func TestCartOverTheLimitTakesNothingThatGrowsIt(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, cartcache.Config{})
	e.apply(t, cacheCmd("c1", ""))
	e.apply(t, addCmd("a1", "c1", lines(30, "A")...))
	e.apply(t, cacheCmd("c2", ""))
	e.apply(t, addCmd("b1", "c2", lines(30, "A")...))
	raw, _ := e.fake.Get("c1")
	svc, spy := limited(e, 200) // less than even an empty cart

	_, err := svc.Apply(ctx, addCmd("a2", "c1", lines(1, "B")...))
	require.ErrorIs(t, err, cart.ErrCartTooLarge)
	require.Len(t, e.cart(t, "c1")["line_items"], 30)

	recache := cacheCmd("c1", "")
	recache.ID = "recache"
	_, err = svc.Apply(ctx, recache)
	require.NoError(t, err, "a cache that shrinks the cart applies")
	require.Empty(t, e.cart(t, "c1")["line_items"])
	require.Less(t, spy.size("c1"), len(raw))
	require.Greater(t, spy.size("c1"), 200, "still over the limit")

	out, err := applyBatch(ctx, svc, "c2", []command.Command{addCmd("b2", "c2", lines(1, "B")...), del("d2", "c2")})
	require.NoError(t, err)
	require.ErrorIs(t, out[0].Err, cart.ErrCartTooLarge)
	require.NoError(t, out[1].Err, "a delete applies")
	_, ok := e.fake.Get("c2")
	require.False(t, ok)
}

// A cache that would make a missing cart over the limit is refused, and
// the refusal recorded in the tombstone.
func TestCacheOverTheLimitIsRefused(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, cartcache.Config{})
	svc, _ := limited(e, 200)
	_, err := svc.Apply(ctx, cacheCmd("c1", ""))
	require.ErrorIs(t, err, cart.ErrCartTooLarge)
	_, ok := e.fake.Get("c1")
	require.False(t, ok)
	res, err := svc.Apply(ctx, cacheCmd("c1", ""))
	require.True(t, res.Duplicate)
	require.ErrorIs(t, err, cart.ErrCartTooLarge, "the tombstone refuses the replay alike")
}

// The bulk path checks the limit as the one-cart path does, each cart on
// its own.
func TestApplyCartsChecksTheLimitPerCart(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, cartcache.Config{})
	e.apply(t, cacheCmd("c1", ""))
	e.apply(t, cacheCmd("c2", ""))
	raw, _ := e.fake.Get("c1")
	svc, _ := limited(e, len(raw)+3000)
	res := svc.ApplyCarts(ctx, []cartcache.CartBatch{
		{CartID: "c1", Cmds: []command.Command{addCmd("a1", "c1", lines(1, "A")...), addCmd("a2", "c1", lines(50, "B")...)}},
		{CartID: "c2", Cmds: []command.Command{addCmd("b1", "c2", lines(2, "A")...)}},
	})
	require.NoError(t, res[0].Err)
	require.NoError(t, res[0].Outcomes[0].Err)
	require.ErrorIs(t, res[0].Outcomes[1].Err, cart.ErrCartTooLarge)
	require.NoError(t, res[1].Err)
	require.NoError(t, res[1].Outcomes[0].Err)
	require.Len(t, e.cart(t, "c1")["line_items"], 1)
	require.Len(t, e.cart(t, "c2")["line_items"], 2)
}

func TestMaxCartBytesValidates(t *testing.T) {
	require.NoError(t, cartcache.Config{}.Validate())
	require.NoError(t, cartcache.Config{MaxCartBytes: 1 << 20}.Validate())
	require.ErrorContains(t, cartcache.Config{MaxCartBytes: -1}.Validate(), "MaxCartBytes: -1")
}
