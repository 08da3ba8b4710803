package report

import (
	"fmt"
	"strconv"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// This file computes the figures of "faster than a direct Dapr client":
// how much the paced p99 moves between rounds, the backlog drains, the
// Watermill peer at saturation, the floors that compare them with the
// direct HTTP ceiling, and the figures shown beside the floors without a
// verdict, all from one run.

// Floors of "faster than a direct Dapr client". Each is computed from
// medians over rounds.
const (
	// The worker as shipped at saturation: at least this share of the
	// HTTP ceiling's add-items per second.
	floorSatOverCeiling = 0.9
	// Hot-cart backlog drain, commands per second: at least this multiple
	// of the HTTP ceiling's add-items per second at saturation.
	floorHotDrainOverCeiling = 2.5
	// The worker at saturation: at least this multiple of the Watermill
	// peer's add-items per second on the same state transport.
	floorWorkerOverWatermill = 1.5
	// The worker as shipped at saturation: at most this much CPU per
	// command, in ms.
	floorCPUMSPerCommand = 0.25
)

// FloorMaxRSSMiB is the most RSS, in MiB, that any cartworker process may
// reach over the whole run, backlog drains included; `loadgen memory`
// (make bench-memory) holds each drain to it by default.
const FloorMaxRSSMiB = 48

// pacedFigureUsers is the paced point whose add-item p99 the report sets
// against the ceiling's. It was a floor (at most 1.5× the ceiling's) and is
// now a figure: the stage breakdown shows where that time goes instead.
const pacedFigureUsers = 15

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

// Figure is a figure the report shows next to the floors without a
// verdict: a comparison that every run should show, not a bar to clear.
type Figure struct {
	Name  string   `json:"name"`
	Value *float64 `json:"value"`
	Unit  string   `json:"unit"`
	// Detail says how it is computed.
	Detail string `json:"detail,omitempty"`
	// Rounds is each round's own value.
	Rounds []float64 `json:"rounds,omitempty"`
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
	if protocol == "" {
		protocol = "grpc"
	}
	s := speedFigures{points: points, sat: sat,
		wm: watermillSatOf(points, sat.Users, protocol), backlog: backlogOf(points, backlog, sat.Users)}
	maxRSS := maxWorkerRSS(points, s.backlog.Summary)
	floors := []Floor{
		judgeSpeed(s.satOverCeiling(), false),
		judgeSpeed(s.hotDrainOverCeiling(), false),
		judgeSpeed(s.workerOverWatermill(), false),
		judgeSpeed(Floor{Name: "worker CPU per command at saturation (pooled)", Limit: floorCPUMSPerCommand, Unit: "ms",
			Detail: "at most; CPU time over commands of all types, medians over rounds", Value: sat.WorkerPerCommandCPUMS}, true),
		judgeSpeed(Floor{Name: "largest cartworker RSS over the run, backlog drains included", Limit: FloorMaxRSSMiB, Unit: "MiB",
			Detail: "at most", Value: maxRSS}, true),
	}
	return s.wm, s.backlog, floors, maxRSS
}

// watermillSatOf is the Watermill peer against the worker on the same
// state transport, at satUsers.
func watermillSatOf(points []loadkit.Point, satUsers int, protocol string) WatermillSat {
	wm := WatermillSat{Protocol: protocol, WorkerMode: workerModeFor(protocol)}
	if satUsers <= 0 {
		return wm
	}
	cl, add := loadkit.ScenarioClosed, loadkit.TypeAddItem
	wm.WatermillAddItemPerS = field(points, loadkit.ModeWatermill, cl, satUsers, add, thr)
	wm.WorkerAddItemPerS = field(points, wm.WorkerMode, cl, satUsers, add, thr)
	wm.WorkerOverWatermill = ratio(wm.WorkerAddItemPerS, wm.WatermillAddItemPerS)
	wm.WatermillP99MS = field(points, loadkit.ModeWatermill, cl, satUsers, add, p99)
	wm.WorkerP99MS = field(points, wm.WorkerMode, cl, satUsers, add, p99)
	wm.WatermillRSSMiB = field(points, loadkit.ModeWatermill, cl, satUsers, add, workerRSS)
	wm.WatermillCPUPct = field(points, loadkit.ModeWatermill, cl, satUsers, add, workerCPU)
	wm.WorkerRSSMiB = field(points, wm.WorkerMode, cl, satUsers, add, workerRSS)
	wm.WorkerCPUPct = field(points, wm.WorkerMode, cl, satUsers, add, workerCPU)
	return wm
}

// backlogOf summarises the drains against the HTTP ceiling's add-item rate
// at satUsers.
func backlogOf(points []loadkit.Point, runs []*BacklogRun, satUsers int) Backlog {
	ceilingSat := field(points, loadkit.ModeCeiling, loadkit.ScenarioClosed, satUsers, loadkit.TypeAddItem, thr)
	bl := Backlog{CeilingAddItemPerS: ceilingSat, Runs: runs}
	bl.Summary = summarizeBacklog(runs, ceilingSat)
	bl.Hot, bl.Wide = drainOf(bl.Summary, BacklogHot), drainOf(bl.Summary, BacklogWide)
	if bl.Runs == nil {
		bl.Runs = []*BacklogRun{}
	}
	return bl
}

// judgeSpeed gives a speed floor its verdict: its value at most its limit
// (atMost) or at least it, and no blocker; "MISS" otherwise, "not
// measured" without a value.
func judgeSpeed(f Floor, atMost bool) Floor {
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
	return f
}

// speedFigures are what the speed floors compare.
type speedFigures struct {
	points  []loadkit.Point
	sat     Saturation
	wm      WatermillSat
	backlog Backlog
}

// addItem is the add-item point of mode, nil when it was not measured.
func (s speedFigures) addItem(mode, scenario string, users int) *loadkit.Point {
	return addItemPoint(s.points, mode, scenario, users)
}

// addItemPoint is the add-item point of mode among points, nil when it was
// not measured.
func addItemPoint(points []loadkit.Point, mode, scenario string, users int) *loadkit.Point {
	p, ok := loadkit.Find(points, mode, scenario, users, loadkit.TypeAddItem)
	if !ok || p.Count == 0 {
		return nil
	}
	return &p
}

// satOverCeiling is the worker as shipped at saturation against the HTTP
// ceiling.
func (s speedFigures) satOverCeiling() Floor {
	satUsers, cl := s.sat.Users, loadkit.ScenarioClosed
	f := Floor{Name: "saturation add-items/s: worker as shipped (pooled) / HTTP ceiling", Limit: floorSatOverCeiling, Unit: "×",
		Detail: fmt.Sprintf("at least; closed loop, %d users, medians over rounds", satUsers)}
	if w, c := s.addItem(loadkit.ModePooled, cl, satUsers), s.addItem(loadkit.ModeCeiling, cl, satUsers); w != nil && c != nil {
		f.Value = ratio(f64(w.ThroughputPerS), f64(c.ThroughputPerS))
		f.Rounds = roundRatios(w.ThroughputRounds, c.ThroughputRounds)
	}
	return f
}

// hotDrainOverCeiling is the hot-cart backlog drain against the HTTP
// ceiling's add-item rate; a drain that failed its totals blocks it.
func (s speedFigures) hotDrainOverCeiling() Floor {
	f := Floor{Name: "hot-cart backlog drain commands/s (pooled) / HTTP ceiling add-items/s at saturation", Limit: floorHotDrainOverCeiling, Unit: "×",
		Detail: "at least; drain median over rounds"}
	b := findBacklog(s.backlog.Summary, BacklogHot, loadkit.ModePooled)
	if b == nil {
		return f
	}
	f.Value = b.OverCeiling
	if c := s.backlog.CeilingAddItemPerS; c != nil && *c > 0 {
		for _, r := range b.CommandsPerSRounds {
			f.Rounds = append(f.Rounds, r / *c)
		}
	}
	if !b.TotalsOK {
		f.blocker = fmt.Sprintf("%d of %d rounds failed the totals check or did not finish", b.Failed, b.Rounds)
	}
	return f
}

// pacedFigures are the figures shown beside the floors: the paced p99 of
// the worker as shipped against the ceiling's at the same pacing, with each
// round's. A floor once, retired: at that light load the p99 is mostly the
// messaging's tail, which the stage breakdown shows.
func pacedFigures(points []loadkit.Point) []Figure {
	f := Figure{Name: fmt.Sprintf("paced %d users add-item p99: worker as shipped (pooled) / HTTP ceiling", pacedFigureUsers), Unit: "×",
		Detail: "median of the rounds' p99, the ceiling at the same pacing; a floor no more (it was ≤ 1.5×): where the worker's time goes is under \"Where a command's time goes\""}
	w := addItemPoint(points, loadkit.ModePooled, loadkit.ScenarioPaced, pacedFigureUsers)
	c := addItemPoint(points, loadkit.ModeCeiling, loadkit.ScenarioPaced, pacedFigureUsers)
	if w != nil && c != nil {
		f.Value = ratio(f64(w.P99RoundMedianMS), f64(c.P99RoundMedianMS))
		f.Rounds = roundRatios(w.P99RoundsMS, c.P99RoundsMS)
	}
	return []Figure{f}
}

// workerOverWatermill is the worker against the Watermill peer on the same
// transport.
func (s speedFigures) workerOverWatermill() Floor {
	satUsers, cl := s.sat.Users, loadkit.ScenarioClosed
	f := Floor{Name: fmt.Sprintf("saturation add-items/s: worker / Watermill peer, both over %s (%s)", s.wm.Protocol, s.wm.WorkerMode), Limit: floorWorkerOverWatermill, Unit: "×",
		Detail: fmt.Sprintf("at least; closed loop, %d users, medians over rounds", satUsers)}
	if w, p := s.addItem(s.wm.WorkerMode, cl, satUsers), s.addItem(loadkit.ModeWatermill, cl, satUsers); w != nil && p != nil {
		f.Value = ratio(f64(w.ThroughputPerS), f64(p.ThroughputPerS))
		f.Rounds = roundRatios(w.ThroughputRounds, p.ThroughputRounds)
	}
	return f
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
