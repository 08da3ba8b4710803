package cartcache_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/money"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a Service over the real state client talking to the Dapr fake.
type env struct {
	svc   *cartcache.Carts
	fake  *daprfake.Fake
	store *statepool.Client
	now   func() time.Time
}

func newEnv(t *testing.T, cfg cartcache.Config) *env {
	t.Helper()
	fake := daprfake.New()
	t.Cleanup(fake.Close)
	scfg := statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: fake.URL()}
	client, err := statepool.New(scfg)
	require.NoError(t, err)
	t.Cleanup(client.Close)
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC) }
	}
	return &env{svc: cartcache.New(client, cfg), fake: fake, store: client, now: cfg.Now}
}

func (e *env) apply(t *testing.T, cmd command.Command) cartcache.Result {
	t.Helper()
	res, err := e.svc.Apply(context.Background(), cmd)
	require.NoError(t, err)
	return res
}

// cart reads the stored document back as generic JSON.
func (e *env) cart(t *testing.T, id string) map[string]any {
	t.Helper()
	raw, ok := e.fake.Get(id)
	require.True(t, ok, "cart %s not stored", id)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	return m
}

// applyBatch applies several validated commands of one cart in order in
// one read-modify-write, as the worker does: ApplyCarts of one cart.
func applyBatch(ctx context.Context, c *cartcache.Carts, cartID string, cmds []command.Command) ([]cartcache.Outcome, error) {
	r := c.ApplyCarts(ctx, []cartcache.CartBatch{{CartID: cartID, Cmds: cmds}})[0]
	return r.Outcomes, r.Err
}

func cacheCmd(id, cart string) command.Command {
	return command.Command{ID: "cache-" + id, Type: command.TypeCache, CartID: id, TenantID: "T1", StoreCode: "S1", TerminalNo: 1, Cart: json.RawMessage(cart)}
}

func addCmd(cmdID, cartID string, items ...command.Item) command.Command {
	return command.Command{ID: cmdID, Type: command.TypeAddItem, CartID: cartID, Items: items}
}

func item(code string, qty int, price, tax string) command.Item {
	p, err := money.Parse(price)
	if err != nil {
		panic(err) // test data only
	}
	return command.Item{ItemCode: code, Quantity: qty, UnitPrice: p, TaxCode: tax, Description: code}
}

