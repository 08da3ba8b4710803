package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/bench/loadkit"
	"github.com/cartworker/cartworker/bench/report"
	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// backlogShape is a backlog scenario's default carts and add-items per
// cart. refusal, when set, is the one rejection code its drain may meet:
// the huge carts reach the cart size limit, and every add-item past it is
// refused.
type backlogShape struct {
	carts, lines int
	refusal      string
}

// backlogShapeOf is the shape of a backlog scenario (report.BacklogHot and
// the others); false for an unknown one.
func backlogShapeOf(scenario string) (backlogShape, bool) {
	switch scenario {
	case report.BacklogHot:
		return backlogShape{carts: 50, lines: 100}, true
	case report.BacklogWide:
		return backlogShape{carts: 1000, lines: 20}, true
	case report.BacklogMany:
		return backlogShape{carts: 200, lines: 100}, true
	case report.BacklogHuge:
		return backlogShape{carts: 2, lines: 10000, refusal: command.CodeCartTooLarge}, true
	}
	return backlogShape{}, false
}

// backlogFlags configures one drain.
type backlogFlags struct {
	natsURL, prefix, dapr, store string
	scenario, mode, client       string
	carts, lines, round          int
	launch, launchLog            string
	readyURL, metricsURL         string
	timeout                      time.Duration
	out                          string
	publishers                   int
	watch                        loadkit.PIDs
	keepCarts                    bool
	cartPrefix                   string
	heapURL, heapProfile         string
}

// register defines the flags of `loadgen backlog` on fs.
func (f *backlogFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.natsURL, "nats", "nats://127.0.0.1:4222", "NATS URL of the consumer under test (stopped: this command launches it)")
	fs.StringVar(&f.prefix, "prefix", command.DefaultPrefix, "subject prefix (CART_SUBJECT_PREFIX)")
	fs.StringVar(&f.dapr, "dapr", "http://127.0.0.1:3500", "daprd HTTP endpoint, to read the carts back")
	fs.StringVar(&f.store, "store", statepool.DefaultStoreName, "Dapr state store")
	fs.StringVar(&f.scenario, "scenario", report.BacklogHot, "hot (50 carts x 100 add-items), wide (1,000 x 20), many (200 x 100) or huge (2 x 10,000, past the cart size limit)")
	fs.IntVar(&f.carts, "carts", 0, "carts (default: the scenario's)")
	fs.IntVar(&f.lines, "lines", 0, "add-items per cart (default: the scenario's)")
	fs.StringVar(&f.mode, "mode", loadkit.ModePooled, "label of the consumer")
	fs.StringVar(&f.client, "client", "", "description of the consumer, recorded in the run")
	fs.IntVar(&f.round, "round", 1, "round number, recorded in the run")
	fs.StringVar(&f.launch, "launch", "", "executable that starts the consumer in the foreground (required; it should exec the consumer so that its pid is the consumer's)")
	fs.StringVar(&f.launchLog, "launch-log", "", "file for the consumer's output (default: discarded)")
	fs.StringVar(&f.readyURL, "ready", "", "the consumer's readiness URL: the drain is timed from when it answers 200")
	fs.StringVar(&f.metricsURL, "metrics", "", "the consumer's /metrics, read for "+metricBatchSize)
	fs.DurationVar(&f.timeout, "timeout", 5*time.Minute, "bound on the drain")
	fs.StringVar(&f.out, "out", "", "write the result as JSON here (default: stdout)")
	fs.IntVar(&f.publishers, "publishers", 8, "concurrent publishers (each keeps its carts' commands in order)")
	fs.StringVar(&f.cartPrefix, "cart-prefix", "", "cart id prefix (default: bl-<scenario>-<random>)")
	fs.BoolVar(&f.keepCarts, "keep-carts", false, "leave the carts in the state store afterwards")
	fs.StringVar(&f.heapURL, "heap-url", "", "the consumer's /debug/pprof/heap, read every 2 s during the drain (WORKER_PPROF=true)")
	fs.StringVar(&f.heapProfile, "heap-profile", "", "write the heap profile taken at the drain's largest RSS here (needs -heap-url)")
	f.watch = loadkit.PIDs{}
	fs.Var(f.watch, "watch", "name=pid of a process whose CPU time to measure (repeatable)")
}

// resolve checks the flags and fills in the scenario's defaults.
func (f *backlogFlags) resolve() error {
	shape, ok := backlogShapeOf(f.scenario)
	if !ok {
		return usageError{fmt.Errorf("-scenario %q: want %s", f.scenario, strings.Join(report.BacklogScenarios(), ", "))}
	}
	if f.carts <= 0 {
		f.carts = shape.carts
	}
	if f.lines <= 0 {
		f.lines = shape.lines
	}
	if f.launch == "" {
		return usageError{errors.New("-launch is required")}
	}
	if f.publishers < 1 {
		f.publishers = 1
	}
	if f.cartPrefix == "" {
		f.cartPrefix = "bl-" + f.scenario + "-" + randomID()
	}
	return nil
}

