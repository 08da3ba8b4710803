package report

import "github.com/cartworker/cartworker/bench/loadkit"

// The cost of tracing: scripts/bench.sh runs the pooled worker at
// saturation twice per round, as shipped (nothing exported) and with its
// OTLP export on ("traced"); the report compares the two.

// Tracing compares the pooled worker at saturation with its span export off
// and on (medians over rounds; CPU per command from the worker's CPU time).
type Tracing struct {
	Users  int `json:"users"`
	Rounds int `json:"rounds"`
	// Add-items per second and add-item p99, export off and on.
	OffAddItemPerS *float64 `json:"off_add_item_per_s"`
	OnAddItemPerS  *float64 `json:"on_add_item_per_s"`
	OffP99MS       *float64 `json:"off_add_item_p99_ms"`
	OnP99MS        *float64 `json:"on_add_item_p99_ms"`
	// The worker's CPU milliseconds per command, off and on.
	OffCPUMSPerCommand *float64 `json:"off_cpu_ms_per_command"`
	OnCPUMSPerCommand  *float64 `json:"on_cpu_ms_per_command"`
	// ThroughputCostPct is how much add-item throughput export costs,
	// (1 - on / off) × 100; CPUCostPct how much more CPU each command
	// takes, (on / off - 1) × 100.
	ThroughputCostPct *float64 `json:"throughput_cost_pct"`
	CPUCostPct        *float64 `json:"cpu_cost_pct"`
	// SpansPerCommand is the spans the sink received per command the
	// traced worker handled (median over rounds): a delivery, an apply
	// and its state calls, shared by a batch; fewer than expected means
	// the exporter's queue dropped some.
	SpansPerCommand *float64 `json:"spans_per_command"`
}

// computeTracing summarises the off (pooled) and on (traced) runs; nil
// without runs of both.
func computeTracing(runs []*loadkit.Run) *Tracing {
	var on, off bool
	satUsers := 0
	rounds := map[int]bool{}
	var spans []float64
	for _, r := range runs {
		satUsers = max(satUsers, r.Users)
		rounds[r.Round] = true
		switch r.Mode {
		case loadkit.ModePooled:
			off = true
		case loadkit.ModeTraced:
			on = true
			if r.SpansPerCommand != nil {
				spans = append(spans, *r.SpansPerCommand)
			}
		}
	}
	if !on || !off {
		return nil
	}
	points := loadkit.Aggregate(runs)
	cl, add := loadkit.ScenarioClosed, loadkit.TypeAddItem
	cpuMS := func(mode string) *float64 {
		cpu := field(points, mode, cl, satUsers, add, workerCPU)
		return cpuPerCommand(cpu, commandsPerS(points, mode, cl, satUsers))
	}
	t := &Tracing{
		Users: satUsers, Rounds: len(rounds),
		OffAddItemPerS: field(points, loadkit.ModePooled, cl, satUsers, add, thr),
		OnAddItemPerS:  field(points, loadkit.ModeTraced, cl, satUsers, add, thr),
		OffP99MS:       field(points, loadkit.ModePooled, cl, satUsers, add, p99),
		OnP99MS:        field(points, loadkit.ModeTraced, cl, satUsers, add, p99),

		OffCPUMSPerCommand: cpuMS(loadkit.ModePooled),
		OnCPUMSPerCommand:  cpuMS(loadkit.ModeTraced),
	}
	if r := ratio(t.OnAddItemPerS, t.OffAddItemPerS); r != nil {
		t.ThroughputCostPct = f64((1 - *r) * 100)
	}
	if r := ratio(t.OnCPUMSPerCommand, t.OffCPUMSPerCommand); r != nil {
		t.CPUCostPct = f64((*r - 1) * 100)
	}
	if len(spans) > 0 {
		t.SpansPerCommand = f64(loadkit.Median(spans))
	}
	return t
}