func TestTotalsAndTaxes(t *testing.T) {
	type tax struct {
		Code   string
		Amount float64
		Target float64
	}
	tests := []struct {
		name                              string
		items                             []command.Item
		subtotal, taxAmount, withTax, qty float64
		taxes                             []tax
	}{
		{
			name:     "external 10% on 2 x 120",
			items:    []command.Item{item("A", 2, "120", "01")},
			subtotal: 240, taxAmount: 24, withTax: 264, qty: 2,
			taxes: []tax{{"01", 24, 240}},
		},
		{
			name:     "internal 10% is inside the price",
			items:    []command.Item{item("B", 1, "1100", "02")},
			subtotal: 1100, taxAmount: 0, withTax: 1100, qty: 1,
			taxes: []tax{{"02", 100, 1100}},
		},
		{
			name:     "external 8% floors",
			items:    []command.Item{item("C", 3, "333", "11")},
			subtotal: 999, taxAmount: 79, withTax: 1078, qty: 3,
			taxes: []tax{{"11", 79, 999}},
		},
		{
			name:     "internal 8% floors",
			items:    []command.Item{item("D", 1, "500", "12")},
			subtotal: 500, taxAmount: 0, withTax: 500, qty: 1,
			taxes: []tax{{"12", 37, 500}}, // 500*8/108 = 37.03
		},
		{
			name:     "exempt",
			items:    []command.Item{item("E", 4, "50", "00")},
			subtotal: 200, taxAmount: 0, withTax: 200, qty: 4,
			taxes: []tax{{"00", 0, 200}},
		},
		{
			name: "grouped by code, floored per group",
			items: []command.Item{
				item("A", 1, "105", "01"), item("B", 1, "105", "01"), // 210 -> 21
				item("C", 1, "1100", "02"), item("D", 3, "333", "11"),
			},
			subtotal: 2309, taxAmount: 21 + 79, withTax: 2409, qty: 6,
			taxes: []tax{{"01", 21, 210}, {"02", 100, 1100}, {"11", 79, 999}},
		},
		{
			name:     "decimal prices do not drift",
			items:    []command.Item{item("F", 3, "0.1", "00"), item("G", 7, "0.7", "00")},
			subtotal: 5.2, taxAmount: 0, withTax: 5.2, qty: 10,
			taxes: []tax{{"00", 0, 5.2}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, cartcache.Config{})
			e.apply(t, cacheCmd("c1", ""))
			for i, it := range tt.items {
				e.apply(t, addCmd("add-"+strconv.Itoa(i), "c1", it))
			}
			c := e.cart(t, "c1")
			require.Equal(t, cart.StatusEnteringItem, c["status"])
			require.InDelta(t, tt.subtotal, c["subtotal_amount"], 1e-9)
			sales := c["sales"].(map[string]any)
			require.InDelta(t, tt.subtotal, sales["total_amount"], 1e-9)
			require.InDelta(t, tt.taxAmount, sales["tax_amount"], 1e-9)
			require.InDelta(t, tt.withTax, sales["total_amount_with_tax"], 1e-9)
			require.InDelta(t, tt.qty, sales["total_quantity"], 1e-9)
			require.InDelta(t, tt.withTax, c["balance_amount"], 1e-9)
			taxes := c["taxes"].([]any)
			require.Len(t, taxes, len(tt.taxes))
			for i, want := range tt.taxes {
				got := taxes[i].(map[string]any)
				require.Equal(t, want.Code, got["tax_code"])
				require.InDelta(t, want.Amount, got["tax_amount"], 1e-9, want.Code)
				require.InDelta(t, want.Target, got["target_amount"], 1e-9, want.Code)
			}
			lines := c["line_items"].([]any)
			require.Len(t, lines, len(tt.items))
			for i, l := range lines {
				require.EqualValues(t, i+1, l.(map[string]any)["line_no"])
			}
		})
	}
}

func TestTotalsHonourUpstreamFields(t *testing.T) {
	// A cart cached from upstream with a cancelled line, an allocated line
	// discount, a subtotal discount and a payment.
	e := newEnv(t, cartcache.Config{})
	e.apply(t, cacheCmd("c1", `{"status":"EnteringItem","line_items":[
	  {"line_no":1,"item_code":"X","quantity":1,"unit_price":1000,"amount":1000,"tax_code":"01","is_cancelled":true},
	  {"line_no":2,"item_code":"Y","quantity":2,"unit_price":500,"amount":1000,"tax_code":"01","is_cancelled":false,
	   "discounts_allocated":[{"discount_amount":100}]}],
	  "subtotal_discounts":[{"discount_amount":50}],
	  "payments":[{"payment_code":"01","amount":500}]}`))
	e.apply(t, addCmd("a1", "c1", item("Z", 1, "200", "01")))
	c := e.cart(t, "c1")
	// subtotal 1000 + 200; tax on (1000-100)+200 = 110; total 1200-50.
	require.InDelta(t, 1200, c["subtotal_amount"], 1e-9)
	sales := c["sales"].(map[string]any)
	require.InDelta(t, 1150, sales["total_amount"], 1e-9)
	require.InDelta(t, 110, sales["tax_amount"], 1e-9)
	require.InDelta(t, 1260, sales["total_amount_with_tax"], 1e-9)
	require.InDelta(t, 760, c["balance_amount"], 1e-9)
	require.EqualValues(t, 3, c["line_items"].([]any)[2].(map[string]any)["line_no"])
}

