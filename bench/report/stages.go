package report

import (
	"fmt"
	"slices"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// This file computes "Where a command's time goes": the worker's own mean
// time per stage of an applied command, from its
// cartworker_command_stage_seconds, next to the client's latency, so that
// every run shows which part of a command's way the time is spent in.

// StageRow is the stage breakdown of one worker point: the worker's mean
// time per stage over the point's rounds, and the add-item p50 its client
// saw, which holds them and the messaging around them.
type StageRow struct {
	Mode     string `json:"mode"`
	Scenario string `json:"scenario"`
	Users    int    `json:"users"`
	// StageMeanMS is the mean time per stage (loadkit.WorkerStages), in
	// ms; SumMS adds them up.
	StageMeanMS map[string]float64 `json:"stage_mean_ms"`
	SumMS       float64            `json:"sum_ms"`
	// ClientAddItemP50MS is the client's add-item p50 at the point,
	// publish to outcome event.
	ClientAddItemP50MS float64 `json:"client_add_item_p50_ms"`
}

// stageBreakdown is a row for every point of a worker mode that has the
// stage figures, in the points' order.
func stageBreakdown(points []loadkit.Point) []StageRow {
	out := []StageRow{}
	for _, p := range points {
		if p.Type != loadkit.TypeAddItem || !isWorkerMode(p.Mode) || len(p.WorkerStageMeanMS) == 0 {
			continue
		}
		row := StageRow{Mode: p.Mode, Scenario: p.Scenario, Users: p.Users, StageMeanMS: p.WorkerStageMeanMS, ClientAddItemP50MS: p.P50MS}
		for _, st := range loadkit.WorkerStages() {
			row.SumMS += p.WorkerStageMeanMS[st]
		}
		out = append(out, row)
	}
	return out
}

// stageCell is a row's mean time of stage in ms, "–" when the worker did
// not observe it.
func stageCell(r StageRow, stage string) (string, error) {
	if !slices.Contains(loadkit.WorkerStages(), stage) {
		return "", fmt.Errorf("unknown stage %q", stage)
	}
	v, ok := r.StageMeanMS[stage]
	if !ok {
		return "–", nil
	}
	return ms(v), nil
}
