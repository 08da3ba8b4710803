package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// demoItems are the lines the demo adds, one add-item each, chosen to show
// the three kinds of tax: external 10 %, external 8 % and internal 10 %.
func demoItems() []command.Item {
	return []command.Item{
		{ItemCode: "ITEM001", Quantity: 2, UnitPrice: money.FromInt(120), Description: "Coffee", TaxCode: "01"},
		{ItemCode: "ITEM002", Quantity: 1, UnitPrice: money.FromInt(450), Description: "Sandwich", TaxCode: "11"},
		{ItemCode: "ITEM003", Quantity: 1, UnitPrice: money.FromInt(110), Description: "Water", TaxCode: "02"},
	}
}

func runDemo(ctx context.Context, c *cli, args []string) error {
	f := c.newFlagSet("demo", "[-cart id] [flags]",
		"Creates a cart with a cache command, adds Coffee 2×120 (tax 01), Sandwich 1×450\n"+
			"(tax 11) and Water 1×110 (tax 02) with three add-item commands, waiting for each\n"+
			"outcome, then reads the cart back through Dapr and prints its lines and totals.")
	var (
		cartID, tenant, storeCode string
		terminal                  int
	)
	f.fs.StringVar(&cartID, "cart", "", "cart `id`; default demo-<random>")
	f.fs.StringVar(&tenant, "tenant", "T1", "tenant `id` of the cart")
	f.fs.StringVar(&storeCode, "store-code", "S1", "store `code` of the cart")
	f.fs.IntVar(&terminal, "terminal", 1, "terminal `number` of the cart")
	no := f.natsFlags()
	do := f.daprFlags()
	timeout := f.timeoutFlag("how long to wait for each command's outcome and for Dapr")
	if help, err := f.parse(args); help || err != nil {
		return err
	}
	if cartID == "" {
		var b [4]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
		cartID = "demo-" + hex.EncodeToString(b[:])
	}
	d, err := newDaprClient(do, *timeout)
	if err != nil {
		return f.usageErr(err)
	}
	defer d.Close()
	s, err := c.connect(ctx, f, no, *timeout)
	if err != nil {
		return err
	}
	defer s.close()
	p, err := s.publisher(*timeout)
	if err != nil {
		return f.usageErr(err)
	}
	defer p.Close()

	fmt.Fprintf(c.stdout, "cart %s\n", cartID)
	// One trace for the whole demo, as a till's session would be.
	ctx = traced(ctx, c.stdout)
	cmds := []command.Command{publisher.CacheCommand(cartID, publisher.NewCart{
		TenantID: tenant, StoreCode: storeCode, TerminalNo: terminal,
	})}
	for _, it := range demoItems() {
		cmds = append(cmds, publisher.AddItemCommand(cartID, it))
	}
	for _, cmd := range cmds {
		if err := c.demoStep(ctx, f, p, cmd, *timeout); err != nil {
			return err
		}
	}

	rctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	doc, err := d.get(rctx, cartID)
	if err != nil {
		return fmt.Errorf("read the cart back: %w", err)
	}
	if err := printSummary(c.stdout, doc); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "\nraw JSON: %s get -cart %s\n      or: GET %s\n", c.self(), cartID, d.KeyURL(cartID))
	return nil
}

// demoStep publishes one command, waits for its outcome and prints a line.
func (c *cli) demoStep(ctx context.Context, f *flagSet, p *publisher.Publisher, cmd command.Command, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ev, err := p.PublishAndWait(ctx, cmd)
	what := string(cmd.Type)
	if len(cmd.Items) == 1 {
		it := cmd.Items[0]
		what += fmt.Sprintf(" %s %d×%s", it.Description, it.Quantity, it.UnitPrice)
	}
	if err != nil {
		// outcome prints a rejected event as JSON; the demo wants one line.
		return fmt.Errorf("%s: %w", what, c.outcome(f, ev, err, timeout))
	}
	dup := ""
	if ev.Duplicate {
		dup = " (duplicate)"
	}
	fmt.Fprintf(c.stdout, "  %-28s %s%s  id %s\n", what, ev.Outcome, dup, ev.CommandID)
	return nil
}