func TestUnknownFieldsSurvive(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	upstream := `{"cart_id":"c1","tenant_id":"T9","store_code":"S9","store_name":"Shibuya","terminal_no":7,
	  "transaction_no":42,"business_date":"20261127","receipt_no":3,"staff":{"id":"s1","name":"Ann"},
	  "user":{"id":"u1","name":"Bob"},"masters":{"items":[{"item_code":"A","price":1.5}],"taxes":[],"settings":{"x":[1,2,{"y":null}]}},
	  "additional_info":{"loyalty":{"card":"123","points":10.25}},"payments":[],
	  "sales":{"change_amount":0,"is_cancelled":false,"custom":"keep"},
	  "line_items":[{"line_no":1,"item_code":"A","quantity":1,"unit_price":150,"amount":150,"tax_code":"00",
	     "is_cancelled":false,"item_details":[{"name":"size","value":"L"}],"image_urls":["http://img/a.png"],"vendor_extra":{"k":"v"}}],
	  "status":"Idle","shard_key":"T9-S9-7","future_field":[true,"unicode ✓ \u00e9"]}`
	e.apply(t, cacheCmd("c1", upstream))
	e.apply(t, addCmd("a1", "c1", item("B", 1, "100", "01")))
	e.apply(t, addCmd("a2", "c1", item("C", 2, "10", "00")))

	var before, after map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(upstream), &before))
	raw, _ := e.fake.Get("c1")
	require.NoError(t, json.Unmarshal(raw, &after))
	for _, k := range []string{"store_name", "transaction_no", "business_date", "receipt_no", "staff", "user",
		"masters", "additional_info", "payments", "shard_key", "future_field", "tenant_id", "store_code", "terminal_no"} {
		require.JSONEq(t, string(before[k]), string(after[k]), k)
	}
	var sales map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(after["sales"], &sales))
	require.JSONEq(t, `"keep"`, string(sales["custom"]))
	var lines []json.RawMessage
	require.NoError(t, json.Unmarshal(after["line_items"], &lines))
	require.Len(t, lines, 3)
	var oldLines []json.RawMessage
	require.NoError(t, json.Unmarshal(before["line_items"], &oldLines))
	require.JSONEq(t, string(oldLines[0]), string(lines[0]), "an untouched line is kept verbatim")
}

func TestDuplicateCommandsChangeNothing(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	require.False(t, e.apply(t, cacheCmd("c1", "")).Duplicate)
	require.True(t, e.apply(t, cacheCmd("c1", "")).Duplicate)
	add := addCmd("a1", "c1", item("A", 1, "100", "01"))
	require.False(t, e.apply(t, add).Duplicate)
	before, _ := e.fake.Get("c1")
	etag, _ := e.fake.ETag("c1")
	for range 3 {
		require.True(t, e.apply(t, add).Duplicate)
	}
	after, _ := e.fake.Get("c1")
	etagAfter, _ := e.fake.ETag("c1")
	require.Equal(t, string(before), string(after))
	require.Equal(t, etag, etagAfter, "a duplicate must not write")
}

func TestKeepsAtLeastTheLastThousandIDs(t *testing.T) {
	e := newEnv(t, cartcache.Config{KeepAppliedIDs: 10}) // raised to the minimum, 1000
	// Re-caching keeps the cart small while its id history grows.
	recache := func(i int) command.Command {
		c := cacheCmd("c1", "")
		c.ID = "c" + strconv.Itoa(i)
		return c
	}
	for i := range 1005 {
		e.apply(t, recache(i))
	}
	ids := e.cart(t, "c1")[cart.AppliedIDsField].([]any)
	require.Len(t, ids, 1000)
	require.Equal(t, "c1004", ids[len(ids)-1])
	require.True(t, e.apply(t, recache(5)).Duplicate)
	require.False(t, e.apply(t, recache(4)).Duplicate, "forgotten after 1000")
}

