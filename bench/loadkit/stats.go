package loadkit

import (
	"maps"
	"math"
	"slices"
	"sort"
)

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest sample with at least p % of the samples
// at or below it. It is exact, never interpolated, so p99 of 100 samples is
// the 99th smallest and max is p100. It returns 0 for no samples.
func Percentile(sorted []int64, p float64) int64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Summary is the latency distribution of one set of samples, in
// milliseconds.
type Summary struct {
	Count  int
	P50MS  float64
	P90MS  float64
	P95MS  float64
	P99MS  float64
	MaxMS  float64
	MeanMS float64
}

// Summarize computes the exact distribution of latencies given in
// microseconds. It does not modify us.
func Summarize(us []int64) Summary {
	if len(us) == 0 {
		return Summary{}
	}
	s := slices.Clone(us)
	slices.Sort(s)
	var sum float64
	for _, v := range s {
		sum += float64(v)
	}
	ms := func(v int64) float64 { return float64(v) / 1000 }
	return Summary{
		Count:  len(s),
		P50MS:  ms(Percentile(s, 50)),
		P90MS:  ms(Percentile(s, 90)),
		P95MS:  ms(Percentile(s, 95)),
		P99MS:  ms(Percentile(s, 99)),
		MaxMS:  ms(s[len(s)-1]),
		MeanMS: sum / float64(len(s)) / 1000,
	}
}

// Median returns the median of v (the mean of the middle two for an even
// count), or 0 for none.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Spread is how far the values move: (largest - least) / median, in per
// cent; nil for fewer than two values or a zero median.
func Spread(v []float64) *float64 {
	if len(v) < 2 {
		return nil
	}
	m := Median(v)
	if m == 0 {
		return nil
	}
	s := (slices.Max(v) - slices.Min(v)) / m * 100
	return &s
}

// Point is one row of the report: a mode, scenario, user count and command
// type aggregated over its rounds. The JSON names are those of
// bench/results.json.
type Point struct {
	Mode     string `json:"mode"`
	Scenario string `json:"scenario"`
	Users    int    `json:"users"`
	Type     string `json:"type"`

	// Exact percentiles over every successful sample of every round.
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P95MS  float64 `json:"p95_ms"`
	P99MS  float64 `json:"p99_ms"`
	MaxMS  float64 `json:"max_ms"`
	MeanMS float64 `json:"mean_ms"`
	Count  int     `json:"count"`

	// ThroughputPerS is the median over rounds of successful commands of
	// this type per second; ThroughputRounds lists each round's.
	ThroughputPerS   float64   `json:"throughput_per_s"`
	ThroughputRounds []float64 `json:"throughput_rounds_per_s"`
	// P99RoundsMS is each round's own p99, to show the spread, and
	// CountRounds each round's successful samples.
	P99RoundsMS []float64 `json:"p99_rounds_ms"`
	CountRounds []int     `json:"count_rounds"`
	// The least, median and largest of the rounds' p99, and how far they
	// move: (largest - least) / median, in per cent; nil with fewer than
	// two rounds.
	P99RoundMinMS    float64  `json:"p99_round_min_ms"`
	P99RoundMedianMS float64  `json:"p99_round_median_ms"`
	P99RoundMaxMS    float64  `json:"p99_round_max_ms"`
	P99SpreadPct     *float64 `json:"p99_spread_pct"`
	// Errors counts failed commands of this type over all rounds.
	Errors int `json:"errors"`

	// Dials is the TCP connections opened to Dapr during the point's runs
	// (all command types together; every type row of a point repeats it),
	// -1 when unknown. StateCalls counts the state API calls in the same
	// runs, so Dials/StateCalls is 1 when every call dials.
	Dials      int64 `json:"dials"`
	StateCalls int64 `json:"state_calls"`
	// StateFailures counts the worker's state calls answered with neither
	// 200 nor 204 during the point's runs; -1 when unknown.
	StateFailures int64 `json:"state_failures"`
	// DialsTotal is the largest cumulative count of the process seen at
	// the end of any of the point's runs; -1 when unknown.
	DialsTotal int64 `json:"dials_total"`

	Rounds     int  `json:"rounds"`
	Saturation bool `json:"saturation,omitempty"`
	// Process figures: the worker's largest RSS, and CPU use as a
	// percentage of one core, averaged over the runs' elapsed time.
	WorkerRSSMiB  float64 `json:"worker_rss_mib,omitempty"`
	WorkerCPUPct  float64 `json:"worker_cpu_pct,omitempty"`
	LoadgenCPUPct float64 `json:"loadgen_cpu_pct,omitempty"`
	HostBusyPct   float64 `json:"host_busy_pct,omitempty"`
	// WindowS is the measured time summed over rounds.
	WindowS float64 `json:"window_s"`
	// ProcCPUPct is each watched process's CPU use in % of one core over
	// the runs, plus "loadgen" (the load generator or client itself) and
	// "other": the machine's busy time not accounted for by those, i.e.
	// the kernel's share for them and every other process on the machine.
	ProcCPUPct map[string]float64 `json:"proc_cpu_pct,omitempty"`
	// WorkerHandleMeanMS is the worker's own mean handling time per command
	// (all types, pull to ack), averaged over rounds; the rest of a
	// command's latency is messaging (publish, delivery, event) and the
	// load generator.
	WorkerHandleMeanMS float64 `json:"worker_handle_mean_ms,omitempty"`
	// WorkerStageMeanMS is the worker's own mean time per stage of an
	// applied command (WorkerStages), each averaged over the rounds that
	// had it; nil when none did.
	WorkerStageMeanMS map[string]float64 `json:"worker_stage_mean_ms,omitempty"`
}

