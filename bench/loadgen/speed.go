package main

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// This file computes the figures of "faster than a direct Dapr client":
// how much the paced p99 moves between rounds, the backlog drains, the
// Watermill peer at saturation, and the floors that compare them with the
// direct HTTP ceiling, all from one run.

// Floors of "faster than a direct Dapr client". Each is computed from
// medians over rounds.
const (
	// The worker as shipped at saturation: at least this share of the
	// HTTP ceiling's add-items per second.
	floorSatOverCeiling = 0.9
	// Hot-cart backlog drain, commands per second: at least this multiple
	// of the HTTP ceiling's add-items per second at saturation.
	floorHotDrainOverCeiling = 2.5
	// Paced 15-user add-item p99: at most this multiple of the ceiling's
	// at the same pacing.
	floorPacedP99OverCeiling = 1.5
	// The worker at saturation: at least this multiple of the Watermill
	// peer's add-items per second on the same state transport.
	floorWorkerOverWatermill = 1.3
	// floorPacedUsers is the paced point of the p99 floor.
	floorPacedUsers = 15
	// The worker as shipped at saturation: at most this much CPU per
	// command, in ms.
	floorCPUMSPerCommand = 0.45
	// Every cartworker process over the whole run, backlog drains
	// included: at most this RSS, in MiB.
	floorMaxRSSMiB = 64
)

// DefaultPacedSamples is the add-item samples a paced point should rest on
// (scripts/bench.sh sizes the windows for it; BENCH_PACED_SAMPLES).
const DefaultPacedSamples = 5000

// P99Spread is how much a paced point's add-item p99 moves between rounds.
type P99Spread struct {
	Mode  string `json:"mode"`
	Users int    `json:"users"`
	// Samples is the add-item samples over every round, SamplesRounds
	// each round's; Enough is Samples >= the target.
	Samples       int   `json:"samples"`
	SamplesRounds []int `json:"samples_rounds"`
	Enough        bool  `json:"enough_samples"`
	// WindowS is the measured window summed over rounds.
	WindowS     float64   `json:"window_s"`
	P99RoundsMS []float64 `json:"p99_rounds_ms"`
	MinMS       float64   `json:"p99_round_min_ms"`
	MedianMS    float64   `json:"p99_round_median_ms"`
	MaxMS       float64   `json:"p99_round_max_ms"`
	// SpreadPct is (max - min) / median of the rounds' p99, in per cent.
	SpreadPct *float64 `json:"p99_spread_pct"`
	// P99AllMS is the p99 of every round's samples pooled.
	P99AllMS float64 `json:"p99_all_rounds_ms"`
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

// WatermillSat is the Watermill peer against the worker at saturation, on
// the same state transport.
type WatermillSat struct {
	Protocol string `json:"protocol"`
	// WorkerMode is the worker mode on that transport (worker-grpc or
	// worker-http).
	WorkerMode           string   `json:"worker_mode"`
	WatermillAddItemPerS *float64 `json:"watermill_add_item_per_s"`
	WorkerAddItemPerS    *float64 `json:"worker_add_item_per_s"`
	WorkerOverWatermill  *float64 `json:"worker_over_watermill"`
	WatermillP99MS       *float64 `json:"watermill_add_item_p99_ms"`
	WorkerP99MS          *float64 `json:"worker_add_item_p99_ms"`
	WatermillRSSMiB      *float64 `json:"watermill_rss_mib"`
	WatermillCPUPct      *float64 `json:"watermill_cpu_pct"`
	WorkerRSSMiB         *float64 `json:"worker_rss_mib"`
	WorkerCPUPct         *float64 `json:"worker_cpu_pct"`
}

// pacedSpreads lists the add-item p99 spread of every paced point.
func pacedSpreads(points []loadkit.Point, target int) []P99Spread {
	var out []P99Spread
	for _, p := range points {
		if p.Scenario != loadkit.ScenarioPaced || p.Type != loadkit.TypeAddItem || p.Count == 0 {
			continue
		}
		out = append(out, P99Spread{
			Mode: p.Mode, Users: p.Users, Samples: p.Count, SamplesRounds: p.CountRounds,
			Enough: p.Count >= target, WindowS: p.WindowS, P99RoundsMS: p.P99RoundsMS,
			MinMS: p.P99RoundMinMS, MedianMS: p.P99RoundMedianMS, MaxMS: p.P99RoundMaxMS,
			SpreadPct: p.P99SpreadPct, P99AllMS: p.P99MS,
		})
	}
	return out
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

// workerModeFor is the worker mode on a state transport.
func workerModeFor(protocol string) string {
	if protocol == "http" {
		return loadkit.ModeWorkerHTTP
	}
	return loadkit.ModeWorkerGRPC
}

// roundRatios divides two modes' per-round figures, round by round (the
// modes of a round ran next to each other).
func roundRatios(a, b []float64) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			out = append(out, a[i]/b[i])
		}
	}
	return out
}