func TestRejections(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	_, err := e.svc.Apply(context.Background(), addCmd("a1", "nope", item("A", 1, "1", "00")))
	require.ErrorIs(t, err, cart.ErrCartNotFound)

	e.apply(t, cacheCmd("paying", `{"status":"Paying"}`))
	_, err = e.svc.Apply(context.Background(), addCmd("a2", "paying", item("A", 1, "1", "00")))
	require.ErrorIs(t, err, cart.ErrInvalidState)

	e.apply(t, cacheCmd("c1", ""))
	_, err = e.svc.Apply(context.Background(), addCmd("a3", "c1", item("A", 1, "1", "99")))
	require.ErrorIs(t, err, cart.ErrUnknownTaxCode)

	e.fake.Put("broken", []byte(`{"line_items":"not a list"}`))
	_, err = e.svc.Apply(context.Background(), addCmd("a4", "broken", item("A", 1, "1", "00")))
	require.ErrorIs(t, err, cart.ErrInvalidCart)
}

// A command type Apply does not know says nothing about the cart, which
// must not be blamed for it: the consumer dead-letters ErrInvalidCart as
// invalid_cart.
func TestUnknownCommandTypeIsNotAnInvalidCart(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	e.apply(t, cacheCmd("c1", ""))
	_, err := e.svc.Apply(context.Background(), command.Command{ID: "x1", Type: "frobnicate", CartID: "c1"})
	require.ErrorIs(t, err, cart.ErrUnknownType)
	require.NotErrorIs(t, err, cart.ErrInvalidCart)
}

func TestDeleteLeavesTombstone(t *testing.T) {
	e := newEnv(t, cartcache.Config{TombstoneTTL: 90 * time.Second})
	e.apply(t, cacheCmd("c1", ""))
	add := addCmd("a1", "c1", item("A", 1, "1", "00"))
	e.apply(t, add)
	del := command.Command{ID: "d1", Type: command.TypeDelete, CartID: "c1"}
	require.False(t, e.apply(t, del).Duplicate)

	_, err := e.store.Get(context.Background(), "c1")
	require.ErrorIs(t, err, statepool.ErrNotFound, "the cart's key reads back as 204")
	ttl, ok := e.fake.TTL(cartcache.TombstoneKey("c1"))
	require.True(t, ok)
	require.Equal(t, 90*time.Second, ttl)

	// Late redeliveries of commands the deleted cart saw are duplicates.
	require.True(t, e.apply(t, del).Duplicate)
	require.True(t, e.apply(t, add).Duplicate)
	require.True(t, e.apply(t, cacheCmd("c1", "")).Duplicate)
	_, err = e.store.Get(context.Background(), "c1")
	require.ErrorIs(t, err, statepool.ErrNotFound, "a redelivered cache must not resurrect the cart")

	// Deleting a cart that never existed counts as applied.
	require.False(t, e.apply(t, command.Command{ID: "d2", Type: command.TypeDelete, CartID: "ghost"}).Duplicate)

	// A new cart under the same id is a new cart.
	recreate := cacheCmd("c1", "")
	recreate.ID = "cache-2"
	require.False(t, e.apply(t, recreate).Duplicate)
	require.Empty(t, e.cart(t, "c1")["line_items"])
}

// racingStore changes the cart behind the service's back between its read
// and its write, the first few times, as another instance would.
type racingStore struct {
	cartcache.Store
	fake  *daprfake.Fake
	mu    sync.Mutex
	races int
}

func (r *racingStore) Save(ctx context.Context, key string, value []byte, opts statepool.SaveOptions) error {
	r.mu.Lock()
	if r.races > 0 && opts.ETag != "" {
		r.races--
		doc, _ := r.fake.Get(key)
		r.fake.Put(key, doc) // same content, new ETag
	}
	r.mu.Unlock()
	return r.Store.Save(ctx, key, value, opts)
}

