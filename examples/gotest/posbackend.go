// Package posbackend is the part of a point-of-sale backend that sends a
// till's scans to cartworker: it opens a cart and adds the scanned items,
// through cartworker's Go client, package publisher. It is the example a
// team that publishes cart commands copies to test its own code end to end
// against a real cartworker (posbackend_test.go, package cartworkertest).
package posbackend

import (
	"context"
	"fmt"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// Till is one terminal of a store.
type Till struct {
	pub      *publisher.Publisher
	tenant   string
	store    string
	terminal int
}

// NewTill returns the till terminal of store, publishing through pub.
func NewTill(pub *publisher.Publisher, tenant, store string, terminal int) *Till {
	return &Till{pub: pub, tenant: tenant, store: store, terminal: terminal}
}

// Open creates cart cartID for the till and waits until cartworker has
// applied it.
func (t *Till) Open(ctx context.Context, cartID string) error {
	_, err := t.pub.PublishAndWait(ctx, publisher.CacheCommand(cartID,
		publisher.NewCart{TenantID: t.tenant, StoreCode: t.store, TerminalNo: t.terminal}))
	if err != nil {
		return fmt.Errorf("open cart %s: %w", cartID, err)
	}
	return nil
}

// Scan adds quantity of an item at price (a decimal, "120" or "1.20") with its tax
// code to cart cartID, and waits until cartworker has applied it.
func (t *Till) Scan(ctx context.Context, cartID, itemCode string, quantity int, price, taxCode string) error {
	unit, err := money.Parse(price)
	if err != nil {
		return fmt.Errorf("scan %s: price %q: %w", itemCode, price, err)
	}
	_, err = t.pub.PublishAndWait(ctx, publisher.AddItemCommand(cartID,
		command.Item{ItemCode: itemCode, Quantity: quantity, UnitPrice: unit, TaxCode: taxCode}))
	if err != nil {
		return fmt.Errorf("scan %s into cart %s: %w", itemCode, cartID, err)
	}
	return nil
}
