package cartcache

import (
	"context"
	"errors"
	"fmt"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/statepool"
)

// MaxBulkBytes bounds the documents of one bulk save: past it, UpdateCarts
// saves in several calls. daprd refuses a request over its max-body-size
// (4 MiB by default), so one call stays well under that.
const MaxBulkBytes = 1 << 20

// HeldPerByte is what a read-modify-write holds per byte of the documents
// it read, counted against Config.Held: what was read (which the parsed
// cart points into), the document encoded for the save, and the save's
// request as the state client sends it.
const HeldPerByte = 3

// heldFor is what a read-modify-write of read bytes takes of Config.Held.
func heldFor(read int) int64 { return int64(read) * HeldPerByte }

// CartBatch is one cart's commands, in order, for ApplyCarts.
type CartBatch struct {
	CartID string
	// Epoch is the ownership of the cart's partition the commands are
	// applied under; the zero Epoch is unfenced (see UpdateBatchAt).
	Epoch Epoch
	Cmds  []command.Command
}

// CartSteps is one cart's steps, in order, for UpdateCarts.
type CartSteps struct {
	CartID string
	// Epoch is the ownership of the cart's partition the steps are
	// applied under; the zero Epoch is unfenced (see UpdateBatchAt).
	Epoch Epoch
	Steps []Step
}

// CartResult is what UpdateCarts made of one cart: its steps' outcomes, or
// the cart's error, which is UpdateBatchAt's (nothing of that cart was
// applied, and, but for ErrFenced, its steps may be tried again).
type CartResult struct {
	Outcomes []Outcome
	Err      error
}

// UpdateCarts is UpdateBatchAt for several carts at once, each at its own
// Epoch and with its own result, in the order given. The carts must be
// distinct. It reads them in one bulk call (and the tombstones of the
// missing ones in another), fences and applies each cart's steps in
// memory, and saves every changed cart (or tombstone recording a refusal)
// in one bulk call, each guarded by the ETag it was read at: two calls to
// the store for the lot, where UpdateBatchAt makes two per cart.
//
// Deletes, and every cart of a bulk save that met a conflicting write, go
// through UpdateBatchAt on their own, at the cart's Epoch, so they are
// fenced again on what they re-read. A bulk save is not atomic: after a
// conflict some of its carts may be saved and others not, so each is read
// again, and a cart whose every applied or recorded step now reads as
// handled before was saved by this call and keeps the outcomes it was
// saved with.
func (c *Carts) UpdateCarts(ctx context.Context, carts []CartSteps) []CartResult {
	if len(carts) == 1 || !distinct(carts) {
		return c.eachOnItsOwn(ctx, carts)
	}
	res := make([]CartResult, len(carts))
	plans, held, err := c.planCarts(ctx, carts, res)
	if errors.Is(err, statepool.ErrResourceExhausted) {
		// The carts together are more than daprd sends in one answer:
		// each on its own, then.
		return c.eachOnItsOwn(ctx, carts)
	}
	// Deletes, and the carts a bulk save left to settle on their own, go
	// through UpdateBatchAt once the bulk saves are done and what they
	// held of Config.Held is given back: each takes its own share, and
	// taking one while holding another could wait for itself.
	var saves, deletes, again []int
	for i, p := range plans {
		switch {
		case res[i].Err != nil:
		case p.write == writeSave:
			saves = append(saves, i)
		case p.write == writeDelete:
			// A delete writes a tombstone, then deletes guarded by the
			// ETag: two ordered calls that a bulk save cannot make.
			deletes = append(deletes, i)
		case p.write == writeNone:
			// Nothing to write: every step a duplicate or refused
			// without a record.
			res[i].Outcomes = p.out
		}
	}
	for len(saves) > 0 {
		n, size := 1, len(plans[saves[0]].doc)
		for n < len(saves) && n < statepool.MaxBulkKeys && size+len(plans[saves[n]].doc) <= MaxBulkBytes {
			size += len(plans[saves[n]].doc)
			n++
		}
		again = append(again, c.saveCarts(ctx, plans, saves[:n], res)...)
		saves = saves[n:]
	}
	c.cfg.Held.Give(held)
	for _, i := range deletes {
		res[i].Outcomes, res[i].Err = c.UpdateBatchAt(ctx, carts[i].CartID, carts[i].Epoch, carts[i].Steps)
	}
	for _, i := range again {
		out, err := c.UpdateBatchAt(ctx, carts[i].CartID, carts[i].Epoch, carts[i].Steps)
		if err == nil && savedBefore(plans[i].out, out) {
			out = plans[i].out
		}
		res[i].Outcomes, res[i].Err = out, err
	}
	return res
}

// eachOnItsOwn updates each cart with UpdateBatchAt, one after another.
func (c *Carts) eachOnItsOwn(ctx context.Context, carts []CartSteps) []CartResult {
	res := make([]CartResult, len(carts))
	for i, cs := range carts {
		res[i].Outcomes, res[i].Err = c.UpdateBatchAt(ctx, cs.CartID, cs.Epoch, cs.Steps)
	}
	return res
}

