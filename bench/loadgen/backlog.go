package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/bench/loadkit"
	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// Backlog scenarios: the commands a stopped consumer finds waiting.
const (
	// BacklogHot is a few hot carts with many lines each: 50 carts, a
	// cache and 100 add-items each.
	BacklogHot = "hot"
	// BacklogWide is many carts with the scenario's 20 lines: 1,000 carts,
	// a cache and 20 add-items each.
	BacklogWide = "wide"
	// BacklogMany and BacklogHuge are the memory drains (make
	// bench-memory): 200 carts of 100 add-items, and 2 carts of 10,000
	// add-items each, which grow past WORKER_MAX_CART_BYTES.
	BacklogMany = "many"
	BacklogHuge = "huge"
)

// backlogShape is a backlog scenario's default carts and add-items per
// cart. refusal, when set, is the one rejection code its drain may meet:
// the huge carts reach the cart size limit, and every add-item past it is
// refused.
type backlogShape struct {
	carts, lines int
	refusal      string
}

// backlogShapes are the backlog scenarios.
var backlogShapes = map[string]backlogShape{
	BacklogHot:  {carts: 50, lines: 100},
	BacklogWide: {carts: 1000, lines: 20},
	BacklogMany: {carts: 200, lines: 100},
	BacklogHuge: {carts: 2, lines: 10000, refusal: command.CodeCartTooLarge},
}

// backlogScenarios lists them in report order.
var backlogScenarios = []string{BacklogHot, BacklogWide, BacklogMany, BacklogHuge}

// metricBatchSize is the worker's histogram of commands per
// read-modify-write, and metricApplyCarts of carts per apply.
const (
	metricBatchSize  = "cartworker_batch_size"
	metricApplyCarts = "cartworker_apply_carts"
)

// BacklogRun is one drain of one backlog scenario by one consumer, as
// `loadgen backlog` writes it and the report reads it.
type BacklogRun struct {
	Kind     string `json:"kind"` // "backlog"
	Mode     string `json:"mode"`
	Scenario string `json:"scenario"`
	Round    int    `json:"round"`
	Client   string `json:"client,omitempty"`
	// Carts, AddItemsPerCart and Commands are what was published: a
	// cache and AddItemsPerCart add-items per cart.
	Carts           int       `json:"carts"`
	AddItemsPerCart int       `json:"add_items_per_cart"`
	Commands        int       `json:"commands"`
	StartedAt       time.Time `json:"started_at"`
	// PublishS is how long publishing the backlog took (all stored).
	PublishS float64 `json:"publish_s"`
	// ReadyS is the time from launching the consumer to its readiness
	// (or to its first outcome event when that came first); FirstEventS
	// to its first outcome event.
	ReadyS      float64 `json:"ready_s"`
	FirstEventS float64 `json:"first_event_s"`
	// DrainS is from readiness to the last command's outcome event, and
	// CommandsPerS = Commands / DrainS. WallS and WallCommandsPerS count
	// from the launch instead, process start-up included.
	DrainS           float64 `json:"drain_s"`
	CommandsPerS     float64 `json:"commands_per_s"`
	WallS            float64 `json:"wall_s"`
	WallCommandsPerS float64 `json:"wall_commands_per_s"`
	// Outcome events seen, by kind, for the published commands. Refused
	// are the rejections the scenario expects (RefusalCode: add-items past
	// the cart size limit), Rejected every other.
	Applied     int    `json:"applied"`
	Refused     int    `json:"refused,omitempty"`
	RefusalCode string `json:"refusal_code,omitempty"`
	Rejected    int    `json:"rejected"`
	Duplicates  int    `json:"duplicates"`
	// Batch is the consumer's cartworker_batch_size histogram over the
	// drain; nil when it has none (BatchNote says why).
	Batch     *BatchSizes `json:"batch,omitempty"`
	BatchNote string      `json:"batch_note,omitempty"`
	// ApplyCarts is the consumer's cartworker_apply_carts histogram over
	// the drain, the carts applied together; nil when it has none.
	ApplyCarts *BatchSizes `json:"apply_carts,omitempty"`
	// Process figures from launch to the end of the drain. PeakRSSMiB is
	// the consumer's VmHWM, the kernel's record of its largest RSS (the
	// largest VmRSS sampled every 100 ms where /proc has no VmHWM).
	PeakRSSMiB  float64            `json:"peak_rss_mib"`
	CPUPct      float64            `json:"cpu_pct"`
	HostBusyPct float64            `json:"host_busy_pct"`
	ProcCPUS    map[string]float64 `json:"proc_cpu_s,omitempty"`
	// TotalsOK: every cart read back through Dapr has exactly the lines
	// published, in order, and their subtotal. TotalsChecked carts were
	// read; Mismatches lists the first differences.
	TotalsOK      bool     `json:"totals_ok"`
	TotalsChecked int      `json:"totals_checked"`
	Mismatches    []string `json:"mismatches,omitempty"`
	// HeapProfile is the heap profile taken during the drain at the
	// largest RSS (-heap-profile), if one was.
	HeapProfile string `json:"heap_profile,omitempty"`
	// Error is why the drain did not complete, if it did not.
	Error    string   `json:"error,omitempty"`
	Examples []string `json:"rejection_examples,omitempty"`
}