// cartSummary is the part of a stored cart the demo prints, in the upstream
// POS service's field names that the worker keeps.
type cartSummary struct {
	CartID    string `json:"cart_id"`
	Status    string `json:"status"`
	LineItems []struct {
		LineNo      int          `json:"line_no"`
		ItemCode    string       `json:"item_code"`
		Description string       `json:"description"`
		Quantity    int          `json:"quantity"`
		UnitPrice   money.Amount `json:"unit_price"`
		Amount      money.Amount `json:"amount"`
		TaxCode     string       `json:"tax_code"`
		IsCancelled bool         `json:"is_cancelled"`
	} `json:"line_items"`
	SubtotalAmount money.Amount `json:"subtotal_amount"`
	Taxes          []struct {
		TaxCode      string       `json:"tax_code"`
		TaxType      string       `json:"tax_type"`
		TaxName      string       `json:"tax_name"`
		TaxAmount    money.Amount `json:"tax_amount"`
		TargetAmount money.Amount `json:"target_amount"`
	} `json:"taxes"`
	Sales struct {
		TotalAmountWithTax money.Amount `json:"total_amount_with_tax"`
		TaxAmount          money.Amount `json:"tax_amount"`
		TotalQuantity      int          `json:"total_quantity"`
	} `json:"sales"`
	BalanceAmount money.Amount `json:"balance_amount"`
}

func printSummary(w io.Writer, doc []byte) error {
	var cs cartSummary
	if err := json.Unmarshal(doc, &cs); err != nil {
		return fmt.Errorf("read the cart back: not a cart document: %w", err)
	}
	fmt.Fprintf(w, "\ncart %s: status %s, %d lines, %d items\n", cs.CartID, cs.Status, len(cs.LineItems), cs.Sales.TotalQuantity)
	rows := [][]string{{"#", "item", "description", "qty", "unit price", "amount", "tax"}}
	for _, l := range cs.LineItems {
		desc := l.Description
		if l.IsCancelled {
			desc += " (cancelled)"
		}
		rows = append(rows, []string{strconv.Itoa(l.LineNo), l.ItemCode, desc, strconv.Itoa(l.Quantity),
			l.UnitPrice.String(), l.Amount.String(), l.TaxCode})
	}
	if err := writeTable(w, "rllrrrl", rows); err != nil {
		return err
	}
	fmt.Fprintln(w)
	rows = [][]string{{"subtotal", cs.SubtotalAmount.String(), ""}}
	for _, t := range cs.Taxes {
		note := "on " + t.TargetAmount.String()
		if t.TaxType == "Internal" {
			note += ", included in the price"
		}
		rows = append(rows, []string{"tax " + t.TaxCode + " " + t.TaxName, t.TaxAmount.String(), note})
	}
	rows = append(rows,
		[]string{"total with tax", cs.Sales.TotalAmountWithTax.String(), ""},
		[]string{"balance due", cs.BalanceAmount.String(), ""})
	return writeTable(w, "lrl", rows)
}

// writeTable prints rows indented by two spaces, in columns aligned left (l)
// or right (r) as align says; text/tabwriter aligns every column one way.
func writeTable(w io.Writer, align string, rows [][]string) error {
	widths := make([]int, len(align))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		b.WriteString(" ")
		for i, cell := range row {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell))
			b.WriteString(" ")
			if align[i] == 'r' {
				b.WriteString(pad + cell)
			} else {
				b.WriteString(cell + pad)
			}
			b.WriteString(" ")
		}
		b.WriteString("\n")
	}
	// Trailing blanks are noise in a terminal and in diffs.
	out := strings.Join(trimRight(strings.Split(b.String(), "\n")), "\n")
	_, err := io.WriteString(w, out)
	return err
}

func trimRight(lines []string) []string {
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return lines
}
