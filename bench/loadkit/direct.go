package loadkit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/statepool"
)

// TombstoneTTL is the worker's default CART_TOMBSTONE_TTL.
const TombstoneTTL = time.Hour

// Direct is the Scenario of the direct modes: the same state calls, with
// documents of the same size, as the worker makes for each command, but
// with no NATS, no worker and no JSON work:
//
//	cache     GET key (missing), GET key:tombstone (missing), POST doc[0]
//	add-item  GET key, POST doc[line] with its ETag (first-write)
//	delete    GET key, POST key:tombstone with a TTL, DELETE key with its ETag
//
// Store is the worker's own state-store contract, so the ceiling uses the
// worker's statepool client as it is and the go-sdk peer implements the
// same contract.
type Direct struct {
	Store cartcache.Store
	Docs  *Docs
}

// ErrMissing is returned when a cart the scenario created is not found.
var ErrMissing = errors.New("loadkit: cart missing from the state store")

// Do implements Scenario.
func (s *Direct) Do(ctx context.Context, typ, cartID string, line int) error {
	switch typ {
	case TypeCache:
		etag, found, err := s.etag(ctx, cartID)
		if err != nil {
			return err
		}
		if !found {
			if _, _, err := s.etag(ctx, cartID+":tombstone"); err != nil {
				return err
			}
		}
		return s.Store.Save(ctx, cartID, s.Docs.Doc(0), statepool.SaveOptions{ETag: etag})
	case TypeAddItem:
		etag, found, err := s.etag(ctx, cartID)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("add-item %s: %w", cartID, ErrMissing)
		}
		return s.Store.Save(ctx, cartID, s.Docs.Doc(line), statepool.SaveOptions{ETag: etag})
	case TypeDelete:
		etag, found, err := s.etag(ctx, cartID)
		if err != nil || !found {
			return err
		}
		if err := s.Store.Save(ctx, cartID+":tombstone", s.Docs.Tombstone, statepool.SaveOptions{TTL: TombstoneTTL}); err != nil {
			return err
		}
		return s.Store.Delete(ctx, cartID, etag)
	default:
		return fmt.Errorf("loadkit: unknown command type %q", typ)
	}
}

// etag reads key and returns its ETag; a missing key is found == false,
// not an error.
func (s *Direct) etag(ctx context.Context, key string) (etag string, found bool, err error) {
	e, err := s.Store.Get(ctx, key)
	switch {
	case errors.Is(err, statepool.ErrNotFound):
		return "", false, nil
	case err != nil:
		return "", false, err
	}
	return e.ETag, true, nil
}

// Docs are the documents the direct modes store: Carts[k] is a cart with k
// line items, as the worker stored it after the cache and k add-items, and
// Tombstone the worker's tombstone of a deleted cart.
type Docs struct {
	Source    string            `json:"source"`
	Carts     []json.RawMessage `json:"carts"`
	Tombstone json.RawMessage   `json:"tombstone"`
}

// Doc returns the cart with line items (the last one when there are fewer).
func (d *Docs) Doc(lines int) []byte {
	return d.Carts[min(max(lines, 0), len(d.Carts)-1)]
}

// Validate checks that every document is a JSON object.
func (d *Docs) Validate() error {
	if len(d.Carts) < 2 {
		return fmt.Errorf("docs: %d carts, want at least 2", len(d.Carts))
	}
	for i, c := range d.Carts {
		if !isObject(c) {
			return fmt.Errorf("docs: carts[%d] is not a JSON object", i)
		}
	}
	if !isObject(d.Tombstone) {
		return errors.New("docs: tombstone is not a JSON object")
	}
	return nil
}

func isObject(b []byte) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(b, &m) == nil && m != nil
}

// Sizes returns the sizes in bytes of the empty and the fullest cart.
func (d *Docs) Sizes() (first, last int) {
	return len(d.Carts[0]), len(d.Carts[len(d.Carts)-1])
}

// ReadDocs reads a Docs file written by WriteDocs.
func ReadDocs(path string) (*Docs, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d Docs
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// Stored sizes must be the worker's: drop any indentation a hand-edited
	// file may carry.
	for i := range d.Carts {
		d.Carts[i] = compact(d.Carts[i])
	}
	d.Tombstone = compact(d.Tombstone)
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &d, nil
}

func compact(raw json.RawMessage) json.RawMessage {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return raw
	}
	return buf.Bytes()
}