// PointKey identifies the runs that make up one point.
type PointKey struct {
	Mode     string
	Scenario string
	Users    int
}

// Aggregate groups runs by mode, scenario and user count and returns one
// Point per command type, ordered by scenario, users, mode (Modes order) and
// type (Types order). Types with no sample and no error in any round are
// omitted.
func Aggregate(runs []*Run) []Point {
	groups := map[PointKey][]*Run{}
	for _, r := range runs {
		k := PointKey{r.Mode, r.Scenario, r.Users}
		groups[k] = append(groups[k], r)
	}
	keys := make([]PointKey, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.Scenario != b.Scenario {
			return scenarioRank(a.Scenario) < scenarioRank(b.Scenario)
		}
		if a.Users != b.Users {
			return a.Users < b.Users
		}
		return modeRank(a.Mode) < modeRank(b.Mode)
	})
	var out []Point
	for _, k := range keys {
		out = append(out, aggregateGroup(k, groups[k])...)
	}
	return out
}

func scenarioRank(s string) int {
	if s == ScenarioPaced {
		return 0
	}
	return 1
}

func modeRank(m string) int {
	for i, v := range Modes {
		if v == m {
			return i
		}
	}
	return len(Modes)
}

// aggregateGroup makes the points of one mode, scenario and user count, one
// per command type, from its runs (sorted here by round).
func aggregateGroup(k PointKey, runs []*Run) []Point {
	sort.Slice(runs, func(i, j int) bool { return runs[i].Round < runs[j].Round })
	g := totalsOf(runs)
	var out []Point
	for _, typ := range typesOf(runs) {
		if p, ok := typePoint(k, typ, runs, g); ok {
			out = append(out, p)
		}
	}
	return out
}

// groupTotals are a point's figures over all its command types, summed
// over its runs.
type groupTotals struct {
	// dials and calls are -1 when a run did not know them; total and
	// fails are -1 when none did.
	dials, calls, total, fails int64
	rss, window, elapsed       float64
	// CPU seconds of the worker, the load generator, the whole machine
	// and each watched process; busyWeighted is the machine's busy % times
	// each run's elapsed time.
	wcpu, lcpu, hostCPU, busyWeighted float64
	procCPU                           map[string]float64
	// handle is the sum of the runs' mean handling times, nHandle how many
	// runs had one.
	handle  float64
	nHandle int
	// stages sums the runs' mean time of each stage, nStages counts the
	// runs that had it.
	stages  map[string]float64
	nStages map[string]int
	sat     bool
	rounds  int
}

// totalsOf sums the figures of runs that every command type of their point
// shares.
func totalsOf(runs []*Run) groupTotals {
	g := groupTotals{total: -1, fails: -1, procCPU: map[string]float64{}, rounds: len(runs),
		stages: map[string]float64{}, nStages: map[string]int{}}
	dialsKnown, callsKnown := true, true
	for _, r := range runs {
		g.hostCPU += r.HostCPUS
		if r.WorkerHandleMS > 0 {
			g.handle += r.WorkerHandleMS
			g.nHandle++
		}
		for name, c := range r.ProcCPUS {
			g.procCPU[name] += c
		}
		for st, ms := range r.WorkerStagesMS {
			g.stages[st] += ms
			g.nStages[st]++
		}
		if r.Dials == nil {
			dialsKnown = false
		} else {
			g.dials += *r.Dials
		}
		if r.StateCalls == nil {
			callsKnown = false
		} else {
			g.calls += *r.StateCalls
		}
		if r.StateFailures != nil {
			g.fails = max(g.fails, 0) + *r.StateFailures
		}
		if r.DialsTotal != nil {
			g.total = max(g.total, *r.DialsTotal)
		}
		g.rss = max(g.rss, r.WorkerRSSMaxMiB)
		g.window += r.WindowS
		g.elapsed += r.ElapsedS
		g.wcpu += r.WorkerCPUS
		g.lcpu += r.LoadgenCPUS
		g.busyWeighted += r.HostBusyPct * r.ElapsedS
		g.sat = g.sat || r.Saturation
	}
	if !dialsKnown {
		g.dials = -1
	}
	if !callsKnown {
		g.calls = -1
	}
	return g
}