func TestConflictRereadsAndRetries(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	e.apply(t, cacheCmd("c1", ""))
	rs := &racingStore{Store: e.store, fake: e.fake, races: 3}
	svc := cartcache.New(rs, cartcache.Config{})
	_, err := svc.Apply(context.Background(), addCmd("a1", "c1", item("A", 1, "5", "00")))
	require.NoError(t, err)
	require.Equal(t, 0, rs.races)
	require.Len(t, e.cart(t, "c1")["line_items"], 1)

	rs.races = 100
	_, err = cartcache.New(rs, cartcache.Config{MaxConflictRereads: 2}).Apply(context.Background(), addCmd("a2", "c1", item("A", 1, "5", "00")))
	require.ErrorIs(t, err, cartcache.ErrConflict)
}

func TestConcurrentWritersLoseNothing(t *testing.T) {
	// Eight writers on one cart collide far more than instances do in
	// practice; enough retries make the outcome deterministic.
	e := newEnv(t, cartcache.Config{MaxConflictRereads: 200})
	e.apply(t, cacheCmd("c1", ""))
	const writers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				_, err := e.svc.Apply(context.Background(), addCmd(fmt.Sprintf("w%d-%d", w, i), "c1", item("A", 1, "10", "01")))
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	c := e.cart(t, "c1")
	lines := c["line_items"].([]any)
	require.Len(t, lines, writers*each)
	for i, l := range lines {
		require.EqualValues(t, i+1, l.(map[string]any)["line_no"])
	}
	require.InDelta(t, 800, c["subtotal_amount"], 1e-9)
	require.InDelta(t, 880, c["sales"].(map[string]any)["total_amount_with_tax"], 1e-9)
}

// Update's contract, apart from any cart rule: a known command id never
// reaches the change; a change's error writes nothing; the change may
// return the cart it was given, a new one, or nil to delete it.
func TestUpdateOwnsTheReadModifyWrite(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	ctx := context.Background()
	e.apply(t, cacheCmd("c1", ""))

	calls := 0
	keep := func(cur *cart.Document) (*cart.Document, error) {
		calls++
		require.NotNil(t, cur)
		return cur, nil
	}
	res, err := e.svc.Update(ctx, "c1", "u1", keep)
	require.NoError(t, err)
	require.False(t, res.Duplicate)
	require.Equal(t, 1, calls)
	require.Contains(t, e.cart(t, "c1")[cart.AppliedIDsField], "u1", "the id is saved with the cart")

	res, err = e.svc.Update(ctx, "c1", "u1", keep)
	require.NoError(t, err)
	require.True(t, res.Duplicate)
	require.Equal(t, 1, calls, "a known id never reaches the change")

	etag, _ := e.fake.ETag("c1")
	refused := errors.New("refused")
	_, err = e.svc.Update(ctx, "c1", "u2", func(*cart.Document) (*cart.Document, error) { return nil, refused })
	require.ErrorIs(t, err, refused)
	after, _ := e.fake.ETag("c1")
	require.Equal(t, etag, after, "a refused change writes nothing")
	require.NotContains(t, e.cart(t, "c1")[cart.AppliedIDsField], "u2")

	_, err = e.svc.Update(ctx, "c1", "u3", func(*cart.Document) (*cart.Document, error) { return nil, nil })
	require.NoError(t, err)
	_, ok := e.fake.Get("c1")
	require.False(t, ok, "nil deletes the cart")
	_, err = e.svc.Update(ctx, "c1", "u1", func(cur *cart.Document) (*cart.Document, error) {
		t.Error("the tombstone remembers u1")
		return cur, nil
	})
	require.NoError(t, err)
}

