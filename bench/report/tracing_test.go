package report

import (
	"math"
	"strings"
	"testing"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// The traced worker is 20 % slower at saturation on the same CPU time, so
// each command (502 a second off, 402 on) costs a quarter more CPU, and it
// exported 4 and 5 spans per command in its two rounds.
func TestTracingCost(t *testing.T) {
	in := testInput()
	for round := 1; round <= 2; round++ {
		off := fakeRun(loadkit.ModePooled, loadkit.ScenarioClosed, 64, round, 100, 500, 0, 3000)
		on := fakeRun(loadkit.ModeTraced, loadkit.ScenarioClosed, 64, round, 100, 400, 0, 2400)
		off.WorkerCPUS, on.WorkerCPUS = 0.5, 0.5
		on.SpansPerCommand = f64(float64(3 + round))
		in.Tracing = append(in.Tracing, off, on)
	}
	res, md, _, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	tr := res.Tracing
	if tr == nil {
		t.Fatal("no tracing results")
	}
	near := func(name string, got *float64, want float64) {
		t.Helper()
		if got == nil {
			t.Errorf("%s not measured, want %v", name, want)
		} else if math.Abs(*got-want) > 0.01 {
			t.Errorf("%s = %v, want %v", name, *got, want)
		}
	}
	near("off add-items/s", tr.OffAddItemPerS, 500)
	near("on add-items/s", tr.OnAddItemPerS, 400)
	near("throughput cost", tr.ThroughputCostPct, 20)
	near("CPU cost", tr.CPUCostPct, (502.0/402-1)*100)
	near("spans per command", tr.SpansPerCommand, 4.5)
	if tr.Users != 64 || tr.Rounds != 2 {
		t.Errorf("users %d rounds %d", tr.Users, tr.Rounds)
	}
	if !strings.Contains(string(md), "## Tracing cost") || !strings.Contains(string(md), "costs 20 % of the add-item throughput") {
		t.Errorf("report:\n%s", md)
	}
	// The tracing rounds stay out of every other table.
	for _, p := range res.Points {
		if p.Mode == loadkit.ModeTraced {
			t.Fatalf("traced point among the main points: %+v", p)
		}
	}

	res, md, _, err = Build(testInput())
	if err != nil {
		t.Fatal(err)
	}
	if res.Tracing != nil || !strings.Contains(string(md), "Not measured (BENCH_TRACING=0") {
		t.Errorf("tracing without its rounds: %+v", res.Tracing)
	}
}
