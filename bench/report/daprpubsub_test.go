package report

import (
	"strings"
	"testing"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// daprPubSubInput is testInput with the Dapr pub/sub peer: at saturation
// 120 add-items/s without bulk subscribe and 150/s with it; on the hot
// backlog 300 commands/s without, every cart right, and 500/s with, a cart
// wrong.
func daprPubSubInput() Input {
	in := testInput()
	for _, m := range []struct {
		mode string
		n    int
	}{{loadkit.ModeDaprPubSub, 120}, {loadkit.ModeDaprPubSubBulk, 150}} {
		r := fakeRun(m.mode, loadkit.ScenarioClosed, 64, 1, 200, m.n, 0, 0)
		r.Saturation = true
		r.ProcCPUS = map[string]float64{"daprd-" + m.mode: 0.3, m.mode: 0.15}
		in.Runs = append(in.Runs, r)
	}
	ok := &BacklogRun{Kind: "backlog", Mode: loadkit.ModeDaprPubSub, Scenario: BacklogHot, Round: 1, Carts: 50, AddItemsPerCart: 100,
		Commands: 5050, Applied: 5050, CommandsPerS: 300, WallCommandsPerS: 250, TotalsOK: true, TotalsChecked: 50}
	wrong := *ok
	wrong.Mode, wrong.CommandsPerS, wrong.TotalsOK, wrong.Mismatches = loadkit.ModeDaprPubSubBulk, 500, false, []string{"bl-hot-x-1: line 2 is I3"}
	in.Backlog = append(in.Backlog, ok, &wrong)
	in.DaprPubSubPeer = Peer{Available: true, Client: "bench/daprpeer (test)"}
	return in
}

func TestDaprPubSubFigures(t *testing.T) {
	res, md, _, err := Build(daprPubSubInput())
	if err != nil {
		t.Fatal(err)
	}
	d := res.DaprPubSub
	// At saturation the better mode is bulk; on the drain the mode that
	// left every cart right, though the other was faster.
	if d.SaturationMode != loadkit.ModeDaprPubSubBulk || *d.AddItemPerS != 150 || *d.WorkerOverPeer != 2 {
		t.Fatalf("saturation: %s %v %v", d.SaturationMode, d.AddItemPerS, d.WorkerOverPeer)
	}
	if d.HotDrainMode != loadkit.ModeDaprPubSub || *d.HotDrainPerS != 300 || *d.WorkerHotDrainPerS != 1100 {
		t.Fatalf("hot drain: %s %v %v", d.HotDrainMode, d.HotDrainPerS, d.WorkerHotDrainPerS)
	}
	if len(d.Modes) != 2 || *d.Modes[0].DaprdCPUPct != 20 || *d.Modes[1].HotDrainTotalsOK || !d.Modes[1].BulkSubscribe {
		t.Fatalf("modes %+v", d.Modes)
	}
	doc := resultsDoc(t, res)
	if v := doc["saturation"].(map[string]any)["dapr_pubsub_add_item_per_s"]; v != 150.0 {
		t.Errorf("saturation.dapr_pubsub_add_item_per_s = %v", v)
	}
	hot := doc["backlog"].(map[string]any)["hot"].(map[string]any)
	if v := hot["dapr_pubsub_drain_per_s"]; v != 300.0 {
		t.Errorf("backlog.hot.dapr_pubsub_drain_per_s = %v", v)
	}
	report := string(md)
	for _, want := range []string{
		"| Dapr pub/sub peer | bench/daprpeer (test) |",
		"| saturation add-items/s: worker as shipped (pooled) / Dapr pub/sub peer (dapr-pubsub-bulk) | 2.00× | 2.00× | ≥ 1.5× | pass |",
		// 1,100 / 300, but a round of the worker's own drain went wrong;
		// round by round, only the first has both.
		"| hot-cart backlog drain commands/s: worker as shipped (pooled) / Dapr pub/sub peer (dapr-pubsub) | 3.67× | 4.00× | ≥ 3× | **MISS** |",
		"| dapr-pubsub | off | 120 | 23.8 ms | 33 % | 20 % | 20.0 MiB | 300 | ok |",
		"| dapr-pubsub-bulk | on | 150 | 29.8 ms | 33 % | 20 % | 20.0 MiB | 500 | **FAIL** |",
		"Worker as shipped (pooled) / Dapr pub/sub peer at saturation: **2.00×**, 300 against 150 add-items/s (dapr-pubsub-bulk; floor ≥ 1.5×).",
		"Hot-cart drain: **3.67×**, 1,100 against 300 commands/s (dapr-pubsub; floor ≥ 3×).",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestBestDaprPubSubDrain(t *testing.T) {
	rate := func(v float64) *float64 { return &v }
	sum := func(mode string, v float64, ok bool) BacklogSummary {
		return BacklogSummary{Scenario: BacklogHot, Mode: mode, CommandsPerS: rate(v), TotalsOK: ok}
	}
	for _, tc := range []struct {
		name    string
		summary []BacklogSummary
		want    string
	}{
		{"none", nil, ""},
		{"faster", []BacklogSummary{sum(loadkit.ModeDaprPubSub, 300, true), sum(loadkit.ModeDaprPubSubBulk, 500, true)}, loadkit.ModeDaprPubSubBulk},
		{"right before fast", []BacklogSummary{sum(loadkit.ModeDaprPubSub, 300, true), sum(loadkit.ModeDaprPubSubBulk, 500, false)}, loadkit.ModeDaprPubSub},
		{"right before fast, either order", []BacklogSummary{sum(loadkit.ModeDaprPubSub, 500, false), sum(loadkit.ModeDaprPubSubBulk, 300, true)}, loadkit.ModeDaprPubSubBulk},
		{"both wrong", []BacklogSummary{sum(loadkit.ModeDaprPubSub, 500, false), sum(loadkit.ModeDaprPubSubBulk, 300, false)}, loadkit.ModeDaprPubSub},
		{"not the worker", []BacklogSummary{sum(loadkit.ModePooled, 900, true), sum(loadkit.ModeDaprPubSubBulk, 300, false)}, loadkit.ModeDaprPubSubBulk},
	} {
		got := ""
		if b := bestDaprPubSubDrain(tc.summary, BacklogHot); b != nil {
			got = b.Mode
		}
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestDaprPubSubPeerOf(t *testing.T) {
	runs := []*loadkit.Run{{Mode: loadkit.ModeDaprPubSubBulk, Client: "publisher...; bench/daprpeer bulk"}}
	if p := DaprPubSubPeerOf("ok: bench/daprpeer", runs); !p.Available || p.Client != "bench/daprpeer" {
		t.Errorf("ran with bulk only: %+v", p)
	}
	if p := DaprPubSubPeerOf("not available: disabled (BENCH_DAPR_PUBSUB=0)", nil); p.Available || !strings.Contains(p.Reason, "disabled") {
		t.Errorf("disabled: %+v", p)
	}
}
