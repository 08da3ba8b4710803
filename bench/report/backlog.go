package report

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cartworker/cartworker/bench/loadkit"
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

// BacklogScenarios lists the backlog scenarios in report order.
func BacklogScenarios() []string {
	return []string{BacklogHot, BacklogWide, BacklogMany, BacklogHuge}
}

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

// NewBatchSizes is the histogram of buckets (cumulative, in any order)
// with its sum and count, its mean and quantiles worked out.
func NewBatchSizes(buckets []Bucket, sum, count float64) *BatchSizes {
	h := &BatchSizes{Buckets: slices.Clone(buckets), Sum: sum, Count: count}
	sort.Slice(h.Buckets, func(i, j int) bool { return leValue(h.Buckets[i].LE) < leValue(h.Buckets[j].LE) })
	h.finish()
	return h
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

// finish works out the mean and quantiles from the buckets, sum and count.
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

// leValue is the bound of a bucket; a bound that is not a number sorts
// last, as +Inf does.
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

// Summary is the drain in one line, as `loadgen backlog` prints it.
func (b *BacklogRun) Summary() string {
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

// Backlog is the backlog-drain scenarios.
type Backlog struct {
	// CeilingAddItemPerS is the HTTP ceiling's add-items per second at
	// saturation, the yardstick of the drain rates.
	CeilingAddItemPerS *float64         `json:"ceiling_add_item_per_s"`
	Summary            []BacklogSummary `json:"summary"`
	Runs               []*BacklogRun    `json:"runs"`
	// Hot and Wide are the worker as shipped (pooled) draining each
	// scenario, nil when it was not run.
	Hot  *Drain `json:"hot,omitempty"`
	Wide *Drain `json:"wide,omitempty"`
}

// Drain is one scenario drained by the worker as shipped.
type Drain struct {
	// DrainPerS is its commands per second, the median over rounds.
	DrainPerS *float64 `json:"drain_per_s"`
	// MeanBatch is the mean number of commands per read-modify-write.
	MeanBatch *float64 `json:"mean_batch"`
	// MeanApplyCarts is the mean number of carts applied together.
	MeanApplyCarts *float64 `json:"mean_apply_carts,omitempty"`
	// PeakRSSMiB is the worker's largest RSS during the drains.
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// DaprPubSubDrainPerS is the Dapr pub/sub peer's drain of the same
	// scenario, commands per second: the better of its modes (without and
	// with bulk subscribe), a drain that left every cart right first; nil
	// when it did not drain it.
	DaprPubSubDrainPerS *float64 `json:"dapr_pubsub_drain_per_s"`
}

// BacklogSummary is one scenario drained by one consumer, over its rounds.
type BacklogSummary struct {
	Scenario        string `json:"scenario"`
	Mode            string `json:"mode"`
	Client          string `json:"client,omitempty"`
	Carts           int    `json:"carts"`
	AddItemsPerCart int    `json:"add_items_per_cart"`
	Commands        int    `json:"commands"`
	Rounds          int    `json:"rounds"`
	// CommandsPerS is the median over rounds of commands per second, from
	// readiness to the last outcome event; CommandsPerSRounds each
	// round's (0 for a round that did not finish).
	CommandsPerS       *float64  `json:"commands_per_s"`
	CommandsPerSRounds []float64 `json:"commands_per_s_rounds"`
	// SpreadPct is how much the rounds' rates move, (max-min)/median %.
	SpreadPct *float64 `json:"commands_per_s_spread_pct"`
	// WallCommandsPerS counts from the launch instead (median).
	WallCommandsPerS *float64 `json:"wall_commands_per_s"`
	// OverCeiling is CommandsPerS divided by the HTTP ceiling's add-items
	// per second at saturation.
	OverCeiling *float64 `json:"over_ceiling_add_item_rate"`
	// Batch is the rounds' batch-size histograms added together; nil
	// when the consumer exposes none (BatchNote says why).
	Batch     *BatchSizes `json:"batch,omitempty"`
	BatchNote string      `json:"batch_note,omitempty"`
	// ApplyCarts is the rounds' carts-per-apply histograms added
	// together; nil when the consumer exposes none.
	ApplyCarts *BatchSizes `json:"apply_carts,omitempty"`
	// PeakRSSMiB is the largest RSS of the consumer over the rounds.
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// CPUPct is the consumer's CPU in % of one core, median over rounds.
	CPUPct float64 `json:"cpu_pct"`
	// TotalsOK: every round applied every command and every cart read
	// back with exactly the published lines and subtotal.
	TotalsOK bool `json:"totals_ok"`
	// Failed counts the rounds that did not (see the runs' errors and
	// mismatches).
	Failed   int `json:"failed_rounds"`
	Rejected int `json:"rejected"`
}

// summarizeBacklog aggregates the drains by scenario and mode.
func summarizeBacklog(runs []*BacklogRun, ceiling *float64) []BacklogSummary {
	type key struct{ scenario, mode string }
	groups := map[key][]*BacklogRun{}
	var keys []key
	for _, r := range runs {
		k := key{r.Scenario, r.Mode}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
	}
	var out []BacklogSummary
	for _, k := range keys {
		rs := groups[k]
		s := BacklogSummary{Scenario: k.scenario, Mode: k.mode, Rounds: len(rs), TotalsOK: true}
		var rates, walls, cpus []float64
		var batch *BatchSizes
		batchNote := ""
		for _, r := range rs {
			s.Client = r.Client
			s.Carts, s.AddItemsPerCart, s.Commands = r.Carts, r.AddItemsPerCart, r.Commands
			s.CommandsPerSRounds = append(s.CommandsPerSRounds, r.CommandsPerS)
			if r.CommandsPerS > 0 {
				rates = append(rates, r.CommandsPerS)
				walls = append(walls, r.WallCommandsPerS)
			}
			cpus = append(cpus, r.CPUPct)
			s.PeakRSSMiB = max(s.PeakRSSMiB, r.PeakRSSMiB)
			s.Rejected += r.Rejected
			if !r.Complete() {
				s.Failed++
				s.TotalsOK = false
			}
			if r.ApplyCarts != nil {
				s.ApplyCarts = addBatch(s.ApplyCarts, r.ApplyCarts)
			}
			if r.Batch != nil {
				batch = addBatch(batch, r.Batch)
			} else if batchNote == "" {
				batchNote = r.BatchNote
			}
		}
		if len(rates) > 0 {
			s.CommandsPerS = f64(loadkit.Median(rates))
			s.WallCommandsPerS = f64(loadkit.Median(walls))
			s.SpreadPct = loadkit.Spread(rates)
			s.OverCeiling = ratio(s.CommandsPerS, ceiling)
		}
		s.CPUPct = loadkit.Median(cpus)
		s.Batch = batch
		if batch == nil {
			s.BatchNote = batchNote
			if s.BatchNote == "" {
				s.BatchNote = "n/a"
			}
		}
		out = append(out, s)
	}
	return out
}

// addBatch adds two histograms of the same buckets.
func addBatch(a, b *BatchSizes) *BatchSizes {
	if a == nil {
		c := *b
		c.Buckets = slices.Clone(b.Buckets)
		return &c
	}
	out := &BatchSizes{Sum: a.Sum + b.Sum, Count: a.Count + b.Count}
	byLE := map[string]float64{}
	var les []string
	for _, h := range []*BatchSizes{a, b} {
		for _, bk := range h.Buckets {
			if _, ok := byLE[bk.LE]; !ok {
				les = append(les, bk.LE)
			}
			byLE[bk.LE] += bk.Count
		}
	}
	slices.SortFunc(les, func(x, y string) int {
		vx, vy := leValue(x), leValue(y)
		switch {
		case vx < vy:
			return -1
		case vx > vy:
			return 1
		}
		return 0
	})
	for _, le := range les {
		out.Buckets = append(out.Buckets, Bucket{LE: le, Count: byLE[le]})
	}
	out.finish()
	return out
}

// findBacklog returns the summary of scenario and mode.
func findBacklog(s []BacklogSummary, scenario, mode string) *BacklogSummary {
	for i := range s {
		if s[i].Scenario == scenario && s[i].Mode == mode {
			return &s[i]
		}
	}
	return nil
}

// drainOf returns the pooled worker's drain of scenario, nil if not run.
func drainOf(summary []BacklogSummary, scenario string) *Drain {
	for _, b := range summary {
		if b.Scenario != scenario || b.Mode != loadkit.ModePooled {
			continue
		}
		d := &Drain{DrainPerS: b.CommandsPerS, PeakRSSMiB: b.PeakRSSMiB}
		if p := bestDaprPubSubDrain(summary, scenario); p != nil {
			d.DaprPubSubDrainPerS = p.CommandsPerS
		}
		if b.Batch != nil && b.Batch.Count > 0 {
			d.MeanBatch = &b.Batch.Mean
		}
		if b.ApplyCarts != nil && b.ApplyCarts.Count > 0 {
			d.MeanApplyCarts = &b.ApplyCarts.Mean
		}
		return d
	}
	return nil
}

// ReadBacklog reads the drains that `loadgen backlog` wrote in dir, ordered
// by scenario, consumer and round; none when dir is "" or missing.
func ReadBacklog(dir string) ([]*BacklogRun, error) {
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
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
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
	scenarios := BacklogScenarios()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Scenario != b.Scenario {
			return slices.Index(scenarios, a.Scenario) < slices.Index(scenarios, b.Scenario)
		}
		if a.Mode != b.Mode {
			return modeIndex(a.Mode) < modeIndex(b.Mode)
		}
		return a.Round < b.Round
	})
	return out, nil
}

// modeIndex is where m comes in loadkit.Modes; unknown modes go last.
func modeIndex(m string) int {
	if i := slices.Index(loadkit.Modes, m); i >= 0 {
		return i
	}
	return len(loadkit.Modes)
}
