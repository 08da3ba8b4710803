package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// publishOptions are the flags every publishing command shares.
type publishOptions struct {
	nats    *natsOptions
	timeout *time.Duration
	id      string
	wait    bool
}

func (f *flagSet) publishFlags() *publishOptions {
	o := &publishOptions{nats: f.natsFlags()}
	o.timeout = f.timeoutFlag("how long to wait for the publish and the outcome")
	f.fs.StringVar(&o.id, "id", "", "command `id`; default a new unique id. Reuse an id to retry a command safely")
	f.fs.BoolVar(&o.wait, "wait", true, "wait for the outcome event and print it; with -wait=false print where the command was stored")
	return o
}

func runCache(ctx context.Context, c *cli, args []string) error {
	f := c.newFlagSet("cache", "-cart id [-tenant id -store-code code -terminal n] [-file cart.json] [flags]",
		"Publishes a cache command, which creates cart -cart (or replaces it) from -file, or from\n"+
			"an empty cart, and prints the outcome event as JSON. Fields of the file that the worker\n"+
			"does not model are kept verbatim.")
	var (
		cartID, tenant, storeCode, file string
		terminal                        int
	)
	f.fs.StringVar(&cartID, "cart", "", "cart `id`; default the file's cart_id")
	f.fs.StringVar(&tenant, "tenant", "", "tenant `id` of a new cart")
	f.fs.StringVar(&storeCode, "store-code", "", "store `code` of a new cart")
	f.fs.IntVar(&terminal, "terminal", 0, "terminal `number` of a new cart")
	f.fs.StringVar(&file, "file", "", "`path` of the cart document to store, a JSON object")
	po := f.publishFlags()
	if help, err := f.parse(args); help || err != nil {
		return err
	}
	var doc json.RawMessage
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return f.usageErr(fmt.Errorf("-file: %w", err))
		}
		doc = bytes.TrimSpace(b)
		if cartID == "" {
			var meta struct {
				CartID string `json:"cart_id"`
			}
			_ = json.Unmarshal(doc, &meta) // an unreadable file is reported by validation
			cartID = meta.CartID
		}
	}
	if cartID == "" {
		return f.usageErr(errors.New("-cart is required"))
	}
	cmd := publisher.CacheCommand(cartID, publisher.NewCart{
		TenantID: tenant, StoreCode: storeCode, TerminalNo: terminal, Document: doc,
	})
	return c.publish(ctx, f, po, cmd)
}

func runAdd(ctx context.Context, c *cli, args []string) error {
	f := c.newFlagSet("add", "-cart id (-item code -price amount -tax code [-qty n -desc text] | -items json) [flags]",
		"Publishes an add-item command for one line (-item) and/or the lines of -items, and\n"+
			"prints the outcome event as JSON. -items is a JSON array of\n"+
			`{"item_code","quantity","unit_price","description","tax_code","category_code"}.`)
	var (
		cartID, item, price, tax, desc, category, itemsJSON string
		qty                                                 int
	)
	f.fs.StringVar(&cartID, "cart", "", "cart `id` (required)")
	f.fs.StringVar(&item, "item", "", "item `code` of one line")
	f.fs.IntVar(&qty, "qty", 1, "`quantity` of the -item line")
	f.fs.StringVar(&price, "price", "", "unit price of the -item line, a decimal `amount` (required with -item)")
	f.fs.StringVar(&tax, "tax", "", "tax `code` of the -item line, e.g. 01, from the worker's CART_TAX_TABLE (required with -item)")
	f.fs.StringVar(&desc, "desc", "", "`description` of the -item line")
	f.fs.StringVar(&category, "category", "", "category `code` of the -item line")
	f.fs.StringVar(&itemsJSON, "items", "", "lines as a `JSON` array, added before the -item line")
	po := f.publishFlags()
	f.require("cart")
	if help, err := f.parse(args); help || err != nil {
		return err
	}
	var items []command.Item
	if itemsJSON != "" {
		var err error
		if items, err = readItems(itemsJSON); err != nil {
			return f.usageErr(fmt.Errorf("-items: %w", err))
		}
		for i, it := range items {
			if it.TaxCode == "" {
				return f.usageErr(fmt.Errorf("-items: line %d has no tax_code: the worker rejects a line without one", i+1))
			}
		}
	}
	switch {
	case item != "":
		if price == "" {
			return f.usageErr(errors.New("-price is required with -item"))
		}
		p, err := money.Parse(price)
		if err != nil {
			return f.usageErr(fmt.Errorf("-price: %w", err))
		}
		// command.Item leaves the tax code optional, but CART_TAX_TABLE
		// cannot hold an empty code, so the worker would reject the line
		// (unknown_tax_code) after a round trip.
		if tax == "" {
			return f.usageErr(errors.New("-tax is required with -item: the worker rejects a line without a tax code"))
		}
		items = append(items, command.Item{
			ItemCode: item, Quantity: qty, UnitPrice: p, Description: desc, TaxCode: tax, CategoryCode: category,
		})
	case f.given("price") || f.given("qty") || f.given("tax") || f.given("desc") || f.given("category"):
		return f.usageErr(errors.New("-price, -qty, -tax, -desc and -category describe the -item line: give -item too"))
	}
	if len(items) == 0 {
		return f.usageErr(errors.New("give -item or -items"))
	}
	return c.publish(ctx, f, po, publisher.AddItemCommand(cartID, items...))
}

