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
	// KeepAppliedIDs is how many handled (applied or refused) command ids
	// a cart remembers for de-duplication, the refused ones with their
	// codes. Default and minimum: MinKeepAppliedIDs.
	KeepAppliedIDs int
	// TombstoneTTL is how long a missing cart's tombstone lives, so that
	// commands redelivered after a delete, or replayed after a refusal
	// while the cart was missing, are still recognised. Default:
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
	// Duplicate is true when the command had been handled before and the
	// update changed nothing: applied, or refused, and then the error is a
	// *PriorRejection.
	Duplicate bool
}

// Change computes a cart's next state from its current one, cur, which is
// nil when no cart is stored. It returns the cart to store, which may be cur
// itself, changed, or nil to delete the cart. An error leaves the stored
// cart as it is and is returned by Update; a rejection of the cart rules
// (cart.RejectionCode) is recorded in the cart's history all the same. A
// Change may be called more than once, each time with a freshly read cart,
// and must not keep cur.
type Change func(cur *cart.Document) (*cart.Document, error)

// TombstoneKey is the key of a missing cart's tombstone: the history of a
// deleted cart, or of one that refused a command before it was created.
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
// command the cart (or its tombstone) lists as handled is a Duplicate and
// change is not called; if the cart refused it then, the error is a
// *PriorRejection with the code it was refused with. Otherwise the next
// cart is saved with cmdID added to its handled ids, guarded by the ETag
// read, and re-read and re-applied after a conflicting write, at most
// MaxConflictRetries times (then ErrConflict). Deleting writes the
// tombstone first, then deletes the cart guarded by its ETag.
//
// change's errors are returned as they are. A rejection of the cart rules
// (cart.RejectionCode) is recorded: the cart, or the tombstone of a
// missing cart, is saved with cmdID among its handled ids and its code, so
// that a replay is refused the same way. Any other error of change writes
// nothing. Every other error (a store failure, ErrConflict) is transient:
// the same Update may be tried again, and the handled ids make that safe.
//
// Update is an unfenced writer (the zero Epoch): it keeps the Epoch the
// cart stores.
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
	// Err is the step's refusal: the step left the cart as the steps
	// before it made it. It is the change's error, or, for a Duplicate of
	// a command the cart refused before, a *PriorRejection.
	Err error
}

// UpdateBatch is UpdateBatchAt for an unfenced writer, the zero Epoch: it
// is never fenced and keeps the Epoch the cart stores.
func (c *Carts) UpdateBatch(ctx context.Context, cartID string, steps []Step) ([]Outcome, error) {
	return c.UpdateBatchAt(ctx, cartID, Epoch{}, steps)
}

// UpdateBatchAt is Update for several commands of one cart, in order, in
// one read-modify-write by the owner of the cart's partition at epoch: one
// read, each step applied in memory to what the steps before it made, one
// guarded save (or delete) that records every handled step's id. Each step
// keeps its own outcome: a duplicate, a refusal (Outcome.Err) or applied.
// A refused step changes nothing in the cart, so the steps around it apply
// as if it had never come; a rejection (cart.RejectionCode) is recorded
// all the same, so a batch whose only effect is a rejection writes. A
// change that refuses must leave its cart as it found it, as
// cart.AddItems does.
//
// The write is fenced: if the cart, or the tombstone of a missing cart,
// was written at an Epoch after epoch, no step runs, nothing is written and
// the error is ErrFenced. Otherwise the write stores epoch, or, when epoch
// is zero, keeps the stored Epoch.
//
// The returned error is the batch's: ErrFenced, a store failure or
// ErrConflict, after which nothing was applied and, but for ErrFenced, the
// whole batch may be tried again. After a conflicting write the batch is
// re-read, fenced again, and every change called again.
func (c *Carts) UpdateBatchAt(ctx context.Context, cartID string, epoch Epoch, steps []Step) ([]Outcome, error) {
	// No pause between attempts: the worker runs one batch per cart at a
	// time, so a conflict means an outside writer, and the sooner the
	// re-read the likelier it sees that writer's last word.
	for range c.cfg.MaxConflictRetries + 1 {
		out, err := c.updateBatch(ctx, cartID, epoch, steps)
		if !errors.Is(err, statepool.ErrETagMismatch) {
			return out, err
		}
	}
	return nil, fmt.Errorf("cart %s: %w", cartID, ErrConflict)
}

