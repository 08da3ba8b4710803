package cart

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/cartworker/cartworker/command"
)

// Apply is where a validated command changes a cart: it dispatches to the
// rule of the command's type. cur is the stored cart, nil when there is
// none. It returns the cart to store, or nil when the cart is to be deleted.
// On error cur is unchanged, whatever the error.
//
// Apply knows nothing of storage: the caller reads cur, de-duplicates the
// command and stores the result (see cartcache.Carts.Update).
func Apply(cur *Document, cmd command.Command, taxes TaxTable, now time.Time) (*Document, error) {
	switch cmd.Type {
	case command.TypeAddItem:
		if cur == nil {
			return nil, fmt.Errorf("add-item %s: %w", cmd.CartID, ErrCartNotFound)
		}
		if err := AddItems(cur, cmd.Items, taxes); err != nil {
			return nil, fmt.Errorf("add-item %s: %w", cmd.CartID, err)
		}
		return cur, nil
	case command.TypeCache:
		return Cache(cmd, taxes, now)
	case command.TypeDelete:
		return nil, nil
	default:
		return nil, fmt.Errorf("%w %q", ErrUnknownType, cmd.Type)
	}
}

// AddItems appends items to the cart as new lines, recomputes its totals and
// taxes and moves it to EnteringItem. Only an Idle or EnteringItem cart takes
// items. On error the cart is left exactly as it was, so that a caller
// applying several commands to one document can refuse one and go on.
func AddItems(d *Document, items []command.Item, taxes TaxTable) error {
	if d.status != StatusIdle && d.status != StatusEnteringItem {
		return fmt.Errorf("status %q: %w", d.status, ErrInvalidState)
	}
	undo := d.Checkpoint()
	if err := d.appendItems(items); err != nil {
		undo()
		return err
	}
	if err := d.recompute(taxes); err != nil {
		undo()
		return err
	}
	d.status = StatusEnteringItem
	return nil
}

// Checkpoint returns a function that puts the document back as it is now,
// after any number of AddItems, the only change made to a Document in
// place: its lines (only ever appended to), the fields recompute rewrites,
// and the status. The handled ids, the codes, the epoch and updated_at are
// not put back: the caller sets those before every Encode.
func (d *Document) Checkpoint() (undo func()) {
	lines, added, status := len(d.views), len(d.added), d.status
	saved := make(map[string]json.RawMessage, len(recomputed))
	for _, k := range recomputed {
		saved[k] = d.fields[k]
	}
	return func() {
		clear(d.added[added:])
		d.views, d.added, d.status = d.views[:lines], d.added[:added], status
		for k, v := range saved {
			if v == nil {
				delete(d.fields, k)
			} else {
				d.fields[k] = v
			}
		}
	}
}

// Cache makes the cart a client sends whole: cmd.Cart, an upstream cart
// document (empty for a fresh cart), with the command's tenant, store and
// terminal and upstream's defaults for every field it lacks, and its totals
// recomputed. The applied ids the document carries are kept; the caller
// merges the stored cart's history into them.
func Cache(cmd command.Command, taxes TaxTable, now time.Time) (*Document, error) {
	raw := []byte(cmd.Cart)
	if len(raw) == 0 || string(raw) == "null" {
		raw = []byte("{}")
	}
	d, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	d.setString("cart_id", cmd.CartID)
	for _, f := range []struct {
		name string
		v    any
	}{
		{"tenant_id", cmd.TenantID},
		{"store_code", cmd.StoreCode},
		{"terminal_no", cmd.TerminalNo},
		{"line_items", []json.RawMessage{}},
		{"payments", []json.RawMessage{}},
		{"subtotal_discounts", []json.RawMessage{}},
		{"created_at", now.UTC().Format(time.RFC3339Nano)},
	} {
		if err := d.setDefault(f.name, f.v); err != nil {
			return nil, err
		}
	}
	if d.status == "" {
		d.status = StatusIdle
	}
	if err := d.recompute(taxes); err != nil {
		return nil, err
	}
	return d, nil
}

// Tombstone is what remains of a missing cart for a while: the commands it
// handled, so that a late redelivery or a replay of one of them is still
// recognised as a duplicate (and a refused one refused again with its
// code), the Epoch of its last fenced writer, so that a stale owner cannot
// recreate a cart a newer owner deleted, and by whom and when it was
// deleted.
//
// A tombstone may also stand for a cart that was never deleted, only
// missing when a command was refused (an add-item before its cart's
// cache): DeletedBy and DeletedAt are then empty, and the history carries
// over into the cart a later cache creates. Tombstones written before
// Rejected and Epoch existed read as having neither.
type Tombstone struct {
	CartID    string `json:"cart_id"`
	DeletedBy string `json:"deleted_by,omitempty"`
	DeletedAt string `json:"deleted_at,omitempty"`
	// Applied lists every command id the cart handled, applied or
	// refused, oldest first (as AppliedIDsField does).
	Applied []string `json:"applied_command_ids"`
	// Rejected maps the refused ids of Applied to their codes (as
	// RejectedIDsField does).
	Rejected map[string]string `json:"rejected_command_ids,omitempty"`
	// Epoch is the last fenced writer's (WriterEpochField), zero when none.
	Epoch Epoch `json:"writer_epoch,omitzero"`
}

// Delete returns the tombstone of cart cartID, deleted by command cmdID at
// now. applied is the history to remember, the delete's own id included.
// A cart in any status may be deleted, as upstream allows.
func Delete(cartID, cmdID string, applied []string, now time.Time) Tombstone {
	return Tombstone{
		CartID:    cartID,
		DeletedBy: cmdID,
		DeletedAt: now.UTC().Format(time.RFC3339Nano),
		Applied:   applied,
	}
}