func runDelete(ctx context.Context, c *cli, args []string) error {
	f := c.newFlagSet("delete", "-cart id [flags]",
		"Publishes a delete command and prints the outcome event as JSON. Deleting a cart\n"+
			"that does not exist counts as applied.")
	var cartID string
	f.fs.StringVar(&cartID, "cart", "", "cart `id` (required)")
	po := f.publishFlags()
	f.require("cart")
	if help, err := f.parse(args); help || err != nil {
		return err
	}
	return c.publish(ctx, f, po, publisher.DeleteCommand(cartID))
}

// publish sends cmd and prints its outcome, or its receipt with -wait=false.
func (c *cli) publish(ctx context.Context, f *flagSet, o *publishOptions, cmd command.Command) error {
	cmd.ID = o.id
	s, err := c.connect(ctx, f, o.nats, *o.timeout)
	if err != nil {
		return err
	}
	defer s.close()
	p, err := s.publisher(*o.timeout)
	if err != nil {
		return f.usageErr(err)
	}
	defer p.Close()

	ctx, cancel := context.WithTimeout(traced(ctx, c.stderr), *o.timeout)
	defer cancel()
	if !o.wait {
		r, err := p.Publish(ctx, cmd)
		if err != nil {
			return commandError(f, err)
		}
		return writeJSON(c.stdout, receiptJSON{
			CommandID: r.CommandID, Subject: r.Subject, Stream: r.Stream, Seq: r.Seq, Duplicate: r.Duplicate,
		})
	}
	ev, err := p.PublishAndWait(ctx, cmd)
	return c.outcome(f, ev, err, *o.timeout)
}

// receiptJSON is how -wait=false prints a publisher.Receipt.
type receiptJSON struct {
	CommandID string `json:"command_id"`
	Subject   string `json:"subject"`
	Stream    string `json:"stream"`
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
}

// outcome prints the event of an applied or rejected command and turns the
// other results of PublishAndWait into errors a person can act on.
func (c *cli) outcome(f *flagSet, ev command.Event, err error, timeout time.Duration) error {
	var rej *publisher.RejectedError
	switch {
	case err == nil:
		return writeJSON(c.stdout, ev)
	case errors.As(err, &rej):
		if werr := writeJSON(c.stdout, ev); werr != nil {
			return werr
		}
		return fmt.Errorf("%s %s on cart %s rejected: %s: %s", rej.Type, rej.CommandID, rej.CartID, rej.Code, rej.Message)
	case errors.Is(err, publisher.ErrDuplicate):
		return fmt.Errorf("no outcome for %s %s on cart %s within %s: JetStream already held a command with this id, "+
			"so its outcome was probably sent before (check with '%s get -cart %s')", ev.Type, ev.CommandID, ev.CartID, timeout, c.self(), ev.CartID)
	case errors.Is(err, publisher.ErrTimeout):
		return fmt.Errorf("no outcome for %s %s on cart %s within %s: the command is stored and will be applied "+
			"when cartworker gets to it (is it running?); '%[5]s watch -cart %[3]s' shows outcomes, '%[5]s get -cart %[3]s' the cart",
			ev.Type, ev.CommandID, ev.CartID, timeout, c.self())
	default:
		return commandError(f, err)
	}
}

// commandError makes an invalid command a usage error: it came from the
// flags, and sending it again unchanged cannot work.
func commandError(f *flagSet, err error) error {
	var inv *command.InvalidError
	if errors.As(err, &inv) {
		return f.usageErr(inv)
	}
	return err
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// readItems reads -items as the worker reads a command's items
// (command.DecodeItems: strict prices, the item checks, errors naming the
// field), after a first pass that refuses unknown fields, which the worker
// ignores but which on a command line are a misspelling.
func readItems(raw string) ([]command.Item, error) {
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	var lenient []command.Item
	if err := dec.Decode(&lenient); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON array")
	}
	return command.DecodeItems([]byte(raw))
}