// A batch is one read and one save, and each command keeps its own outcome:
// a refused command in the middle changes nothing, the commands around it
// apply as if it had never come, and a duplicate is recognised whether it
// was applied before or earlier in the same batch.
func TestApplyBatchOneSaveEachCommandItsOutcome(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	ctx := context.Background()
	e.apply(t, cacheCmd("c1", ""))
	e.apply(t, addCmd("a0", "c1", item("A", 1, "100", "01")))
	etag, _ := e.fake.ETag("c1")
	saves := e.fake.Requests("save")

	out, err := applyBatch(ctx, e.svc, "c1", []command.Command{
		addCmd("a1", "c1", item("B", 2, "10", "01")),
		addCmd("bad", "c1", item("C", 1, "5", "99")),  // unknown tax code
		addCmd("a0", "c1", item("A", 1, "100", "01")), // applied before
		addCmd("a2", "c1", item("D", 1, "1", "00")),
		addCmd("a2", "c1", item("D", 1, "1", "00")), // twice in the batch
	})
	require.NoError(t, err)
	require.Len(t, out, 5)
	require.NoError(t, out[0].Err)
	require.False(t, out[0].Duplicate)
	require.ErrorIs(t, out[1].Err, cart.ErrUnknownTaxCode)
	require.True(t, out[2].Duplicate)
	require.NoError(t, out[3].Err)
	require.False(t, out[3].Duplicate)
	require.True(t, out[4].Duplicate)
	require.Equal(t, saves+1, e.fake.Requests("save"), "one save for the batch")
	after, _ := e.fake.ETag("c1")
	require.NotEqual(t, etag, after)

	c := e.cart(t, "c1")
	lines := c["line_items"].([]any)
	require.Len(t, lines, 3, "A, B and D: the refused C left no line")
	for i, code := range []string{"A", "B", "D"} {
		l := lines[i].(map[string]any)
		require.Equal(t, code, l["item_code"])
		require.EqualValues(t, i+1, l["line_no"])
	}
	require.InDelta(t, 121, c["subtotal_amount"], 1e-9)
	ids := c[cart.AppliedIDsField].([]any)
	require.Equal(t, []any{"cache-c1", "a0", "a1", "bad", "a2"}, ids, "the handled ids, once each, in order, the refused one too")
	require.Equal(t, map[string]any{"bad": command.CodeUnknownTaxCode}, c[cart.RejectedIDsField], "the refused one with its code")
}

// A batch that ends with its cart deleted leaves the tombstone naming the
// delete, and remembers every id of the batch; a cache after a delete in
// the same batch makes a new cart.
func TestApplyBatchDeletes(t *testing.T) {
	e := newEnv(t, cartcache.Config{})
	ctx := context.Background()
	e.apply(t, cacheCmd("c1", ""))
	del := command.Command{ID: "d1", Type: command.TypeDelete, CartID: "c1"}
	out, err := applyBatch(ctx, e.svc, "c1", []command.Command{
		addCmd("a1", "c1", item("B", 1, "10", "01")),
		del,
		addCmd("a2", "c1", item("B", 1, "10", "01")),
	})
	require.NoError(t, err)
	require.NoError(t, out[1].Err)
	require.ErrorIs(t, out[2].Err, cart.ErrCartNotFound, "the cart is gone by then")
	_, ok := e.fake.Get("c1")
	require.False(t, ok)
	raw, ok := e.fake.Get(cartcache.TombstoneKey("c1"))
	require.True(t, ok)
	var ts cart.Tombstone
	require.NoError(t, json.Unmarshal(raw, &ts))
	require.Equal(t, "d1", ts.DeletedBy)
	require.Equal(t, []string{"cache-c1", "a1", "d1", "a2"}, ts.Applied)
	require.Equal(t, map[string]string{"a2": command.CodeCartNotFound}, ts.Rejected, "a2 was refused after the delete")

	recache := cacheCmd("c1", "")
	recache.ID = "cache-2"
	out, err = applyBatch(ctx, e.svc, "c1", []command.Command{del, recache, addCmd("a3", "c1", item("E", 1, "1", "00"))})
	require.NoError(t, err)
	require.True(t, out[0].Duplicate, "the tombstone remembers d1")
	require.NoError(t, out[1].Err)
	require.NoError(t, out[2].Err)
	require.Len(t, e.cart(t, "c1")["line_items"], 1)
}