// runBacklog publishes a backlog while the consumer is stopped, launches
// the consumer, times the drain until every command's outcome event has
// arrived, and checks every cart read back through Dapr.
func runBacklog(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("backlog", stderr)
	var f backlogFlags
	f.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := f.resolve(); err != nil {
		return err
	}
	res, err := drainBacklog(ctx, f, stderr)
	if res != nil {
		fmt.Fprintln(stderr, res.Summary())
		if werr := writeBacklogRun(res, f.out, stdout); werr != nil {
			return werr
		}
	}
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !res.Complete() {
		return fmt.Errorf("BACKLOG %s %s round %d FAILED: %s", res.Mode, res.Scenario, res.Round, res.Failure())
	}
	return nil
}

// writeBacklogRun writes the drain as JSON to out, or to stdout when out is
// "".
func writeBacklogRun(res *report.BacklogRun, out string, stdout io.Writer) error {
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encoding the drain: %w", err)
	}
	if out == "" {
		_, _ = stdout.Write(append(b, '\n'))
		return nil
	}
	return writeFileAtomic(out, b)
}

// eventWatch counts the outcome events of the backlog's commands.
type eventWatch struct {
	mu      sync.Mutex
	want    map[string]bool // command id → outcome seen
	refusal string          // the rejection code the scenario expects
	// applied are the ids applied (duplicates too: a replay of an applied
	// command); the totals check expects exactly their lines.
	applied           map[string]bool
	seen              int
	refused, rejected int
	duplicates        int
	first, last       time.Time
	examples          []string
	done              chan struct{}
	closeOnce         sync.Once
	total             int
}

func newEventWatch(ids []string, refusal string) *eventWatch {
	w := &eventWatch{want: make(map[string]bool, len(ids)), applied: make(map[string]bool, len(ids)),
		refusal: refusal, done: make(chan struct{}), total: len(ids)}
	for _, id := range ids {
		w.want[id] = false
	}
	return w
}

func (w *eventWatch) handle(m *nats.Msg) {
	now := time.Now()
	var ev command.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	seen, ours := w.want[ev.CommandID]
	if !ours || seen {
		return
	}
	w.want[ev.CommandID] = true
	w.seen++
	if w.first.IsZero() {
		w.first = now
	}
	w.last = now
	switch ev.Outcome {
	case command.OutcomeApplied:
		w.applied[ev.CommandID] = true
		if ev.Duplicate {
			w.duplicates++
		}
	default:
		if w.refusal != "" && ev.Error != nil && ev.Error.Code == w.refusal {
			w.refused++
			break
		}
		w.rejected++
		if len(w.examples) < 5 {
			msg := string(ev.Outcome)
			if ev.Error != nil {
				msg += ": " + ev.Error.Code + ": " + ev.Error.Message
			}
			w.examples = append(w.examples, fmt.Sprintf("%s %s on %s: %s", ev.Type, ev.CommandID, ev.CartID, msg))
		}
	}
	if w.seen == w.total {
		w.closeOnce.Do(func() { close(w.done) })
	}
}

func (w *eventWatch) snapshot() (seen int, first, last time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen, w.first, w.last
}

// backlogCommands are the commands of the backlog, per cart in order.
func backlogCommands(prefix string, carts, lines int) [][]command.Command {
	out := make([][]command.Command, carts)
	for c := range carts {
		cart := fmt.Sprintf("%s-%d", prefix, c)
		cmds := make([]command.Command, 0, lines+1)
		cache := publisher.CacheCommand(cart, publisher.NewCart{
			TenantID: "T0001", StoreCode: "S0001", TerminalNo: 1, Document: loadkit.CartHeader(c + 1),
		})
		cache.ID = fmt.Sprintf("%s-%d-0", prefix, c)
		cmds = append(cmds, cache)
		for l := 1; l <= lines; l++ {
			it := loadkit.ItemFor(l)
			add := publisher.AddItemCommand(cart, command.Item{
				ItemCode: it.ItemCode, Quantity: it.Quantity, UnitPrice: money.FromInt(it.UnitPrice),
				Description: it.Description, TaxCode: it.TaxCode, CategoryCode: it.CategoryCode,
			})
			add.ID = fmt.Sprintf("%s-%d-%d", prefix, c, l)
			cmds = append(cmds, add)
		}
		out[c] = cmds
	}
	return out
}

// expectedSubtotal is the subtotal of a cart with the given add-items.
func expectedSubtotal(lines []int) money.Amount {
	var sum int64
	for _, l := range lines {
		it := loadkit.ItemFor(l)
		sum += it.UnitPrice * int64(it.Quantity)
	}
	return money.FromInt(sum)
}

