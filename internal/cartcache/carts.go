package cartcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/budget"
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
	// DefaultMaxConflictRereads is the default of MaxConflictRereads.
	DefaultMaxConflictRereads = 16
	// DefaultMaxCartBytes is the default of MaxCartBytes: 2 MiB, half of
	// daprd's default max-body-size (4 MiB), which bounds a save over
	// HTTP and gRPC alike. The other half is room for what a save sends
	// besides the document (its key, ETag and options: a few hundred
	// bytes either way), for the handled ids a refusal still records on a
	// cart at the limit, and for a daprd run with a lower limit than its
	// default; a cart of 2 MiB, some 5,500 lines of 380 bytes, is far
	// past any till's.
	DefaultMaxCartBytes = 2 << 20
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
	// MaxConflictRereads bounds the re-reads after an ETag conflict: the
	// compare-and-swap's loop, concurrency control rather than a retry of
	// a failure (the consumer's retry policy is internal/consumer/retry.go).
	// Default: DefaultMaxConflictRereads.
	MaxConflictRereads int
	// MaxCartBytes bounds a cart's stored document, as encoded for the
	// save: a command that would make the cart larger than it, and larger
	// than it was, is refused with a *cart.TooLargeError
	// (cart.ErrCartTooLarge), recorded like the cart rules' rejections,
	// and the cart is left as it was. It keeps a cart well under what
	// daprd takes, so that a command that would take it past that is
	// refused at once, with a code that says why, where daprd's own
	// refusal would come only after the save. A delete always applies.
	// Default: DefaultMaxCartBytes.
	MaxCartBytes int
	// Held bounds the bytes of the documents the updates hold at once:
	// each read-modify-write takes HeldPerByte bytes of it per byte it
	// read before it parses them, and gives them back once it has written,
	// waiting while they would take it past its total. The worker gives it
	// three quarters of WORKER_MAX_HELD_BYTES. Default (nil): unbounded.
	Held *budget.Bytes
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