// Complete reports whether every command was applied and the totals
// checked out.
func (b *BacklogRun) Complete() bool {
	return b.Error == "" && b.TotalsOK && b.Applied+b.Refused == b.Commands && b.Rejected == 0
}

// BatchSizes is a Prometheus histogram of commands per read-modify-write.
type BatchSizes struct {
	// Buckets are cumulative, as Prometheus exposes them.
	Buckets []Bucket `json:"buckets"`
	// Sum is the commands, Count the read-modify-writes.
	Sum   float64 `json:"sum"`
	Count float64 `json:"count"`
	Mean  float64 `json:"mean"`
	// P50, P90 and Max are bucket bounds: the quantile is at most this
	// ("+Inf" past the last bound).
	P50 string `json:"p50_le"`
	P90 string `json:"p90_le"`
	Max string `json:"max_le"`
}

// Bucket is one cumulative bucket of a histogram.
type Bucket struct {
	LE    string  `json:"le"`
	Count float64 `json:"count"`
}

// parseHistogram reads the histogram metric (cartworker_batch_size,
// cartworker_apply_carts) from the Prometheus text format, summed over any
// labels besides le; nil when it is absent.
func parseHistogram(r io.Reader, metric string) (*BatchSizes, error) {
	b, err := io.ReadAll(io.LimitReader(r, 8<<20))
	if err != nil {
		return nil, err
	}
	buckets := map[string]float64{}
	var h BatchSizes
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		name, v, ok := splitSample(line)
		if !ok {
			continue
		}
		switch name {
		case metric + "_bucket":
			le := labelValue(line, "le")
			if le == "" {
				continue
			}
			buckets[le] += v
			found = true
		case metric + "_sum":
			h.Sum += v
			found = true
		case metric + "_count":
			h.Count += v
			found = true
		}
	}
	if !found {
		return nil, nil
	}
	for le, c := range buckets {
		h.Buckets = append(h.Buckets, Bucket{LE: le, Count: c})
	}
	sort.Slice(h.Buckets, func(i, j int) bool { return leValue(h.Buckets[i].LE) < leValue(h.Buckets[j].LE) })
	h.finish()
	return &h, nil
}

// sub returns h minus an earlier reading of the same process.
func (h *BatchSizes) sub(before *BatchSizes) *BatchSizes {
	if before == nil {
		return h
	}
	out := &BatchSizes{Sum: h.Sum - before.Sum, Count: h.Count - before.Count}
	prev := map[string]float64{}
	for _, b := range before.Buckets {
		prev[b.LE] = b.Count
	}
	for _, b := range h.Buckets {
		out.Buckets = append(out.Buckets, Bucket{LE: b.LE, Count: b.Count - prev[b.LE]})
	}
	out.finish()
	return out
}

func (h *BatchSizes) finish() {
	h.Mean, h.P50, h.P90, h.Max = 0, "", "", ""
	if h.Count <= 0 {
		return
	}
	h.Mean = h.Sum / h.Count
	h.P50, h.P90, h.Max = h.quantile(0.5), h.quantile(0.9), h.quantile(1)
}