func (c *Carts) updateBatch(ctx context.Context, cartID string, epoch Epoch, steps []Step) ([]Outcome, error) {
	st, err := c.read(ctx, cartID)
	if err != nil {
		return nil, err
	}
	p, err := c.plan(cartID, st, epoch, steps)
	if err != nil {
		return nil, err
	}
	return p.out, c.write(ctx, p)
}

// stored is what one read found of a cart: the cart and its ETag or, when
// it is missing, its tombstone, and either way the history and Epoch a
// plan starts from.
type stored struct {
	// cur is the cart, nil when none is stored; etag is its ETag.
	cur  *cart.Document
	etag string
	// history is the handled ids, oldest first; rejected the refused ones'
	// codes, nil when none.
	history  []string
	rejected map[string]string
	epoch    Epoch
	// tomb is a missing cart's tombstone, nil when there is none or it
	// cannot be read; tombETag, when one was read, guards its rewrite.
	tomb     *cart.Tombstone
	tombETag string
}

// plan is what one read-modify-write of a cart computed: each step's
// outcome and the write that records them.
type plan struct {
	cartID string
	out    []Outcome
	write  writeKind
	// key, doc and opts are the document to save: writeSave's cart or
	// tombstone, writeDelete's tombstone.
	key  string
	doc  []byte
	opts statepool.SaveOptions
	// etag guards writeDelete's delete of the cart.
	etag string
}

// writeKind is the write a plan needs.
type writeKind int

const (
	writeNone writeKind = iota
	// writeSave saves one document: the cart, or the tombstone of a cart
	// still missing after the batch, to record what it refused.
	writeSave
	// writeDelete saves the tombstone, then deletes the cart.
	writeDelete
)

// plan fences the write at epoch and applies steps in memory to what st
// read. It does no I/O.
func (c *Carts) plan(cartID string, st stored, epoch Epoch, steps []Step) (plan, error) {
	epoch, err := fence(cartID, st.epoch, epoch)
	if err != nil {
		return plan{}, err
	}
	cur, existed := st.cur, st.cur != nil
	p := plan{cartID: cartID, out: make([]Outcome, len(steps))}
	// history is this batch's own copy: the ids handled so far, the
	// batch's included, trimmed to KeepAppliedIDs only when saved.
	// rejected is the read document's own map, changed only here.
	history := append(make([]string, 0, len(st.history)+len(steps)), st.history...)
	rejected := st.rejected
	changed, recorded := false, false
	deletedBy := ""
	for i, s := range steps {
		if containsID(history, s.CmdID) {
			p.out[i].Duplicate = true
			if code, ok := rejected[s.CmdID]; ok {
				p.out[i].Err = &PriorRejection{Code: code}
			}
			continue
		}
		next, err := s.Change(cur)
		if err != nil {
			p.out[i].Err = err
			if code, ok := cart.RejectionCode(err); ok {
				history = append(history, s.CmdID)
				rejected = withCode(rejected, s.CmdID, code)
				recorded = true
			}
			continue
		}
		if next != nil && next != cur {
			history, rejected = mergeHistory(history, rejected, next)
		}
		history = append(history, s.CmdID)
		if next == nil {
			deletedBy = s.CmdID
		}
		cur, changed = next, true
	}
	if !changed && !recorded {
		return p, nil
	}
	history, rejected = trimHistory(history, rejected, c.cfg.KeepAppliedIDs)
	now := c.cfg.Now()
	switch {
	case cur != nil:
		cur.SetApplied(history)
		cur.SetRejected(rejected)
		cur.SetEpoch(cart.Epoch(epoch))
		b, err := cur.Encode(now)
		if err != nil {
			return plan{}, err
		}
		// A cart that was missing is saved unguarded (st.etag is empty):
		// Dapr has no insert-if-absent, so two owners creating the same
		// cart at once race as last writer wins, fence or not.
		p.write, p.key, p.doc, p.opts = writeSave, cartID, b, statepool.SaveOptions{ETag: st.etag}
	case existed:
		// The tombstone's save is unguarded: its ETag was not read, the
		// cart's was. The cart's guarded delete after it is what a stale
		// owner loses, and its re-read then fences it; but the tombstone
		// it wrote first stays, as after any failed delete.
		ts := cart.Delete(cartID, deletedBy, history, now)
		ts.Rejected, ts.Epoch = rejected, cart.Epoch(epoch)
		b, err := encodeTombstone(ts)
		if err != nil {
			return plan{}, err
		}
		p.write, p.key, p.doc, p.etag = writeDelete, TombstoneKey(cartID), b, st.etag
		p.opts = statepool.SaveOptions{TTL: c.cfg.TombstoneTTL}
	case recorded:
		// The cart is missing before and after, and refused a command
		// (an add-item before its cache): its tombstone keeps the history,
		// and a later cache starts the cart from it. What an older
		// tombstone says of a delete stays.
		ts := cart.Tombstone{CartID: cartID}
		if st.tomb != nil {
			ts = *st.tomb
		}
		if deletedBy != "" {
			ts.DeletedBy, ts.DeletedAt = deletedBy, now.UTC().Format(time.RFC3339Nano)
		}
		ts.Applied, ts.Rejected, ts.Epoch = history, rejected, cart.Epoch(epoch)
		b, err := encodeTombstone(ts)
		if err != nil {
			return plan{}, err
		}
		p.write, p.key, p.doc = writeSave, TombstoneKey(cartID), b
		p.opts = statepool.SaveOptions{ETag: st.tombETag, TTL: c.cfg.TombstoneTTL}
	default:
		// Deleting a cart that is not there: nothing to write.
	}
	return p, nil
}