// planCarts reads the carts in one bulk call, and their tombstones in
// another where a cart is missing, and plans each. A cart that could not be
// read or planned gets its error in res; the bulk read's own error, which
// every cart then has, is returned too. What it returns, held, it took of
// Config.Held for what it read, and the caller gives back.
func (c *Carts) planCarts(ctx context.Context, carts []CartSteps, res []CartResult) (plans []plan, held int64, err error) {
	keys := make([]string, len(carts))
	for i, cs := range carts {
		keys[i] = cs.CartID
	}
	entries, err := c.store.GetBulk(ctx, keys)
	if err == nil {
		read := 0
		for _, e := range entries {
			read += len(e.Value)
		}
		held = heldFor(read)
		if err = c.cfg.Held.Take(ctx, held); err != nil {
			held, err = 0, fmt.Errorf("wait for memory to apply %d carts: %w", len(carts), err)
		}
	}
	if err != nil {
		for i := range res {
			res[i].Err = err
		}
		return nil, 0, err
	}
	var missing []int
	for i, e := range entries {
		if errors.Is(e.Err, statepool.ErrNotFound) {
			missing = append(missing, i)
		}
	}
	tombs := c.tombstones(ctx, carts, missing, res)
	plans = make([]plan, len(carts))
	for i, e := range entries {
		switch {
		case res[i].Err != nil:
			continue
		case errors.Is(e.Err, statepool.ErrNotFound):
			plans[i], res[i].Err = c.plan(carts[i].CartID, tombs[i], carts[i].Epoch, carts[i].Steps)
		case e.Err != nil:
			res[i].Err = e.Err
		default:
			st, err := parseEntry(e.Entry)
			if err != nil {
				res[i].Err = err
				continue
			}
			plans[i], res[i].Err = c.plan(carts[i].CartID, st, carts[i].Epoch, carts[i].Steps)
		}
	}
	return plans, held, nil
}

// tombstones reads the tombstones of the missing carts in one bulk call and
// returns what each keeps (its history, Epoch and ETag), by cart index; a
// missing cart without a tombstone has none. A failed read is the error of
// those carts.
func (c *Carts) tombstones(ctx context.Context, carts []CartSteps, missing []int, res []CartResult) map[int]stored {
	if len(missing) == 0 {
		return nil
	}
	keys := make([]string, len(missing))
	for j, i := range missing {
		keys[j] = TombstoneKey(carts[i].CartID)
	}
	entries, err := c.store.GetBulk(ctx, keys)
	out := make(map[int]stored, len(missing))
	for j, i := range missing {
		switch {
		case err != nil:
			res[i].Err = err
		case errors.Is(entries[j].Err, statepool.ErrNotFound):
		case entries[j].Err != nil:
			res[i].Err = entries[j].Err
		default:
			out[i] = parseTombstone(entries[j].Entry)
		}
	}
	return out
}

// saveCarts saves the planned carts at idx in one bulk call and records
// their results, and returns the carts to settle on their own (see
// UpdateCarts): every one after a conflict, and every one after daprd
// refused the call as too large when it held several carts: the refusal
// is final for the cart at fault, but the call does not say which one
// that is, and the others must not share it. The saved documents are let
// go.
func (c *Carts) saveCarts(ctx context.Context, plans []plan, idx []int, res []CartResult) (again []int) {
	items := make([]statepool.SaveItem, len(idx))
	for j, i := range idx {
		items[j] = statepool.SaveItem{Key: plans[i].key, Value: plans[i].doc, Opts: plans[i].opts}
	}
	err := c.store.SaveBulk(ctx, items)
	onItsOwn := errors.Is(err, statepool.ErrETagMismatch) || (len(idx) > 1 && errors.Is(err, statepool.ErrTooLarge))
	for _, i := range idx {
		plans[i].doc = nil
		switch {
		case err == nil:
			res[i].Outcomes = plans[i].out
		case onItsOwn:
			again = append(again, i)
		default:
			res[i].Err = err
		}
	}
	return again
}

// savedBefore reports whether again, the outcomes of a fresh attempt at a
// cart's steps, finds every step that planned applied or recorded as
// refused already handled: the bulk save that failed for other carts wrote
// this one.
func savedBefore(planned, again []Outcome) bool {
	some := false
	for i, p := range planned {
		if p.Duplicate || (p.Err != nil && !recordedRejection(p.Err)) {
			continue
		}
		if !again[i].Duplicate {
			return false
		}
		some = true
	}
	return some
}

// distinct reports whether no cart appears twice.
func distinct(carts []CartSteps) bool {
	seen := make(map[string]struct{}, len(carts))
	for _, cs := range carts {
		if _, ok := seen[cs.CartID]; ok {
			return false
		}
		seen[cs.CartID] = struct{}{}
	}
	return true
}