// quantile is the bound of the first bucket holding at least q of the
// observations.
func (h *BatchSizes) quantile(q float64) string {
	for _, b := range h.Buckets {
		if b.Count >= q*h.Count-1e-9 {
			return b.LE
		}
	}
	return "+Inf"
}

func leValue(le string) float64 {
	if le == "+Inf" {
		return math.Inf(1)
	}
	v, err := strconv.ParseFloat(le, 64)
	if err != nil {
		return math.Inf(1)
	}
	return v
}

// labelValue returns the value of label name in a sample line.
func labelValue(line, name string) string {
	open := strings.IndexByte(line, '{')
	end := strings.LastIndexByte(line, '}')
	if open < 0 || end < open {
		return ""
	}
	for _, kv := range strings.Split(line[open+1:end], ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if ok && k == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
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

// runBacklog publishes a backlog while the consumer is stopped, launches
// the consumer, times the drain until every command's outcome event has
// arrived, and checks every cart read back through Dapr.
func runBacklog(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("backlog", stderr)
	var f backlogFlags
	fs.StringVar(&f.natsURL, "nats", "nats://127.0.0.1:4222", "NATS URL of the consumer under test (stopped: this command launches it)")
	fs.StringVar(&f.prefix, "prefix", command.DefaultPrefix, "subject prefix (CART_SUBJECT_PREFIX)")
	fs.StringVar(&f.dapr, "dapr", "http://127.0.0.1:3500", "daprd HTTP endpoint, to read the carts back")
	fs.StringVar(&f.store, "store", statepool.DefaultStoreName, "Dapr state store")
	fs.StringVar(&f.scenario, "scenario", BacklogHot, "hot (50 carts x 100 add-items), wide (1,000 x 20), many (200 x 100) or huge (2 x 10,000, past the cart size limit)")
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
	if err := parse(fs, args); err != nil {
		return err
	}
	shape, ok := backlogShapes[f.scenario]
	if !ok {
		return usageError{fmt.Errorf("-scenario %q: want %s", f.scenario, strings.Join(backlogScenarios, ", "))}
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
	res, err := drainBacklog(ctx, f, stderr)
	if res != nil {
		fmt.Fprintln(stderr, res.summary())
		b, merr := json.Marshal(res)
		if merr != nil {
			return merr
		}
		if f.out == "" {
			_, _ = stdout.Write(append(b, '\n'))
		} else if werr := writeFileAtomic(f.out, b); werr != nil {
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

// Failure says why a drain failed.
func (b *BacklogRun) Failure() string {
	var why []string
	if b.Error != "" {
		why = append(why, b.Error)
	}
	if b.Applied+b.Refused != b.Commands {
		why = append(why, fmt.Sprintf("%d of %d commands applied (%d refused as %s)", b.Applied, b.Commands, b.Refused, cmp.Or(b.RefusalCode, "expected")))
	}
	if b.Rejected > 0 {
		why = append(why, fmt.Sprintf("%d rejected", b.Rejected))
	}
	if !b.TotalsOK {
		why = append(why, fmt.Sprintf("TOTALS WRONG on carts read back through Dapr (%d checked): %s", b.TotalsChecked, strings.Join(b.Mismatches, "; ")))
	}
	return strings.Join(why, "; ")
}

func (b *BacklogRun) summary() string {
	batch := "batch n/a"
	if b.Batch != nil {
		batch = fmt.Sprintf("batch mean %.2f p50≤%s p90≤%s max≤%s", b.Batch.Mean, b.Batch.P50, b.Batch.P90, b.Batch.Max)
	}
	if b.ApplyCarts != nil {
		batch += fmt.Sprintf("; carts per apply mean %.2f max≤%s", b.ApplyCarts.Mean, b.ApplyCarts.Max)
	}
	totals := "totals ok"
	if !b.TotalsOK {
		totals = "TOTALS WRONG"
	}
	if b.Refused > 0 {
		totals += fmt.Sprintf(" (%d refused as %s)", b.Refused, b.RefusalCode)
	}
	return fmt.Sprintf("%-11s backlog %-4s r%d: %d commands (%d carts x %d add-items) drained in %.2fs: %.0f commands/s (%.0f/s from launch); %s; peak rss %.1fMiB; %s",
		b.Mode, b.Scenario, b.Round, b.Commands, b.Carts, b.AddItemsPerCart, b.DrainS, b.CommandsPerS, b.WallCommandsPerS,
		batch, b.PeakRSSMiB, totals)
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

func drainBacklog(ctx context.Context, f backlogFlags, stderr io.Writer) (*BacklogRun, error) {
	res := &BacklogRun{
		Kind: "backlog", Mode: f.mode, Scenario: f.scenario, Round: f.round, Client: f.client,
		Carts: f.carts, AddItemsPerCart: f.lines, Commands: f.carts * (f.lines + 1),
		RefusalCode: backlogShapes[f.scenario].refusal, StartedAt: time.Now().UTC(),
	}
	nc, err := nats.Connect(f.natsURL, nats.Name("cartworker-loadgen-backlog"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS %s: %w", f.natsURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if err := checkIdle(ctx, js); err != nil {
		return nil, err
	}
	pub, err := publisher.New(js, nc, publisher.WithPrefix(f.prefix))
	if err != nil {
		return nil, err
	}
	defer pub.Close()

	cmds := backlogCommands(f.cartPrefix, f.carts, f.lines)
	var ids []string
	for _, c := range cmds {
		for _, cmd := range c {
			ids = append(ids, cmd.ID)
		}
	}
	watch := newEventWatch(ids, backlogShapes[f.scenario].refusal)
	sub, err := nc.Subscribe(pub.Subjects().Events(), watch.handle)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		return nil, err
	}

	// Publish: each publisher owns some carts and sends them round-robin,
	// line by line, so that a cart's commands are stored in order and the
	// carts interleave as a busy store's would.
	t := time.Now()
	if err := publishBacklog(ctx, pub, cmds, f.publishers); err != nil {
		return nil, err
	}
	res.PublishS = time.Since(t).Seconds()
	fmt.Fprintf(stderr, "loadgen: published %d commands (%d carts) in %.1fs; launching the consumer\n", res.Commands, f.carts, res.PublishS)

	// Launch the consumer and watch it drain.
	var logOut io.Writer = io.Discard
	if f.launchLog != "" {
		lf, err := os.Create(f.launchLog)
		if err != nil {
			return nil, err
		}
		defer lf.Close()
		logOut = lf
	}
	proc := exec.Command(f.launch)
	proc.Stdout, proc.Stderr = logOut, logOut
	launched := time.Now()
	if err := proc.Start(); err != nil {
		return nil, fmt.Errorf("launch %s: %w", f.launch, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- proc.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = proc.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(25 * time.Second):
			_ = proc.Process.Kill()
			<-exited
		}
	}
	defer stop()
	sampler := loadkit.StartSampler(proc.Process.Pid, 100*time.Millisecond, f.watch)
	heap := startHeapProfiles(ctx, f.heapURL, proc.Process.Pid)

	var ready time.Time
	readyCh := make(chan time.Time, 1)
	rctx, cancelReady := context.WithCancel(ctx)
	defer cancelReady()
	if f.readyURL != "" {
		go func() {
			for rctx.Err() == nil {
				if probeHTTP(rctx, f.readyURL, 200) == nil {
					readyCh <- time.Now()
					return
				}
				select {
				case <-rctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
	}

	timer := time.NewTimer(f.timeout)
	defer timer.Stop()
wait:
	for {
		select {
		case ready = <-readyCh:
		case <-watch.done:
			break wait
		case err := <-exited:
			stopped = true
			res.Error = fmt.Sprintf("the consumer exited during the drain (%v); see its log", err)
			break wait
		case <-timer.C:
			res.Error = fmt.Sprintf("timed out after %s", f.timeout)
			break wait
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	cancelReady()
	if ready.IsZero() {
		select {
		case ready = <-readyCh:
		default:
		}
	}
	seen, first, last := watch.snapshot()

	// The process was started for this drain, so its histogram is the
	// drain's.
	res.BatchNote = "n/a: no -metrics URL (not the worker)"
	if f.metricsURL != "" && !stopped {
		switch h, err := scrapeHistogram(ctx, f.metricsURL, metricBatchSize); {
		case err != nil:
			res.BatchNote = "n/a: " + err.Error()
		case h == nil:
			res.BatchNote = "n/a: no " + metricBatchSize + " in the consumer's metrics"
		default:
			res.Batch, res.BatchNote = h, ""
			res.ApplyCarts, _ = scrapeHistogram(ctx, f.metricsURL, metricApplyCarts)
		}
	}
	heap.stop()
	var pr loadkit.Run
	sampler.Stop(&pr)
	res.PeakRSSMiB = pr.WorkerRSSMaxMiB
	if kib, err := loadkit.ProcHWMKiB(proc.Process.Pid); err == nil && !stopped {
		res.PeakRSSMiB = max(res.PeakRSSMiB, float64(kib)/1024)
	}
	stop()
	if f.heapProfile != "" {
		if err := heap.write(f.heapProfile); err != nil {
			fmt.Fprintf(stderr, "loadgen: no heap profile: %v\n", err)
		} else {
			res.HeapProfile = f.heapProfile
		}
	}
	if pr.ElapsedS > 0 {
		res.CPUPct = pr.WorkerCPUS / pr.ElapsedS * 100
	}
	res.HostBusyPct, res.ProcCPUS = pr.HostBusyPct, pr.ProcCPUS

	watch.mu.Lock()
	res.Applied, res.Refused, res.Rejected, res.Duplicates = len(watch.applied), watch.refused, watch.rejected, watch.duplicates
	res.Examples = append([]string(nil), watch.examples...)
	applied := maps.Clone(watch.applied)
	watch.mu.Unlock()
	if seen > 0 {
		start := first
		if !ready.IsZero() && ready.Before(first) {
			start = ready
		}
		res.ReadyS = start.Sub(launched).Seconds()
		res.FirstEventS = first.Sub(launched).Seconds()
		res.WallS = last.Sub(launched).Seconds()
		res.DrainS = last.Sub(start).Seconds()
		if seen == res.Commands && res.DrainS > 0 {
			res.CommandsPerS = float64(res.Commands) / res.DrainS
			res.WallCommandsPerS = float64(res.Commands) / res.WallS
		}
	}

	// Read every cart back through Dapr.
	client, err := statepool.New(statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: f.dapr, StoreName: f.store, Mode: statepool.ModePooled})
	if err != nil {
		return res, err
	}
	defer client.Close()
	checkTotals(ctx, client, res, f.cartPrefix, func(c, line int) bool { return applied[fmt.Sprintf("%s-%d-%d", f.cartPrefix, c, line)] })
	if !f.keepCarts {
		deleteCarts(ctx, client, f.cartPrefix, f.carts)
	}
	return res, nil
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

// scrapeHistogram reads the histogram metric from a /metrics URL.
func scrapeHistogram(ctx context.Context, url, metric string) (*BatchSizes, error) {
	body, err := getBody(ctx, url)
	if err != nil {
		return nil, err
	}
	return parseHistogram(strings.NewReader(body), metric)
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
func checkTotals(ctx context.Context, client *statepool.Client, res *BacklogRun, prefix string, applied func(c, line int) bool) {
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

// readBacklog reads the drains written by `loadgen backlog` in dir.
func readBacklog(dir string) ([]*BacklogRun, error) {
	if dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*BacklogRun
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(dir + "/" + e.Name())
		if err != nil {
			return nil, err
		}
		var r BacklogRun
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		if r.Kind != "backlog" || r.Mode == "" || r.Scenario == "" {
			return nil, fmt.Errorf("%s: not a backlog run", e.Name())
		}
		out = append(out, &r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Scenario != b.Scenario {
			return slices.Index(backlogScenarios, a.Scenario) < slices.Index(backlogScenarios, b.Scenario)
		}
		if a.Mode != b.Mode {
			return modeIndex(a.Mode) < modeIndex(b.Mode)
		}
		return a.Round < b.Round
	})
	return out, nil
}

func modeIndex(m string) int {
	if i := slices.Index(loadkit.Modes, m); i >= 0 {
		return i
	}
	return len(loadkit.Modes)
}