// WriteDocs writes d as compact JSON (indenting would re-indent the
// documents themselves and change their sizes).
func WriteDocs(path string, d *Docs) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// Item is the line the scenario adds as add-item number line (1-based):
// one unit of a priced item, cycling through the default table's tax codes.
type Item struct {
	ItemCode     string
	Quantity     int
	UnitPrice    int64
	Description  string
	TaxCode      string
	CategoryCode string
}

var taxCodes = []string{"01", "11", "02", "12", "00"}

// ItemFor returns the item of add-item number line.
func ItemFor(line int) Item {
	return Item{
		ItemCode:     fmt.Sprintf("ITEM%04d", line),
		Quantity:     1,
		UnitPrice:    int64(100 + 37*line),
		Description:  fmt.Sprintf("Bench item %d", line),
		TaxCode:      taxCodes[line%len(taxCodes)],
		CategoryCode: "CAT" + strconv.Itoa(1+line%4),
	}
}

// CartHeader is the document a cache command carries: the header fields of
// an upstream cart that the worker keeps verbatim.
func CartHeader(seq int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"tenant_id":"T0001","store_code":"S0001","store_name":"Bench Store",`+
		`"terminal_no":1,"transaction_no":%d,"transaction_type":101,"business_date":"20260101","receipt_no":%d,`+
		`"staff":{"id":"STF001","name":"Bench Staff"},"user":{"id":"loadgen","name":"loadgen"},`+
		`"masters":{"items":[],"taxes":[],"settings":[]},"additional_info":{}}`, seq, seq))
}

// syntheticTaxes is the taxes array of a cart with lines items: one entry per
// tax code in use.
func syntheticTaxes(lines int) string {
	var out []string
	for i, code := range taxCodes {
		if i >= lines {
			break
		}
		out = append(out, fmt.Sprintf(`{"tax_no":%d,"tax_code":%q,"tax_type":"External","tax_name":"External 10%%",`+
			`"tax_amount":0,"target_amount":0,"target_quantity":0}`, i+1, code))
	}
	return strings.Join(out, ",")
}

// SyntheticDocs builds documents shaped like the worker's when none were
// captured: the cart header, Lines upstream-shaped line items, taxes, sales
// totals and applied command ids. Sizes are within a few per cent of the
// real ones (704..9,226 bytes captured, 709..9,191 synthetic); the capture is
// preferred.
func SyntheticDocs() *Docs {
	d := &Docs{Source: "synthetic (loadkit.SyntheticDocs)"}
	var lines []string
	var ids []string
	ids = append(ids, fmt.Sprintf("%022d", 0))
	for k := 0; k <= Lines; k++ {
		if k > 0 {
			it := ItemFor(k)
			lines = append(lines, fmt.Sprintf(`{"amount":%d,"category_code":%q,"description":%q,"description_short":%q,`+
				`"discounts":[],"discounts_allocated":[],"image_urls":[],"is_cancelled":false,"is_discount_restricted":false,`+
				`"is_unit_price_changed":false,"item_code":%q,"item_details":[],"line_no":%d,"quantity":1,"tax_code":%q,`+
				`"unit_price":%d,"unit_price_original":%d}`,
				it.UnitPrice, it.CategoryCode, it.Description, it.Description, it.ItemCode, k, it.TaxCode, it.UnitPrice, it.UnitPrice))
			ids = append(ids, fmt.Sprintf("%022d", k))
		}
		idsJSON, _ := json.Marshal(ids)
		header := strings.TrimSuffix(string(CartHeader(1)), "}")
		doc := header + `,"applied_command_ids":` + string(idsJSON) +
			`,"balance_amount":0,"cart_id":"lg-synthetic-0-0","created_at":"2026-01-01T00:00:00.000000000Z",` +
			`"line_items":[` + strings.Join(lines, ",") + `],"payments":[],` +
			`"sales":{"tax_amount":0,"total_amount":0,"total_amount_with_tax":0,"total_quantity":` + strconv.Itoa(k) + `},` +
			`"status":"EnteringItem","subtotal_amount":0,"subtotal_discounts":[],` +
			`"taxes":[` + syntheticTaxes(k) + `],` +
			`"updated_at":"2026-01-01T00:00:00.000000000Z"}`
		d.Carts = append(d.Carts, json.RawMessage(doc))
	}
	idsJSON, _ := json.Marshal(append(ids, fmt.Sprintf("%022d", Lines+1)))
	d.Tombstone = json.RawMessage(`{"cart_id":"lg-synthetic-0-0","deleted_by":"0000000000000000000000",` +
		`"deleted_at":"2026-01-01T00:00:00.000000000Z","applied_command_ids":` + string(idsJSON) + `}`)
	return d
}
