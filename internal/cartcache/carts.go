package cartcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/setting"
	"github.com/cartworker/cartworker/internal/statepool"
)

// Defaults of Config.
const (
	// MinKeepAppliedIDs is the default and the least of KeepAppliedIDs.
	MinKeepAppliedIDs = 1000
	// DefaultTombstoneTTL is the default of TombstoneTTL.
	DefaultTombstoneTTL = time.Hour
	// DefaultMaxConflictRetries is the default of MaxConflictRetries.
	DefaultMaxConflictRetries = 16
)

// ErrConflict is returned when the cart kept changing under Update for
// every allowed re-read. It is transient.
var ErrConflict = errors.New("cart kept changing: too many ETag conflicts")

// Config tunes Carts. The zero value is usable: every zero field takes the
// default documented on it.
type Config struct {
	// TaxTable maps tax codes to rules. Default: cart.DefaultTaxTable().
	TaxTable cart.TaxTable
	// KeepAppliedIDs is how many applied command ids a cart remembers for
	// de-duplication. Default and minimum: MinKeepAppliedIDs.
	KeepAppliedIDs int
	// TombstoneTTL is how long a deleted cart's tombstone lives, so that
	// commands redelivered after the delete are still recognised. Default:
	// DefaultTombstoneTTL.
	TombstoneTTL time.Duration
	// MaxConflictRetries bounds the re-reads after an ETag conflict.
	// Default: DefaultMaxConflictRetries.
	MaxConflictRetries int
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

// Validate reports the fields that cannot work, each as a *setting.Error
// naming it. Zero values take the defaults.
func (c Config) Validate() error {
	if c.TombstoneTTL < 0 || (c.TombstoneTTL > 0 && c.TombstoneTTL < time.Second) {
		return setting.Errorf("TombstoneTTL", "%s: Dapr's TTL is in whole seconds, want at least 1s", c.TombstoneTTL)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.TaxTable == nil {
		c.TaxTable = cart.DefaultTaxTable()
	}
	c.KeepAppliedIDs = max(c.KeepAppliedIDs, MinKeepAppliedIDs)
	if c.TombstoneTTL <= 0 {
		c.TombstoneTTL = DefaultTombstoneTTL
	}
	if c.MaxConflictRetries <= 0 {
		c.MaxConflictRetries = DefaultMaxConflictRetries
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Carts are the carts in a Store. It is safe for concurrent use: concurrent
// updates of one cart are serialised by the ETag.
type Carts struct {
	store Store
	cfg   Config
}

// New returns the carts kept in store.
func New(store Store, cfg Config) *Carts {
	return &Carts{store: store, cfg: cfg.withDefaults()}
}

// Result is what an update did.
type Result struct {
	// Duplicate is true when the command had been applied before and the
	// update changed nothing.
	Duplicate bool
}

// Change computes a cart's next state from its current one, cur, which is
// nil when no cart is stored. It returns the cart to store, which may be cur
// itself, changed, or nil to delete the cart. An error leaves the stored
// cart as it is and is returned by Update. A Change may be called more than
// once, each time with a freshly read cart, and must not keep cur.
type Change func(cur *cart.Document) (*cart.Document, error)

// TombstoneKey is the key of a deleted cart's tombstone.
func TombstoneKey(cartID string) string { return cartID + ":tombstone" }

// Apply applies a validated command: Update with the cart rules of
// cart.Apply. Its errors are Update's.
func (c *Carts) Apply(ctx context.Context, cmd command.Command) (Result, error) {
	return c.Update(ctx, cmd.CartID, cmd.ID, c.change(cmd))
}

// ApplyBatch applies several validated commands of one cart in order in one
// read-modify-write: UpdateBatch with the cart rules of cart.Apply.
func (c *Carts) ApplyBatch(ctx context.Context, cartID string, cmds []command.Command) ([]Outcome, error) {
	steps := make([]Step, len(cmds))
	for i, cmd := range cmds {
		steps[i] = Step{CmdID: cmd.ID, Change: c.change(cmd)}
	}
	return c.UpdateBatch(ctx, cartID, steps)
}

func (c *Carts) change(cmd command.Command) Change {
	return func(cur *cart.Document) (*cart.Document, error) {
		return cart.Apply(cur, cmd, c.cfg.TaxTable, c.cfg.Now())
	}
}

// Update applies change, on behalf of command cmdID, to cart cartID. A
// command the cart (or its tombstone) lists as applied is a Duplicate and
// change is not called. Otherwise the next cart is saved with cmdID added to
// its applied ids, guarded by the ETag read, and re-read and re-applied
// after a conflicting write, at most MaxConflictRetries times (then
// ErrConflict). Deleting writes the tombstone first, then deletes the cart
// guarded by its ETag.
//
// change's errors are returned as they are, before anything is written.
// Every other error (a store failure, ErrConflict) is transient: the same
// Update may be tried again, and the applied ids make that safe.
func (c *Carts) Update(ctx context.Context, cartID, cmdID string, change Change) (Result, error) {
	out, err := c.UpdateBatch(ctx, cartID, []Step{{CmdID: cmdID, Change: change}})
	if err != nil {
		return Result{}, err
	}
	return out[0].Result, out[0].Err
}

// Step is one command's change in UpdateBatch.
type Step struct {
	CmdID  string
	Change Change
}

// Outcome is what UpdateBatch made of one step.
type Outcome struct {
	Result
	// Err is the step's change's error: the step was refused and left the
	// cart as the steps before it made it.
	Err error
}

// UpdateBatch is Update for several commands of one cart, in order, in one
// read-modify-write: one read, each step applied in memory to what the
// steps before it made, one guarded save (or delete) that records every
// applied step's id. Each step keeps its own outcome: a duplicate, a
// refusal (Outcome.Err) or applied. A refused step changes nothing, so the
// steps around it apply as if it had never come. A change that refuses
// must leave its cart as it found it, as cart.AddItems does.
//
// The returned error is the batch's: a store failure or ErrConflict, after
// which nothing was applied and the whole batch may be tried again. After a
// conflicting write the batch is re-read and every change called again.
func (c *Carts) UpdateBatch(ctx context.Context, cartID string, steps []Step) ([]Outcome, error) {
	// No pause between attempts: the worker runs one batch per cart at a
	// time, so a conflict means an outside writer, and the sooner the
	// re-read the likelier it sees that writer's last word.
	for range c.cfg.MaxConflictRetries + 1 {
		out, err := c.updateBatch(ctx, cartID, steps)
		if !errors.Is(err, statepool.ErrETagMismatch) {
			return out, err
		}
	}
	return nil, fmt.Errorf("cart %s: %w", cartID, ErrConflict)
}

func (c *Carts) updateBatch(ctx context.Context, cartID string, steps []Step) ([]Outcome, error) {
	cur, etag, stored, err := c.read(ctx, cartID)
	if err != nil {
		return nil, err
	}
	p, err := c.plan(cartID, cur, etag, stored, steps)
	if err != nil {
		return nil, err
	}
	return p.out, c.write(ctx, p)
}

// plan is what one read-modify-write of a cart computed: each step's
// outcome and the write that records them.
type plan struct {
	cartID string
	out    []Outcome
	write  writeKind
	// doc is the encoded cart for writeSave.
	doc []byte
	// etag guards the write: the ETag the cart was read at.
	etag string
	// deletedBy and history are writeDelete's: the deleting command and
	// the ids the tombstone keeps.
	deletedBy string
	history   []string
}

// writeKind is the write a plan needs.
type writeKind int

const (
	writeNone writeKind = iota
	writeSave
	writeDelete
)

// plan applies steps in memory to cur, the cart read at etag (nil when none
// is stored), whose applied ids are stored. It does no I/O.
func (c *Carts) plan(cartID string, cur *cart.Document, etag string, stored []string, steps []Step) (plan, error) {
	existed := cur != nil
	p := plan{cartID: cartID, etag: etag, out: make([]Outcome, len(steps))}
	// history is this batch's own copy: the ids applied so far, the
	// batch's included, trimmed to KeepAppliedIDs only when saved.
	history := append(make([]string, 0, len(stored)+len(steps)), stored...)
	changed := false
	for i, st := range steps {
		if containsID(history, st.CmdID) {
			p.out[i].Duplicate = true
			continue
		}
		next, err := st.Change(cur)
		if err != nil {
			p.out[i].Err = err
			continue
		}
		if next != nil && next != cur {
			// A new document (a cache) may carry ids of its own; the
			// stored history comes first because redeliveries are
			// checked against it.
			history = mergeIDs(history, next.Applied())
		}
		history = append(history, st.CmdID)
		if next == nil {
			p.deletedBy = st.CmdID
		}
		cur, changed = next, true
	}
	if !changed {
		return p, nil
	}
	history = keepNewest(history, c.cfg.KeepAppliedIDs)
	switch {
	case cur == nil && !existed:
		// Deleting a cart that is not there: nothing to write.
		return p, nil
	case cur == nil:
		p.write, p.history = writeDelete, history
		return p, nil
	}
	cur.SetApplied(history)
	b, err := cur.Encode(c.cfg.Now())
	if err != nil {
		return plan{}, err
	}
	p.write, p.doc = writeSave, b
	return p, nil
}

// write makes p's write on its own.
func (c *Carts) write(ctx context.Context, p plan) error {
	switch p.write {
	case writeSave:
		return c.store.Save(ctx, p.cartID, p.doc, statepool.SaveOptions{ETag: p.etag})
	case writeDelete:
		return c.delete(ctx, p.cartID, p.deletedBy, p.etag, p.history)
	}
	return nil
}

// read returns the stored cart and its ETag, or a nil cart when none is
// stored, and the ids of the commands applied to it: the cart's own, or,
// when it is missing, its tombstone's.
func (c *Carts) read(ctx context.Context, cartID string) (cur *cart.Document, etag string, history []string, err error) {
	e, err := c.store.Get(ctx, cartID)
	if errors.Is(err, statepool.ErrNotFound) {
		history, err = c.deletedIDs(ctx, cartID)
		return nil, "", history, err
	}
	if err != nil {
		return nil, "", nil, err
	}
	return parseEntry(e)
}

// parseEntry parses a stored cart, returning it with its ETag and applied
// ids.
func parseEntry(e statepool.Entry) (cur *cart.Document, etag string, history []string, err error) {
	if cur, err = cart.Parse(e.Value); err != nil {
		return nil, "", nil, err
	}
	return cur, e.ETag, cur.Applied(), nil
}

// deletedIDs returns the applied ids of a deleted cart, from its tombstone.
func (c *Carts) deletedIDs(ctx context.Context, cartID string) ([]string, error) {
	e, err := c.store.Get(ctx, TombstoneKey(cartID))
	if errors.Is(err, statepool.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return tombstoneIDs(e.Value), nil
}

// tombstoneIDs returns the applied ids a stored tombstone keeps.
func tombstoneIDs(b []byte) []string {
	var t cart.Tombstone
	if err := json.Unmarshal(b, &t); err != nil {
		// A damaged tombstone only weakens de-duplication after a delete;
		// it must not block the cart.
		return nil
	}
	return t.Applied
}

// delete writes the tombstone, then deletes the cart guarded by etag. The
// tombstone goes first: if the delete then fails, the cart is still there
// and the retry writes the tombstone again. Dapr's transactions are not
// atomic on ETag conflicts, so they would not help here.
func (c *Carts) delete(ctx context.Context, cartID, cmdID, etag string, applied []string) error {
	b, err := json.Marshal(cart.Delete(cartID, cmdID, applied, c.cfg.Now()))
	if err != nil {
		return fmt.Errorf("encode tombstone: %w", err)
	}
	if err := c.store.Save(ctx, TombstoneKey(cartID), b, statepool.SaveOptions{TTL: c.cfg.TombstoneTTL}); err != nil {
		return err
	}
	return c.store.Delete(ctx, cartID, etag)
}