// pct is cpu seconds in % of one core over the runs' elapsed time.
func (g groupTotals) pct(cpu float64) float64 {
	if g.elapsed <= 0 {
		return 0
	}
	return cpu / g.elapsed * 100
}

// busy is the machine's busy %, weighted by each run's elapsed time.
func (g groupTotals) busy() float64 {
	if g.elapsed <= 0 {
		return 0
	}
	return g.busyWeighted / g.elapsed
}

// meanHandle is the worker's mean handling time over the runs that had
// one.
func (g groupTotals) meanHandle() float64 {
	if g.nHandle == 0 {
		return g.handle
	}
	return g.handle / float64(g.nHandle)
}

// meanStages is the worker's mean time per stage, each over the runs that
// had it; nil when none did.
func (g groupTotals) meanStages() map[string]float64 {
	if len(g.stages) == 0 {
		return nil
	}
	out := make(map[string]float64, len(g.stages))
	for st, sum := range g.stages {
		out[st] = sum / float64(g.nStages[st])
	}
	return out
}

// procPct is each watched process's CPU in % of one core, with "loadgen"
// and "other" (what the machine was busy with besides them); nil when no
// process was watched.
func (g groupTotals) procPct() map[string]float64 {
	if len(g.procCPU) == 0 || g.elapsed <= 0 {
		return nil
	}
	out := map[string]float64{}
	accounted := g.lcpu
	// In name order: a float sum in a map's order would differ in its
	// last digits from run to run, and so would results.json.
	for _, name := range slices.Sorted(maps.Keys(g.procCPU)) {
		c := g.procCPU[name]
		out[name] = g.pct(c)
		accounted += c
	}
	out["loadgen"] = g.pct(g.lcpu)
	out["other"] = g.pct(max(0, g.hostCPU-accounted))
	return out
}

// typePoint is the point of one command type; false when no round has a
// sample or an error of it.
func typePoint(k PointKey, typ string, runs []*Run, g groupTotals) (Point, bool) {
	var all []int64
	var thr, p99s []float64
	var counts []int
	errs := 0
	for _, r := range runs {
		lat := r.LatenciesUS[typ]
		all = append(all, lat...)
		thr = append(thr, r.Throughput(typ))
		p99s = append(p99s, Summarize(lat).P99MS)
		counts = append(counts, len(lat))
		errs += r.Errors[typ]
	}
	if len(all) == 0 && errs == 0 {
		return Point{}, false
	}
	s := Summarize(all)
	return Point{
		Mode: k.Mode, Scenario: k.Scenario, Users: k.Users, Type: typ,
		P50MS: s.P50MS, P90MS: s.P90MS, P95MS: s.P95MS, P99MS: s.P99MS, MaxMS: s.MaxMS, MeanMS: s.MeanMS,
		Count:              s.Count,
		ThroughputPerS:     Median(thr),
		ThroughputRounds:   thr,
		P99RoundsMS:        p99s,
		CountRounds:        counts,
		P99RoundMinMS:      slices.Min(p99s),
		P99RoundMedianMS:   Median(p99s),
		P99RoundMaxMS:      slices.Max(p99s),
		P99SpreadPct:       Spread(p99s),
		Errors:             errs,
		Dials:              g.dials,
		StateCalls:         g.calls,
		StateFailures:      g.fails,
		DialsTotal:         g.total,
		Rounds:             g.rounds,
		Saturation:         g.sat,
		WorkerRSSMiB:       g.rss,
		WorkerCPUPct:       g.pct(g.wcpu),
		LoadgenCPUPct:      g.pct(g.lcpu),
		HostBusyPct:        g.busy(),
		WindowS:            g.window,
		ProcCPUPct:         g.procPct(),
		WorkerHandleMeanMS: g.meanHandle(),
		WorkerStageMeanMS:  g.meanStages(),
	}, true
}

// typesOf returns the command types present in runs: Types first, in order,
// then any other, sorted.
func typesOf(runs []*Run) []string {
	seen := map[string]bool{}
	for _, r := range runs {
		for t := range r.LatenciesUS {
			seen[t] = true
		}
		for t := range r.Errors {
			seen[t] = true
		}
	}
	known, rest := OrderKeys(Types, seen)
	return append(known, rest...)
}

// OrderKeys splits the keys of set into those listed in order, in that
// order, and the rest, sorted, so that report columns and rows are stable.
func OrderKeys(order []string, set map[string]bool) (known, rest []string) {
	for _, k := range order {
		if set[k] {
			known = append(known, k)
		}
	}
	for k := range set {
		if !slices.Contains(order, k) {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	return known, rest
}

// Find returns the point of mode, scenario, users and typ, if any.
func Find(points []Point, mode, scenario string, users int, typ string) (Point, bool) {
	for _, p := range points {
		if p.Mode == mode && p.Scenario == scenario && p.Users == users && p.Type == typ {
			return p, true
		}
	}
	return Point{}, false
}
