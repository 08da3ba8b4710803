//go:build integration

package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/cartworkertest"
	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// daprGet reads key from the cartstore through daprd's HTTP API on the
// mapped port, as upstream does, sending token when set. It reads with the
// worker's own state client; status is the HTTP status daprd answered, 0
// when none came.
func daprGet(ctx context.Context, daprURL, token, key string) (e statepool.Entry, status int, err error) {
	var code string
	c, err := statepool.New(statepool.Config{
		Protocol: statepool.ProtocolHTTP,
		Endpoint: daprURL, StoreName: "cartstore", APIToken: token, RequestTimeout: 5 * time.Second,
		Hooks: statepool.Hooks{OnRequest: func(_, got string, _ time.Duration) { code = got }},
	})
	if err != nil {
		return statepool.Entry{}, 0, err
	}
	defer c.Close()
	e, err = c.Get(ctx, key)
	status, _ = strconv.Atoi(code) // "timeout" and "error" are 0
	return e, status, err
}

// readCart reads a cart through Dapr and requires it to exist.
func readCart(ctx context.Context, t *testing.T, st *stack, cartID string) *cartworkertest.Cart {
	t.Helper()
	c, err := st.Cart(ctx, cartID)
	require.NoError(t, err, "GET cart %s through Dapr", cartID)
	return c
}

// amount is a decimal amount written out, as the carts' totals are
// compared.
func amount(t *testing.T, s string) money.Amount {
	t.Helper()
	a, err := money.Parse(s)
	require.NoError(t, err)
	return a
}

// newCartIDs returns n cart ids unique to this run and test.
func newCartIDs(prefix string, n int) []string {
	base := prefix + "-" + randomHex(4)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%02d", base, i)
	}
	return ids
}

// cacheCarts creates the carts and waits for each to be applied.
func cacheCarts(ctx context.Context, t *testing.T, b *bus, cartIDs []string) map[string]string {
	t.Helper()
	ids := map[string]string{}
	var mu sync.Mutex
	g, gctx := newGroup(ctx)
	sem := make(chan struct{}, 8)
	for _, c := range cartIDs {
		g.Go(func() error {
			sem <- struct{}{}
			defer func() { <-sem }()
			ev, err := b.pub.PublishAndWait(gctx, publisher.CacheCommand(c, publisher.NewCart{TenantID: "T1", StoreCode: "S1", TerminalNo: 1}))
			if err != nil {
				return fmt.Errorf("cache %s: %w", c, err)
			}
			mu.Lock()
			ids[c] = ev.CommandID
			mu.Unlock()
			return nil
		})
	}
	require.NoError(t, g.Wait())
	return ids
}

// Tax rates the load uses: codes from the default table. Internal taxes
// (02) never count in tax_amount.
var loadTaxCodes = []string{"01", "11", "00", "02"}

// externalRate is the percent of an external tax code; 0 otherwise.
func externalRate(code string) int64 {
	switch code {
	case "01":
		return 10
	case "11":
		return 8
	}
	return 0
}

// load is a planned set of add-item commands over some carts, with the
// totals each cart must end with.
type load struct {
	carts []string
	cmds  []command.Command
}

// newLoad plans n add-items spread at random over carts, one line each.
// Every command has a unique id, which is also its line's item_code.
func newLoad(carts []string, n int) *load {
	l := &load{carts: carts}
	prefix := randomHex(3)
	r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	for i := range n {
		cart := carts[r.IntN(len(carts))]
		id := fmt.Sprintf("add-%s-%04d", prefix, i)
		l.cmds = append(l.cmds, command.Command{
			ID: id, Type: command.TypeAddItem, CartID: cart,
			Items: []command.Item{{
				ItemCode:    id,
				Quantity:    1 + i%3,
				UnitPrice:   money.FromInt(int64(100 + (i%7)*15)),
				Description: "item " + id,
				TaxCode:     loadTaxCodes[i%len(loadTaxCodes)],
			}},
		})
	}
	return l
}

// byCart returns the ids of the commands of each cart.
func (l *load) byCart() map[string][]string {
	out := map[string][]string{}
	for _, c := range l.cmds {
		out[c.CartID] = append(out[c.CartID], c.ID)
	}
	return out
}