// checkIdle fails when any consumer of the command stream still has
// commands to deliver: a backlog left by an earlier run would be timed too.
func checkIdle(ctx context.Context, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, command.StreamCommands)
	if err != nil {
		return fmt.Errorf("stream %s (was the consumer started once, to create it?): %w", command.StreamCommands, err)
	}
	lister := st.ListConsumers(ctx)
	var busy []string
	for ci := range lister.Info() {
		if n := ci.NumPending + uint64(ci.NumAckPending); n > 0 {
			busy = append(busy, fmt.Sprintf("%s: %d", ci.Name, n))
		}
	}
	if err := lister.Err(); err != nil {
		return fmt.Errorf("list consumers of %s: %w", command.StreamCommands, err)
	}
	if len(busy) > 0 {
		slices.Sort(busy)
		return fmt.Errorf("consumers of %s still have commands pending before the backlog (%s): is a consumer still running?",
			command.StreamCommands, strings.Join(busy, ", "))
	}
	return nil
}

func publishBacklog(ctx context.Context, pub *publisher.Publisher, cmds [][]command.Command, publishers int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, publishers)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine [][]command.Command
			for c := p; c < len(cmds); c += publishers {
				mine = append(mine, cmds[c])
			}
			for l := 0; len(mine) > 0 && l < len(mine[0]); l++ {
				for _, cart := range mine {
					pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
					r, err := pub.Publish(pctx, cart[l])
					pcancel()
					if err == nil && r.Duplicate {
						err = fmt.Errorf("command %s was dropped as a duplicate", cart[l].ID)
					}
					if err != nil {
						errs <- err
						cancel()
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// storedCart is what the totals check reads of a stored cart.
type storedCart struct {
	LineItems []struct {
		LineNo   int    `json:"line_no"`
		ItemCode string `json:"item_code"`
	} `json:"line_items"`
	Subtotal money.Amount `json:"subtotal_amount"`
}

// checkTotals reads every cart of the backlog and compares its lines and
// subtotal with what was applied of what was published: applied(c, l)
// reports whether cart c's add-item l was (every one, in a drain that
// refuses none).
func checkTotals(ctx context.Context, client *statepool.Client, res *report.BacklogRun, prefix string, applied func(c, line int) bool) {
	var mu sync.Mutex
	var bad []string
	nbad, checked := 0, 0
	note := func(msg string) {
		mu.Lock()
		defer mu.Unlock()
		nbad++
		if len(bad) < 10 {
			bad = append(bad, msg)
		}
	}
	forEachCart(res.Carts, func(c int) {
		cart := fmt.Sprintf("%s-%d", prefix, c)
		gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		e, err := client.Get(gctx, cart)
		cancel()
		mu.Lock()
		checked++
		mu.Unlock()
		if err != nil {
			note(fmt.Sprintf("%s: %v", cart, err))
			return
		}
		var doc storedCart
		if err := json.Unmarshal(e.Value, &doc); err != nil {
			note(fmt.Sprintf("%s: %v", cart, err))
			return
		}
		var lines []int
		for l := 1; l <= res.AddItemsPerCart; l++ {
			if applied(c, l) {
				lines = append(lines, l)
			}
		}
		if n := len(doc.LineItems); n != len(lines) {
			note(fmt.Sprintf("%s: %d lines, %d applied of %d published", cart, n, len(lines), res.AddItemsPerCart))
			return
		}
		for i, l := range doc.LineItems {
			if it := loadkit.ItemFor(lines[i]); l.LineNo != i+1 || l.ItemCode != it.ItemCode {
				note(fmt.Sprintf("%s: line %d is line_no %d item %s, applied %s", cart, i+1, l.LineNo, l.ItemCode, it.ItemCode))
				break
			}
		}
		if want := expectedSubtotal(lines); doc.Subtotal != want {
			note(fmt.Sprintf("%s: subtotal %s, published lines sum to %s", cart, doc.Subtotal, want))
		}
	})
	res.TotalsChecked = checked
	res.TotalsOK = nbad == 0 && checked == res.Carts
	if nbad > len(bad) {
		bad = append(bad, fmt.Sprintf("... %d carts in all", nbad))
	}
	res.Mismatches = bad
}

// deleteCarts removes the backlog's carts, best effort, so that Redis does
// not grow from round to round.
func deleteCarts(ctx context.Context, client *statepool.Client, prefix string, carts int) {
	forEachCart(carts, func(c int) {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = client.Delete(dctx, fmt.Sprintf("%s-%d", prefix, c), "")
		cancel()
	})
}

// forEachCart calls fn for carts 0..carts-1 on 8 goroutines, enough to
// overlap the state calls without loading daprd, and returns when every
// call has.
func forEachCart(carts int, fn func(c int)) {
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for c := range jobs {
				fn(c)
			}
		})
	}
	for c := range carts {
		jobs <- c
	}
	close(jobs)
	wg.Wait()
}
