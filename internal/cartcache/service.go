package cartcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/statepool"
)

// Config tunes a Service. The zero value is usable: every zero field takes the
// default documented on it.
type Config struct {
	// TaxTable maps tax codes to rules. Default: DefaultTaxTable().
	TaxTable TaxTable
	// KeepAppliedIDs is how many applied command ids a cart remembers for
	// de-duplication. Default and minimum: 1000.
	KeepAppliedIDs int
	// TombstoneTTL is how long a deleted cart's tombstone lives, so that
	// commands redelivered after the delete are still recognised.
	// Default: 1h.
	TombstoneTTL time.Duration
	// MaxConflictRetries bounds the re-reads after an ETag conflict.
	// Default: 16.
	MaxConflictRetries int
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

const minKeepAppliedIDs = 1000

func (c Config) withDefaults() Config {
	if c.TaxTable == nil {
		c.TaxTable = DefaultTaxTable()
	}
	if c.KeepAppliedIDs < minKeepAppliedIDs {
		c.KeepAppliedIDs = minKeepAppliedIDs
	}
	if c.TombstoneTTL <= 0 {
		c.TombstoneTTL = time.Hour
	}
	if c.MaxConflictRetries <= 0 {
		c.MaxConflictRetries = 16
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Service applies commands to carts in a Store. It is safe for concurrent
// use; concurrent commands on one cart are serialised by the ETag.
type Service struct {
	store Store
	cfg   Config
}

// New returns a Service over store.
func New(store Store, cfg Config) *Service {
	return &Service{store: store, cfg: cfg.withDefaults()}
}

// Result is what applying a command did.
type Result struct {
	// Duplicate is true when the command had been applied before and this
	// call changed nothing.
	Duplicate bool
}

// TombstoneKey is the key of a deleted cart's tombstone.
func TombstoneKey(cartID string) string { return cartID + ":tombstone" }

// tombstone remembers a deleted cart's applied ids for TombstoneTTL.
type tombstone struct {
	CartID    string   `json:"cart_id"`
	DeletedBy string   `json:"deleted_by"`
	DeletedAt string   `json:"deleted_at"`
	Applied   []string `json:"applied_command_ids"`
}

// Apply applies cmd, which must have passed command validation.
//
// Errors: ErrCartNotFound, ErrInvalidState, ErrUnknownTaxCode,
// ErrAmountOverflow, ErrInvalidCart and ErrUnknownType are final
// rejections; anything else (store failures, ErrConflict) is transient and
// the command may be retried as is. Every error is returned before the
// save, so a refused command leaves the stored cart exactly as it was.
func (s *Service) Apply(ctx context.Context, cmd command.Command) (Result, error) {
	var apply func(context.Context, command.Command) (Result, error)
	switch cmd.Type {
	case command.TypeAddItem:
		apply = s.addItem
	case command.TypeCache:
		apply = s.cache
	case command.TypeDelete:
		apply = s.delete
	default:
		return Result{}, fmt.Errorf("%w %q", ErrUnknownType, cmd.Type)
	}
	for attempt := 0; ; attempt++ {
		res, err := apply(ctx, cmd)
		if !errors.Is(err, statepool.ErrETagMismatch) {
			return res, err
		}
		if attempt >= s.cfg.MaxConflictRetries {
			return Result{}, fmt.Errorf("%s %s: %w", cmd.Type, cmd.CartID, ErrConflict)
		}
		if err := backoff(ctx, attempt); err != nil {
			return Result{}, err
		}
	}
}

// backoff waits a short, jittered time so that writers racing on one cart
// stop colliding in lock step.
func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(1<<min(attempt, 6)) * time.Millisecond
	d = d/2 + rand.N(d)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (s *Service) load(ctx context.Context, cartID string) (*document, string, error) {
	e, err := s.store.Get(ctx, cartID)
	if err != nil {
		return nil, "", err
	}
	d, err := parseDocument(e.Value)
	if err != nil {
		return nil, "", err
	}
	return d, e.ETag, nil
}

// deletedIDs returns the applied ids of a deleted cart, from its tombstone.
func (s *Service) deletedIDs(ctx context.Context, cartID string) ([]string, error) {
	e, err := s.store.Get(ctx, TombstoneKey(cartID))
	if errors.Is(err, statepool.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var t tombstone
	if err := json.Unmarshal(e.Value, &t); err != nil {
		// A damaged tombstone only weakens de-duplication after a delete;
		// it must not block the cart.
		return nil, nil
	}
	return t.Applied, nil
}

func (s *Service) save(ctx context.Context, cartID string, d *document, etag string) error {
	b, err := d.encode(s.cfg.Now())
	if err != nil {
		return err
	}
	return s.store.Save(ctx, cartID, b, statepool.SaveOptions{ETag: etag})
}

func (s *Service) addItem(ctx context.Context, cmd command.Command) (Result, error) {
	d, etag, err := s.load(ctx, cmd.CartID)
	if errors.Is(err, statepool.ErrNotFound) {
		ids, terr := s.deletedIDs(ctx, cmd.CartID)
		if terr != nil {
			return Result{}, terr
		}
		if containsID(ids, cmd.ID) {
			return Result{Duplicate: true}, nil
		}
		return Result{}, fmt.Errorf("add-item %s: %w", cmd.CartID, ErrCartNotFound)
	}
	if err != nil {
		return Result{}, err
	}
	if d.hasApplied(cmd.ID) {
		return Result{Duplicate: true}, nil
	}
	if d.status != StatusIdle && d.status != StatusEnteringItem {
		return Result{}, fmt.Errorf("add-item %s in status %q: %w", cmd.CartID, d.status, ErrInvalidState)
	}
	if err := d.appendItems(cmd.Items); err != nil {
		return Result{}, err
	}
	if err := d.recompute(s.cfg.TaxTable); err != nil {
		return Result{}, err
	}
	d.setString("status", StatusEnteringItem)
	d.recordApplied(cmd.ID, s.cfg.KeepAppliedIDs)
	return Result{}, s.save(ctx, cmd.CartID, d, etag)
}

func (s *Service) cache(ctx context.Context, cmd command.Command) (Result, error) {
	old, etag, err := s.load(ctx, cmd.CartID)
	var applied []string
	switch {
	case errors.Is(err, statepool.ErrNotFound):
		// Recreating a deleted cart: carry the old ids over so that a late
		// redelivery of the old cart's commands is still a duplicate.
		if applied, err = s.deletedIDs(ctx, cmd.CartID); err != nil {
			return Result{}, err
		}
	case err != nil:
		return Result{}, err
	default:
		applied = old.applied
	}
	if containsID(applied, cmd.ID) {
		return Result{Duplicate: true}, nil
	}

	raw := []byte(cmd.Cart)
	if len(raw) == 0 || string(raw) == "null" {
		raw = []byte("{}")
	}
	d, err := parseDocument(raw)
	if err != nil {
		return Result{}, err
	}
	now := s.cfg.Now().UTC().Format(time.RFC3339Nano)
	d.setString("cart_id", cmd.CartID)
	for _, f := range []struct {
		name string
		v    any
	}{
		{"tenant_id", cmd.TenantID},
		{"store_code", cmd.StoreCode},
		{"terminal_no", cmd.TerminalNo},
		{"status", StatusIdle},
		{"line_items", []json.RawMessage{}},
		{"payments", []json.RawMessage{}},
		{"subtotal_discounts", []json.RawMessage{}},
		{"created_at", now},
	} {
		if err := d.setDefault(f.name, f.v); err != nil {
			return Result{}, err
		}
	}
	if d.status == "" {
		d.status = StatusIdle
	}
	if err := d.recompute(s.cfg.TaxTable); err != nil {
		return Result{}, err
	}
	// A cached document may carry its own applied ids; the stored cart's
	// history wins because it is what redeliveries are checked against.
	d.applied = appendID(mergeIDs(applied, d.applied), cmd.ID, s.cfg.KeepAppliedIDs)
	return Result{}, s.save(ctx, cmd.CartID, d, etag)
}

func mergeIDs(a, b []string) []string {
	if len(b) == 0 {
		return a
	}
	out := append([]string(nil), a...)
	for _, id := range b {
		if !containsID(out, id) {
			out = append(out, id)
		}
	}
	return out
}

func (s *Service) delete(ctx context.Context, cmd command.Command) (Result, error) {
	d, etag, err := s.load(ctx, cmd.CartID)
	if errors.Is(err, statepool.ErrNotFound) {
		ids, terr := s.deletedIDs(ctx, cmd.CartID)
		if terr != nil {
			return Result{}, terr
		}
		return Result{Duplicate: containsID(ids, cmd.ID)}, nil
	}
	if err != nil {
		return Result{}, err
	}
	if d.hasApplied(cmd.ID) {
		return Result{Duplicate: true}, nil
	}
	// The tombstone goes first: if the DELETE then fails, the cart is still
	// there and the retry writes the tombstone again. Dapr's transactions
	// are not atomic on ETag conflicts, so they would not help here.
	t := tombstone{
		CartID:    cmd.CartID,
		DeletedBy: cmd.ID,
		DeletedAt: s.cfg.Now().UTC().Format(time.RFC3339Nano),
		Applied:   appendID(d.applied, cmd.ID, s.cfg.KeepAppliedIDs),
	}
	b, err := json.Marshal(t)
	if err != nil {
		return Result{}, fmt.Errorf("encode tombstone: %w", err)
	}
	if err := s.store.Save(ctx, TombstoneKey(cmd.CartID), b, statepool.SaveOptions{TTL: s.cfg.TombstoneTTL}); err != nil {
		return Result{}, err
	}
	return Result{}, s.store.Delete(ctx, cmd.CartID, etag)
}