// computeSpeed derives the figures and floors of "faster than a direct
// Dapr client" from the points, the drains and the saturation figures
// computeResults derived, and returns the largest cartworker RSS of the run.
func computeSpeed(points []loadkit.Point, backlog []*BacklogRun, sat Saturation, protocol string) (WatermillSat, Backlog, []Floor, *float64) {
	satUsers := sat.Users
	cl, add := loadkit.ScenarioClosed, loadkit.TypeAddItem
	pt := func(mode, sc string, users int) *loadkit.Point {
		p, ok := loadkit.Find(points, mode, sc, users, add)
		if !ok || p.Count == 0 {
			return nil
		}
		return &p
	}
	if protocol == "" {
		protocol = "grpc"
	}
	wm := WatermillSat{Protocol: protocol, WorkerMode: workerModeFor(protocol)}
	if satUsers > 0 {
		wm.WatermillAddItemPerS = field(points, loadkit.ModeWatermill, cl, satUsers, add, thr)
		wm.WorkerAddItemPerS = field(points, wm.WorkerMode, cl, satUsers, add, thr)
		wm.WorkerOverWatermill = ratio(wm.WorkerAddItemPerS, wm.WatermillAddItemPerS)
		wm.WatermillP99MS = field(points, loadkit.ModeWatermill, cl, satUsers, add, p99)
		wm.WorkerP99MS = field(points, wm.WorkerMode, cl, satUsers, add, p99)
		wm.WatermillRSSMiB = field(points, loadkit.ModeWatermill, cl, satUsers, add, func(p loadkit.Point) float64 { return p.WorkerRSSMiB })
		wm.WatermillCPUPct = field(points, loadkit.ModeWatermill, cl, satUsers, add, func(p loadkit.Point) float64 { return p.WorkerCPUPct })
		wm.WorkerRSSMiB = field(points, wm.WorkerMode, cl, satUsers, add, func(p loadkit.Point) float64 { return p.WorkerRSSMiB })
		wm.WorkerCPUPct = field(points, wm.WorkerMode, cl, satUsers, add, func(p loadkit.Point) float64 { return p.WorkerCPUPct })
	}
	ceilingSat := field(points, loadkit.ModeCeiling, cl, satUsers, add, thr)
	bl := Backlog{CeilingAddItemPerS: ceilingSat, Runs: backlog}
	bl.Summary = summarizeBacklog(backlog, ceilingSat)
	bl.Hot, bl.Wide = drainOf(bl.Summary, BacklogHot), drainOf(bl.Summary, BacklogWide)
	if bl.Runs == nil {
		bl.Runs = []*BacklogRun{}
	}

	var floors []Floor
	add1 := func(f Floor, atMost bool) {
		f.Verdict = "not measured"
		if f.Value != nil {
			ok := *f.Value >= f.Limit
			if atMost {
				ok = *f.Value <= f.Limit
			}
			f.Pass = boolp(ok && f.blocker == "")
			f.Verdict = "pass"
			if !*f.Pass {
				f.Verdict = "MISS"
			}
		}
		if f.blocker != "" {
			f.Detail += "; " + f.blocker
		}
		floors = append(floors, f)
	}

	// 1. The worker as shipped at saturation against the HTTP ceiling.
	f := Floor{Name: "saturation add-items/s: worker as shipped (pooled) / HTTP ceiling", Limit: floorSatOverCeiling, Unit: "×",
		Detail: fmt.Sprintf("at least; closed loop, %d users, medians over rounds", satUsers)}
	if w, c := pt(loadkit.ModePooled, cl, satUsers), pt(loadkit.ModeCeiling, cl, satUsers); w != nil && c != nil {
		f.Value = ratio(f64(w.ThroughputPerS), f64(c.ThroughputPerS))
		f.Rounds = roundRatios(w.ThroughputRounds, c.ThroughputRounds)
	}
	add1(f, false)

	// 2. Hot-cart backlog drain against the HTTP ceiling's add-item rate.
	f = Floor{Name: "hot-cart backlog drain commands/s (pooled) / HTTP ceiling add-items/s at saturation", Limit: floorHotDrainOverCeiling, Unit: "×",
		Detail: "at least; drain median over rounds"}
	if s := findBacklog(bl.Summary, BacklogHot, loadkit.ModePooled); s != nil {
		f.Value = s.OverCeiling
		if ceilingSat != nil && *ceilingSat > 0 {
			for _, r := range s.CommandsPerSRounds {
				f.Rounds = append(f.Rounds, r / *ceilingSat)
			}
		}
		if !s.TotalsOK {
			f.blocker = fmt.Sprintf("%d of %d rounds failed the totals check or did not finish", s.Failed, s.Rounds)
		}
	}
	add1(f, false)

	// 3. Paced p99 against the ceiling's at the same pacing.
	f = Floor{Name: fmt.Sprintf("paced %d users add-item p99: worker as shipped (pooled) / HTTP ceiling", floorPacedUsers), Limit: floorPacedP99OverCeiling, Unit: "×",
		Detail: "at most; median of the rounds' p99"}
	if w, c := pt(loadkit.ModePooled, loadkit.ScenarioPaced, floorPacedUsers), pt(loadkit.ModeCeiling, loadkit.ScenarioPaced, floorPacedUsers); w != nil && c != nil {
		f.Value = ratio(f64(w.P99RoundMedianMS), f64(c.P99RoundMedianMS))
		f.Rounds = roundRatios(w.P99RoundsMS, c.P99RoundsMS)
	}
	add1(f, true)

	// 4. The worker against the Watermill peer on the same transport.
	f = Floor{Name: fmt.Sprintf("saturation add-items/s: worker / Watermill peer, both over %s (%s)", protocol, wm.WorkerMode), Limit: floorWorkerOverWatermill, Unit: "×",
		Detail: fmt.Sprintf("at least; closed loop, %d users, medians over rounds", satUsers)}
	if w, p := pt(wm.WorkerMode, cl, satUsers), pt(loadkit.ModeWatermill, cl, satUsers); w != nil && p != nil {
		f.Value = ratio(f64(w.ThroughputPerS), f64(p.ThroughputPerS))
		f.Rounds = roundRatios(w.ThroughputRounds, p.ThroughputRounds)
	}
	add1(f, false)

	// 5. The worker's CPU per command at saturation.
	f = Floor{Name: "worker CPU per command at saturation (pooled)", Limit: floorCPUMSPerCommand, Unit: "ms",
		Detail: "at most; CPU time over commands of all types, medians over rounds"}
	f.Value = sat.WorkerPerCommandCPUMS
	add1(f, true)

	// 6. The worker's largest RSS over the run, the drains included.
	f = Floor{Name: "largest cartworker RSS over the run, backlog drains included", Limit: floorMaxRSSMiB, Unit: "MiB",
		Detail: "at most"}
	maxRSS := maxWorkerRSS(points, bl.Summary)
	f.Value = maxRSS
	add1(f, true)
	return wm, bl, floors, maxRSS
}

// speedLimitText is a speed floor's limit with its direction.
func speedLimitText(f Floor) string {
	op := "≥"
	if len(f.Detail) >= 7 && f.Detail[:7] == "at most" {
		op = "≤"
	}
	unit := "×"
	if f.Unit != "×" {
		unit = " " + f.Unit
	}
	return op + " " + strconv.FormatFloat(f.Limit, 'f', -1, 64) + unit
}

// drainOf returns the pooled worker's drain of scenario, nil if not run.
func drainOf(summary []BacklogSummary, scenario string) *Drain {
	for _, b := range summary {
		if b.Scenario != scenario || b.Mode != loadkit.ModePooled {
			continue
		}
		d := &Drain{DrainPerS: b.CommandsPerS, PeakRSSMiB: b.PeakRSSMiB}
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