// Validate reports the fields that cannot work, each as a *setting.Error
// naming it. Zero values take the defaults.
func (c Config) Validate() error {
	var errs []error
	if c.TombstoneTTL < 0 || (c.TombstoneTTL > 0 && c.TombstoneTTL < time.Second) {
		errs = append(errs, setting.Errorf("TombstoneTTL", "%s: Dapr's TTL is in whole seconds, want at least 1s", c.TombstoneTTL))
	}
	if c.MaxCartBytes < 0 {
		errs = append(errs, setting.Errorf("MaxCartBytes", "%d: want a size in bytes, such as %d", c.MaxCartBytes, DefaultMaxCartBytes))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.TaxTable == nil {
		c.TaxTable = cart.DefaultTaxTable()
	}
	c.KeepAppliedIDs = max(c.KeepAppliedIDs, MinKeepAppliedIDs)
	if c.TombstoneTTL <= 0 {
		c.TombstoneTTL = DefaultTombstoneTTL
	}
	if c.MaxConflictRereads <= 0 {
		c.MaxConflictRereads = DefaultMaxConflictRereads
	}
	if c.MaxCartBytes <= 0 {
		c.MaxCartBytes = DefaultMaxCartBytes
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
// cart.Apply. Its errors are Update's. It is the API of a caller that
// applies one command at a time (the Watermill peer); the worker applies
// batches with ApplyCarts.
func (c *Carts) Apply(ctx context.Context, cmd command.Command) (Result, error) {
	return c.Update(ctx, cmd.CartID, cmd.ID, c.change(cmd))
}

// ApplyCarts applies several carts' validated commands with the cart rules
// of cart.Apply: what the worker calls. One cart goes through UpdateBatchAt,
// several through UpdateCarts, in two bulk calls for the lot.
func (c *Carts) ApplyCarts(ctx context.Context, batches []CartBatch) []CartResult {
	if len(batches) == 1 {
		b := batches[0]
		out, err := c.UpdateBatchAt(ctx, b.CartID, b.Epoch, c.steps(b.Cmds))
		return []CartResult{{Outcomes: out, Err: err}}
	}
	carts := make([]CartSteps, len(batches))
	for i, b := range batches {
		carts[i] = CartSteps{CartID: b.CartID, Epoch: b.Epoch, Steps: c.steps(b.Cmds)}
	}
	return c.UpdateCarts(ctx, carts)
}

// steps binds each command to the cart rules: a Step whose Change is
// cart.Apply of that command.
func (c *Carts) steps(cmds []command.Command) []Step {
	steps := make([]Step, len(cmds))
	for j, cmd := range cmds {
		steps[j] = Step{CmdID: cmd.ID, Change: c.change(cmd)}
	}
	return steps
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
// MaxConflictRereads times (then ErrConflict). Deleting writes the
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
// cart.AddItems does. A step whose cart would be over MaxCartBytes, and
// larger than before it, is refused too, with a *cart.TooLargeError, a
// rejection: the batch ends as its steps one by one would, whatever
// batch they come in.
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
	// The ETag's compare-and-swap loop. No pause between attempts: the
	// worker runs one batch per cart at a time, so a conflict means an
	// outside writer, and the sooner the re-read the likelier it sees that
	// writer's last word.
	for range c.cfg.MaxConflictRereads + 1 {
		// Read the cart, or, when it is missing, its tombstone.
		e, err := c.store.Get(ctx, cartID)
		var st stored
		switch {
		case errors.Is(err, statepool.ErrNotFound):
			st, err = c.readTombstone(ctx, cartID)
		case err == nil:
			st, err = parseEntry(e)
		}
		if err != nil {
			return nil, err
		}
		held := heldFor(len(st.raw.Value))
		if err := c.cfg.Held.Take(ctx, held); err != nil {
			return nil, fmt.Errorf("cart %s: wait for memory to apply it: %w", cartID, err)
		}
		p, err := c.plan(cartID, st, epoch, steps)
		if err == nil {
			err = c.write(ctx, p)
		}
		c.cfg.Held.Give(held)
		if !errors.Is(err, statepool.ErrETagMismatch) {
			return p.out, err
		}
	}
	return nil, fmt.Errorf("cart %s: %w", cartID, ErrConflict)
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
	// raw is what was read, the cart or the tombstone (then tombstone
	// is true); zero when neither is stored.
	raw       statepool.Entry
	tombstone bool
}

// reread parses again what st was read from, for a second plan: applying
// steps changes the cart st parsed, and its map of codes, in place.
func (st stored) reread() (stored, error) {
	switch {
	case st.tombstone:
		return parseTombstone(st.raw), nil
	case st.cur != nil:
		return parseEntry(st.raw)
	}
	return stored{}, nil
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
//
// The size limit is checked on the document plan encodes for the save, once
// for the batch: measuring after every step would cost the common case an
// encoding of the cart's handled ids per command. Only when that document,
// or a cart a later step of the batch replaced or deleted, is over
// MaxCartBytes are the steps applied again, from a fresh parse of what st read, each one's cart
// measured (sized), so that exactly the steps that would take the cart over
// the limit are refused, as if each had come on its own.
func (c *Carts) plan(cartID string, st stored, epoch Epoch, steps []Step) (plan, error) {
	epoch, err := fence(cartID, st.epoch, epoch)
	if err != nil {
		return plan{}, err
	}
	now := c.cfg.Now()
	r, err := c.apply(st, epoch, now, steps, false)
	if err != nil {
		return plan{}, err
	}
	p, err := c.build(cartID, st, epoch, now, r)
	if err != nil || !(r.overLimit || (r.changed && p.write == writeSave && p.key == cartID && len(p.doc) > c.cfg.MaxCartBytes)) {
		return p, err
	}
	// The steps changed the cart st read, and its map of codes, in place.
	if st, err = st.reread(); err != nil {
		return plan{}, err
	}
	if r, err = c.apply(st, epoch, now, steps, true); err != nil {
		return plan{}, err
	}
	return c.build(cartID, st, epoch, now, r)
}

// applied is what applying a batch's steps in memory made of a cart.
type applied struct {
	out []Outcome
	// cur is the cart after the steps, nil when there is none.
	cur *cart.Document
	// history is this batch's own copy: the ids handled so far, the
	// batch's included, trimmed to KeepAppliedIDs only when saved.
	// rejected is the read document's own map, changed in place.
	history  []string
	rejected map[string]string
	// changed: a step applied; recorded: a step's rejection is recorded.
	changed, recorded bool
	// deletedBy is the last step that deleted the cart.
	deletedBy string
	// overLimit: an unsized apply replaced or deleted a cart one of its
	// steps had made, and that cart was over MaxCartBytes, so a step
	// before may have had to be refused.
	overLimit bool
}

// apply applies steps in memory to what st read. sized measures the cart
// after each step that leaves one, and refuses a step with a
// *cart.TooLargeError when its cart would be over MaxCartBytes and larger
// than the cart before it: a delete, or a cache that does not grow the
// cart, still applies to a cart over the limit, one written before the
// limit or under a higher one. Larger counts the step's own id in the
// handled ids, which every step adds, applied or refused.
func (c *Carts) apply(st stored, epoch Epoch, now time.Time, steps []Step, sized bool) (applied, error) {
	r := applied{
		out:      make([]Outcome, len(steps)),
		cur:      st.cur,
		history:  append(make([]string, 0, len(st.history)+len(steps)), st.history...),
		rejected: st.rejected,
	}
	// made: cur is a cart a step of this batch made (changed in place or
	// replaced), not the one st read.
	made := false
	// before is the size of cur encoded as it stands, for sized: 0 for no
	// cart, and stale once a step changes cur or the handled ids.
	before := 0
	fresh := false
	for i, s := range steps {
		if r.duplicate(i, s.CmdID) {
			continue
		}
		if sized && !fresh {
			var err error
			if before, err = c.size(r.cur, r.history, r.rejected, epoch, now); err != nil {
				return applied{}, err
			}
			fresh = true
		}
		// A step refused for the size it would take the cart to is
		// undone: a cart changed in place goes back to this checkpoint.
		undo := func() {}
		if sized && r.cur != nil {
			undo = r.cur.Checkpoint()
		}
		next, err := s.Change(r.cur)
		if err != nil {
			r.out[i].Err = err
			if code, ok := cart.RejectionCode(err); ok {
				r.record(s.CmdID, code)
				fresh = false
			}
			continue
		}
		if !sized && made && next != r.cur && !r.overLimit {
			// The cart a step of this batch made is replaced or deleted,
			// so the check on what the batch saves would not see it.
			if err := c.noteOverLimit(&r, epoch, now); err != nil {
				return applied{}, err
			}
		}
		history, rejected := r.history, r.rejected
		if next != nil && next != r.cur {
			if sized {
				// A refusal below must leave the codes as they were.
				rejected = maps.Clone(rejected)
			}
			history, rejected = mergeHistory(history, rejected, next)
		}
		history = append(history, s.CmdID)
		if sized {
			after, err := c.size(next, history, rejected, epoch, now)
			if err != nil {
				return applied{}, err
			}
			if r.refuseTooLarge(i, s.CmdID, after, before, c.cfg.MaxCartBytes) {
				fresh = false
				if next == r.cur {
					undo() // the step changed the cart in place
				}
				continue
			}
			before = after
		}
		r.history, r.rejected = history, rejected
		if next == nil {
			r.deletedBy = s.CmdID
		}
		made = made || next != nil
		r.cur, r.changed = next, true
	}
	return r, nil
}

// noteOverLimit sets r.overLimit when r's cart, as it stands, is over
// MaxCartBytes.
func (c *Carts) noteOverLimit(r *applied, epoch Epoch, now time.Time) error {
	n, err := c.size(r.cur, r.history, r.rejected, epoch, now)
	if err != nil {
		return err
	}
	r.overLimit = n > c.cfg.MaxCartBytes
	return nil
}

// duplicate reports whether step i, command id, was handled before, and
// then gives it the outcome of a duplicate: applied, or refused again with
// the code it was refused with.
func (r *applied) duplicate(i int, id string) bool {
	if !containsID(r.history, id) {
		return false
	}
	r.out[i].Duplicate = true
	if code, ok := r.rejected[id]; ok {
		r.out[i].Err = &PriorRejection{Code: code}
	}
	return true
}

// refuseTooLarge refuses step i, command id, and records the refusal, when
// the cart it leaves would be over limit bytes and larger than before it;
// it reports whether it did.
func (r *applied) refuseTooLarge(i int, id string, after, before, limit int) bool {
	if after <= limit || after <= before {
		return false
	}
	r.out[i].Err = &cart.TooLargeError{Size: after, Limit: limit}
	r.record(id, command.CodeCartTooLarge)
	return true
}

// record records the rejection of command id with code.
func (r *applied) record(id, code string) {
	r.history = append(r.history, id)
	r.rejected = withCode(r.rejected, id, code)
	r.recorded = true
}

// size returns the length of cur as a save would store it with history
// and rejected as they stand, 0 for no cart: what the size limit is
// checked on. It changes cur's handled ids and epoch, which the save sets
// again, and neither history nor rejected.
func (c *Carts) size(cur *cart.Document, history []string, rejected map[string]string, epoch Epoch, now time.Time) (int, error) {
	if cur == nil {
		return 0, nil
	}
	if len(rejected) > 0 {
		rejected = maps.Clone(rejected)
	}
	history, rejected = trimHistory(history, rejected, c.cfg.KeepAppliedIDs)
	cur.SetApplied(history)
	cur.SetRejected(rejected)
	cur.SetEpoch(cart.Epoch(epoch))
	return cur.EncodedLen(now)
}

// build makes the write that stores what r applied to what st read.
func (c *Carts) build(cartID string, st stored, epoch Epoch, now time.Time, r applied) (plan, error) {
	p := plan{cartID: cartID, out: r.out}
	if !r.changed && !r.recorded {
		return p, nil
	}
	cur, existed, deletedBy := r.cur, st.cur != nil, r.deletedBy
	history, rejected := trimHistory(r.history, r.rejected, c.cfg.KeepAppliedIDs)
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
	case r.recorded:
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
		// still there and the command's next attempt writes the tombstone again. Dapr's
		// transactions are not atomic on ETag conflicts, so they would
		// not help here.
		if err := c.store.Save(ctx, p.key, p.doc, p.opts); err != nil {
			return err
		}
		return c.store.Delete(ctx, p.cartID, p.etag)
	}
	return nil
}

// parseEntry parses a stored cart.
func parseEntry(e statepool.Entry) (stored, error) {
	cur, err := cart.Parse(e.Value)
	if err != nil {
		return stored{}, err
	}
	return stored{cur: cur, etag: e.ETag, history: cur.Applied(), rejected: cur.Rejected(), epoch: Epoch(cur.Epoch()), raw: e}, nil
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
	st := stored{tombETag: e.ETag, raw: e, tombstone: true}
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