// mergeHistory adds the ids a new document (a cache) carries of its own,
// with the codes of those it refused, after the stored history: that comes
// first because redeliveries are checked against it.
func mergeHistory(history []string, rejected map[string]string, next *cart.Document) ([]string, map[string]string) {
	known := len(history)
	history = mergeIDs(history, next.Applied())
	if codes := next.Rejected(); len(codes) > 0 {
		for _, id := range history[known:] {
			if code, ok := codes[id]; ok {
				rejected = withCode(rejected, id, code)
			}
		}
	}
	return history, rejected
}

func encodeTombstone(ts cart.Tombstone) ([]byte, error) {
	b, err := json.Marshal(ts)
	if err != nil {
		return nil, fmt.Errorf("encode tombstone: %w", err)
	}
	return b, nil
}

// write makes p's write on its own.
func (c *Carts) write(ctx context.Context, p plan) error {
	switch p.write {
	case writeSave:
		return c.store.Save(ctx, p.key, p.doc, p.opts)
	case writeDelete:
		// The tombstone goes first: if the delete then fails, the cart is
		// still there and the retry writes the tombstone again. Dapr's
		// transactions are not atomic on ETag conflicts, so they would
		// not help here.
		if err := c.store.Save(ctx, p.key, p.doc, p.opts); err != nil {
			return err
		}
		return c.store.Delete(ctx, p.cartID, p.etag)
	}
	return nil
}

// read returns what is stored of a cart: the cart, or, when it is missing,
// its tombstone.
func (c *Carts) read(ctx context.Context, cartID string) (stored, error) {
	e, err := c.store.Get(ctx, cartID)
	if errors.Is(err, statepool.ErrNotFound) {
		return c.readTombstone(ctx, cartID)
	}
	if err != nil {
		return stored{}, err
	}
	return parseEntry(e)
}

// parseEntry parses a stored cart.
func parseEntry(e statepool.Entry) (stored, error) {
	cur, err := cart.Parse(e.Value)
	if err != nil {
		return stored{}, err
	}
	return stored{cur: cur, etag: e.ETag, history: cur.Applied(), rejected: cur.Rejected(), epoch: Epoch(cur.Epoch())}, nil
}

// readTombstone returns what the tombstone of a missing cart keeps;
// nothing when there is none.
func (c *Carts) readTombstone(ctx context.Context, cartID string) (stored, error) {
	e, err := c.store.Get(ctx, TombstoneKey(cartID))
	if errors.Is(err, statepool.ErrNotFound) {
		return stored{}, nil
	}
	if err != nil {
		return stored{}, err
	}
	return parseTombstone(e), nil
}

// parseTombstone returns what a stored tombstone keeps.
func parseTombstone(e statepool.Entry) stored {
	st := stored{tombETag: e.ETag}
	var t cart.Tombstone
	if err := json.Unmarshal(e.Value, &t); err != nil {
		// A damaged tombstone only weakens de-duplication (and the fence)
		// of a missing cart; it must not block the cart. Its ETag still
		// guards its rewrite.
		return st
	}
	st.tomb, st.history, st.rejected, st.epoch = &t, t.Applied, t.Rejected, Epoch(t.Epoch)
	return st
}
