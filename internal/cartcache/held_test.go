package cartcache_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/budget"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/statepool"
)

// gatedStore holds every save of key until open is closed, and says on
// saving when one has arrived.
type gatedStore struct {
	cartcache.Store
	key    string
	saving chan struct{}
	open   chan struct{}
	once   sync.Once
}

func (g *gatedStore) Save(ctx context.Context, key string, value []byte, opts statepool.SaveOptions) error {
	if key == g.key {
		g.once.Do(func() { close(g.saving) })
		<-g.open
	}
	return g.Store.Save(ctx, key, value, opts)
}

// A read-modify-write takes HeldPerByte bytes of Config.Held per byte it
// read and gives them back once written: while one cart holds the whole
// budget, the next waits before it parses, and goes on once it is given
// back.
func TestUpdatesHoldTheirDocumentsBytes(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		e.apply(t, cacheCmd(id, `{"line_items":[]}`))
		e.apply(t, addCmd("add-"+id, id, lines(50, id)...))
	}
	got, err := e.store.Get(ctx, "a")
	require.NoError(t, err)
	held, err := budget.New(int64(len(got.Value)) * cartcache.HeldPerByte) // one cart's worth
	require.NoError(t, err)
	gate := &gatedStore{Store: e.store, key: "a", saving: make(chan struct{}), open: make(chan struct{})}
	carts := cartcache.New(gate, cartcache.Config{Held: held, Now: e.now})

	errs := make(chan error, 2)
	go func() {
		_, err := applyBatch(ctx, carts, "a", []command.Command{addCmd("a2", "a", item("X", 1, "1", "01"))})
		errs <- err
	}()
	<-gate.saving
	require.Equal(t, held.Total(), held.Held(), "cart a holds its read three times over")
	go func() {
		_, err := applyBatch(ctx, carts, "b", []command.Command{addCmd("b2", "b", item("Y", 1, "1", "01"))})
		errs <- err
	}()
	require.Eventually(t, func() bool { return held.Waiting() == 1 }, 5*time.Second, time.Millisecond,
		"cart b should wait for the bytes cart a holds")
	close(gate.open)
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)
	require.Zero(t, held.Held(), "every byte taken is given back")
	require.Zero(t, held.Waiting())
}

// UpdateCarts settles deletes and the carts a bulk save sent back on their
// own only after it has given back what its bulk read took, so that a
// budget one cart fills still lets them run instead of waiting for
// itself.
func TestUpdateCartsDoesNotWaitForItself(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	for _, id := range []string{"a", "b", "c"} {
		e.apply(t, cacheCmd(id, `{"line_items":[]}`))
	}
	held, err := budget.New(1) // every read takes all of it
	require.NoError(t, err)
	carts := cartcache.New(e.store, cartcache.Config{Held: held, Now: e.now})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := carts.ApplyCarts(ctx, []cartcache.CartBatch{
		{CartID: "a", Cmds: []command.Command{addCmd("a1", "a", item("X", 1, "1", "01"))}},
		{CartID: "b", Cmds: []command.Command{del("b1", "b")}},
		{CartID: "c", Cmds: []command.Command{addCmd("c1", "c", item("Y", 1, "1", "01")), del("c2", "c")}},
	})
	require.NoError(t, ctx.Err(), "UpdateCarts waited for itself")
	for i, r := range res {
		require.NoError(t, r.Err, "cart %d", i)
		for j, o := range r.Outcomes {
			require.NoError(t, o.Err, "cart %d step %d", i, j)
		}
	}
	_, err = e.store.Get(context.Background(), "b")
	require.ErrorIs(t, err, statepool.ErrNotFound, "b is deleted")
	require.Zero(t, held.Held())
}
