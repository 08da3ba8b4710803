package report

import (
	"strings"
	"testing"

	"github.com/cartworker/cartworker/bench/loadkit"
	"github.com/cartworker/cartworker/command"
)

// The histogram `loadgen backlog` reads of cartworker_batch_size: 100
// read-modify-writes of 350 commands.
func TestBatchSizes(t *testing.T) {
	h := NewBatchSizes([]Bucket{{"+Inf", 100}, {"8", 100}, {"4", 90}, {"2", 40}, {"1", 10}}, 350, 100)
	if h.Count != 100 || h.Sum != 350 || h.Mean != 3.5 || len(h.Buckets) != 5 || h.Buckets[0].LE != "1" {
		t.Fatalf("%+v", h)
	}
	// 40 of 100 are at most 2, 90 at most 4: the median is in (2, 4].
	if h.P50 != "4" || h.P90 != "4" || h.Max != "8" {
		t.Errorf("p50 %s p90 %s max %s", h.P50, h.P90, h.Max)
	}
	before := &BatchSizes{Buckets: []Bucket{{"1", 10}, {"2", 10}, {"4", 10}, {"8", 10}, {"+Inf", 10}}, Sum: 10, Count: 10}
	d := h.sub(before)
	if d.Count != 90 || d.Sum != 340 || d.Buckets[0].Count != 0 || d.P50 != "4" {
		t.Errorf("difference %+v", d)
	}
	sum := addBatch(h, h)
	if sum.Count != 200 || sum.Sum != 700 || sum.Buckets[4].LE != "+Inf" || sum.Buckets[4].Count != 200 || sum.Mean != 3.5 {
		t.Errorf("sum %+v", sum)
	}
}

func TestSummarizeBacklog(t *testing.T) {
	runs := fakeBacklog()
	ceiling := 400.0
	s := summarizeBacklog(runs, &ceiling)
	if len(s) != 2 {
		t.Fatalf("%d summaries", len(s))
	}
	w := findBacklog(s, BacklogHot, loadkit.ModePooled)
	if w == nil || *w.CommandsPerS != 1100 || *w.OverCeiling != 2.75 || w.TotalsOK || w.Failed != 1 || w.Batch == nil || w.Batch.Count != 2020 {
		t.Fatalf("worker %+v", w)
	}
	p := findBacklog(s, BacklogHot, loadkit.ModeWatermill)
	if p == nil || !p.TotalsOK || p.Batch != nil || !strings.HasPrefix(p.BatchNote, "n/a") {
		t.Fatalf("peer %+v", p)
	}
}

func TestMemoryTable(t *testing.T) {
	runs := []*BacklogRun{
		{Scenario: BacklogMany, Mode: "pooled", Round: 1, Carts: 200, AddItemsPerCart: 100, Commands: 20200, Applied: 20200, TotalsOK: true, PeakRSSMiB: 40},
		{Scenario: BacklogHuge, Mode: "pooled", Round: 1, Carts: 2, AddItemsPerCart: 10000, Commands: 20002, Applied: 11000, Refused: 9002,
			RefusalCode: command.CodeCartTooLarge, TotalsOK: true, PeakRSSMiB: 70},
		{Scenario: BacklogHuge, Mode: "pooled", Round: 2, Carts: 2, AddItemsPerCart: 10000, Commands: 20002, Applied: 11000, TotalsOK: true, PeakRSSMiB: 30},
	}
	var b strings.Builder
	over, failed := MemoryTable(&b, runs, 64)
	if over != 1 || failed != 1 {
		t.Fatalf("over %d failed %d:\n%s", over, failed, b.String())
	}
	for _, want := range []string{"many (200 × 100)", "40.0 MiB", "OVER", "FAILED: 11000 of 20002 commands applied"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("no %q in\n%s", want, b.String())
		}
	}
}