// publish stores every command with the given number of concurrent
// publishers; extra runs on the same goroutines after command i when it
// returns true for i (for republishes and malformed commands).
func (l *load) publish(ctx context.Context, b *bus, publishers int, extra func(ctx context.Context, i int) error) error {
	g, gctx := newGroup(ctx)
	next := make(chan int)
	g.Go(func() error {
		defer close(next)
		for i := range l.cmds {
			select {
			case next <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range publishers {
		g.Go(func() error {
			for i := range next {
				r, err := b.pub.Publish(gctx, l.cmds[i])
				if err != nil {
					return err
				}
				if r.Duplicate {
					return fmt.Errorf("command %s dropped as a JetStream duplicate", l.cmds[i].ID)
				}
				if extra != nil {
					if err := extra(gctx, i); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// expectedTotals is what a cart must hold after its add-items.
type expectedTotals struct {
	ids      []string
	subtotal int64
	tax      int64
	qty      int
}

func (l *load) expected() map[string]*expectedTotals {
	out := map[string]*expectedTotals{}
	targets := map[string]map[string]int64{}
	for _, c := range l.carts {
		out[c] = &expectedTotals{}
		targets[c] = map[string]int64{}
	}
	for _, cmd := range l.cmds {
		e := out[cmd.CartID]
		e.ids = append(e.ids, cmd.ID)
		for _, it := range cmd.Items {
			amount := it.UnitPrice.Units() / 10_000 * int64(it.Quantity)
			e.subtotal += amount
			e.qty += it.Quantity
			targets[cmd.CartID][it.TaxCode] += amount
		}
	}
	for cart, byCode := range targets {
		for code, target := range byCode {
			// External tax: floor(target × rate / 100), per tax code.
			out[cart].tax += target * externalRate(code) / 100
		}
	}
	return out
}

// verify reads every cart through Dapr and checks that each command added
// exactly one line and that the totals are exact. cacheIDs are the ids of
// the cache commands that created the carts.
func (l *load) verify(ctx context.Context, t *testing.T, st *stack, cacheIDs map[string]string) {
	t.Helper()
	for cart, want := range l.expected() {
		d := readCart(ctx, t, st, cart)
		got := map[string]int{}
		for i, line := range d.LineItems {
			require.Equal(t, i+1, line.LineNo, "cart %s line_no", cart)
			got[line.ItemCode]++
		}
		var dups, unknown []string
		wantSet := map[string]bool{}
		for _, id := range want.ids {
			wantSet[id] = true
		}
		for code, n := range got {
			if n > 1 {
				dups = append(dups, fmt.Sprintf("%s×%d", code, n))
			}
			if !wantSet[code] {
				unknown = append(unknown, code)
			}
		}
		var missing []string
		for _, id := range want.ids {
			if got[id] == 0 {
				missing = append(missing, id)
			}
		}
		sort.Strings(dups)
		require.Empty(t, dups, "cart %s: commands applied more than once", cart)
		require.Empty(t, missing, "cart %s: commands never applied", cart)
		require.Empty(t, unknown, "cart %s: lines from no command of this cart", cart)
		require.Len(t, d.LineItems, len(want.ids), "cart %s lines", cart)

		require.Equal(t, money.FromInt(want.subtotal), d.SubtotalAmount, "cart %s subtotal_amount", cart)
		require.Equal(t, money.FromInt(want.subtotal), d.Sales.TotalAmount, "cart %s sales.total_amount", cart)
		require.Equal(t, money.FromInt(want.tax), d.Sales.TaxAmount, "cart %s sales.tax_amount", cart)
		require.Equal(t, money.FromInt(want.subtotal+want.tax), d.Sales.TotalAmountWithTax, "cart %s sales.total_amount_with_tax", cart)
		require.Equal(t, want.qty, d.Sales.TotalQuantity, "cart %s sales.total_quantity", cart)
		require.Equal(t, "EnteringItem", d.Status, "cart %s status", cart)

		// The applied-id list holds the cache and every add-item once.
		wantApplied := append([]string{cacheIDs[cart]}, want.ids...)
		require.ElementsMatch(t, wantApplied, d.AppliedCommandIDs, "cart %s applied_command_ids", cart)
	}
}

// rate formats a count, its duration and the rate for t.Logf.
func rate(n int, d time.Duration) string {
	return fmt.Sprintf("%d in %s (%.0f/s)", n, d.Round(time.Millisecond), float64(n)/d.Seconds())
}

// group runs goroutines and returns the first error, cancelling the rest
// (errgroup without the dependency).
type group struct {
	wg     sync.WaitGroup
	cancel context.CancelFunc
	once   sync.Once
	err    error
}

func newGroup(ctx context.Context) (*group, context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	return &group{cancel: cancel}, ctx
}

func (g *group) Go(f func() error) {
	g.wg.Go(func() {
		if err := f(); err != nil {
			g.once.Do(func() {
				g.err = err
				g.cancel()
			})
		}
	})
}

func (g *group) Wait() error {
	g.wg.Wait()
	g.cancel()
	return g.err
}
