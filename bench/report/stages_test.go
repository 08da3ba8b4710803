package report

import (
	"strings"
	"testing"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// stagesInput is testInput with the worker's stage times on the pooled
// worker's runs at saturation (all four stages, 0.5 + 0.25 + 2 + 0.75 =
// 3.5 ms) and at 15 users closed loop (no ack stage), and on the ceiling's,
// which runs no worker and is left out.
func stagesInput() Input {
	in := testInput()
	for _, r := range in.Runs {
		switch {
		case r.Mode == loadkit.ModePooled && r.Saturation:
			r.WorkerStagesMS = map[string]float64{"fetch": 0.5, "queue": 0.25, "apply": 2, "ack": 0.75}
		case r.Mode == loadkit.ModePooled && r.Scenario == loadkit.ScenarioClosed && r.Users == 15:
			r.WorkerStagesMS = map[string]float64{"apply": 1, "fetch": 0.1, "queue": 0.2}
		case r.Mode == loadkit.ModeCeiling:
			r.WorkerStagesMS = map[string]float64{"apply": 9}
		}
	}
	return in
}

func TestStageBreakdown(t *testing.T) {
	res, md, _, err := Build(stagesInput())
	if err != nil {
		t.Fatal(err)
	}
	rows := res.StageBreakdown
	if len(rows) != 2 || rows[0].Users != 15 || rows[1].Users != 64 || rows[0].Mode != loadkit.ModePooled {
		t.Fatalf("rows %+v", rows)
	}
	if rows[1].SumMS != 3.5 || rows[1].StageMeanMS["apply"] != 2 || rows[1].ClientAddItemP50MS != 15 {
		t.Fatalf("saturation row %+v", rows[1])
	}
	doc := resultsDoc(t, res)
	first := doc["stage_breakdown"].([]any)[0].(map[string]any)
	if first["sum_ms"] != 1.3 || first["stage_mean_ms"].(map[string]any)["queue"] != 0.2 {
		t.Errorf("results.json stage_breakdown[0] = %v", first)
	}
	reportHas(t, md,
		"## Where a command's time goes",
		"The rest of the client's latency is the publish, the JetStream store, and the event's trip back.",
		"| mode | scenario | users | fetch | queue | apply | ack | sum | client add-item p50 |",
		"|---|---|---:|---:|---:|---:|---:|---:|---:|",
		"| pooled | closed-loop | 15 | 0.10 | 0.20 | 1.00 | – | 1.30 | 5.00 |",
		"| pooled | closed-loop | 64 (sat.) | 0.50 | 0.25 | 2.00 | 0.75 | 3.50 | 15.0 |",
	)
}

// Without stage figures the section says so, and results.json holds an
// empty list rather than null.
func TestStageBreakdownNotMeasured(t *testing.T) {
	res, md, _, err := Build(testInput())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "Not measured: no worker point has the stage figures") {
		t.Error("report does not say the stages were not measured")
	}
	if v, ok := resultsDoc(t, res)["stage_breakdown"].([]any); !ok || len(v) != 0 {
		t.Errorf("stage_breakdown = %v", v)
	}
}

func TestStageCellRejectsUnknownStage(t *testing.T) {
	if _, err := stageCell(StageRow{}, "fetched"); err == nil {
		t.Error("a misspelt stage was accepted")
	}
}
