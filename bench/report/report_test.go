package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cartworker/cartworker/bench/loadkit"
)

func i64(v int64) *int64 { return &v }

// fakeRun makes a run whose add-item latencies are base, 2×base, ... n×base
// microseconds over a 1 s window.
func fakeRun(mode, scenario string, users, round int, base int64, n int, dials, calls int64) *loadkit.Run {
	lat := make([]int64, n)
	for i := range lat {
		lat[i] = base * int64(i+1)
	}
	return &loadkit.Run{
		Mode: mode, Scenario: scenario, Users: users, Round: round, WindowS: 1, DurationS: 1, WarmupS: 0.5, ThinkMS: 100,
		LatenciesUS: map[string][]int64{
			loadkit.TypeCache: {base}, loadkit.TypeAddItem: lat, loadkit.TypeDelete: {base},
		},
		Dials: i64(dials), StateCalls: i64(calls), DialsTotal: i64(dials),
		WorkerRSSMaxMiB: 20, WorkerCPUS: 0.5, ElapsedS: 1.5, HostBusyPct: 80,
		LoadgenCPUS: 0.15, HostCPUS: 2.4,
		ProcCPUS: map[string]float64{"daprd": 0.75, "worker-pooled": 0.5, "extra": 0.03},
	}
}

// fakeBench is a complete small benchmark: pooled is 10× faster than
// per-request, the ceiling twice as fast as pooled at saturation.
func fakeBench() []*loadkit.Run {
	var runs []*loadkit.Run
	for _, u := range []int{1, 15} {
		for round := 1; round <= 2; round++ {
			runs = append(runs,
				fakeRun(loadkit.ModePooled, loadkit.ScenarioPaced, u, round, 50, 100, 0, 1000),
				fakeRun(loadkit.ModePerRequest, loadkit.ScenarioPaced, u, round, 500, 100, 1000, 1000),
				fakeRun(loadkit.ModeCeiling, loadkit.ScenarioPaced, u, round, 25, 100, 15, 1000),
				fakeRun(loadkit.ModePooled, loadkit.ScenarioClosed, u, round, 100, 100, 0, 1000),
				fakeRun(loadkit.ModePerRequest, loadkit.ScenarioClosed, u, round, 1000, 40, 400, 400),
				fakeRun(loadkit.ModeCeiling, loadkit.ScenarioClosed, u, round, 80, 120, 15, 1000),
				fakeRun(loadkit.ModeGoSDK, loadkit.ScenarioClosed, u, round, 40, 200, 1, 1000),
				fakeRun(loadkit.ModeWorkerGRPC, loadkit.ScenarioClosed, u, round, 90, 150, 1, 1000),
				fakeRun(loadkit.ModeWatermill, loadkit.ScenarioClosed, u, round, 120, 100, 1, 1000),
			)
		}
	}
	for _, r := range []*loadkit.Run{
		fakeRun(loadkit.ModePooled, loadkit.ScenarioClosed, 64, 1, 100, 300, 0, 3000),
		fakeRun(loadkit.ModePerRequest, loadkit.ScenarioClosed, 64, 1, 1000, 100, 1000, 1000),
		fakeRun(loadkit.ModeCeiling, loadkit.ScenarioClosed, 64, 1, 50, 400, 16, 4000),
		fakeRun(loadkit.ModeGoSDK, loadkit.ScenarioClosed, 64, 1, 40, 500, 1, 5000),
		fakeRun(loadkit.ModeWorkerGRPC, loadkit.ScenarioClosed, 64, 1, 80, 390, 1, 4000),
		fakeRun(loadkit.ModeWatermill, loadkit.ScenarioClosed, 64, 1, 150, 200, 1, 2000),
	} {
		r.Saturation = true
		runs = append(runs, r)
	}
	// The pooled worker's connections over the run: 12 at the end.
	runs[0].DialsTotal = i64(12)
	runs[0].Dials = i64(12)
	return runs
}

// fakeBacklog is two rounds of the hot backlog drained by the worker
// (1,200 and 1,000 commands/s, the second with a wrong cart) and one by the
// Watermill peer (400/s).
func fakeBacklog() []*BacklogRun {
	mk := func(mode string, round int, rate float64, ok bool) *BacklogRun {
		r := &BacklogRun{Kind: "backlog", Mode: mode, Scenario: BacklogHot, Round: round, Carts: 50, AddItemsPerCart: 100,
			Commands: 5050, Applied: 5050, CommandsPerS: rate, WallCommandsPerS: rate * 0.9, DrainS: 5050 / rate,
			PeakRSSMiB: 30, TotalsOK: ok, TotalsChecked: 50, BatchNote: "n/a: no -metrics URL (not the worker)"}
		if !ok {
			r.Mismatches = []string{"bl-hot-x-3: 99 lines, published 100"}
		}
		return r
	}
	w1, w2 := mk(loadkit.ModePooled, 1, 1200, true), mk(loadkit.ModePooled, 2, 1000, false)
	for _, r := range []*BacklogRun{w1, w2} {
		r.Batch, r.BatchNote = &BatchSizes{
			Buckets: []Bucket{{"1", 100}, {"2", 300}, {"4", 900}, {"8", 1010}, {"+Inf", 1010}}, Sum: 5050, Count: 1010,
		}, ""
		r.Batch.finish()
	}
	return []*BacklogRun{w1, w2, mk(loadkit.ModeWatermill, 1, 400, true)}
}

func testInput() Input {
	return Input{
		Backlog: fakeBacklog(), WatermillProtocol: "grpc", PacedSamples: 150,
		WatermillPeer: Peer{Available: true, Client: "bench/watermillpeer"},
		Runs:          fakeBench(), Docs: loadkit.SyntheticDocs(), PoolLimit: 50, Concurrency: 16,
		Machine:  Machine{Cores: 2, CPUModel: "Test CPU", GoVersion: "go1.26"},
		Now:      time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Peer:     Peer{Available: true, Client: "github.com/dapr/go-sdk v1.14.2"},
		Versions: []Version{{Name: "daprd", Value: "1.18.0"}},
	}
}

func TestBuildReportResults(t *testing.T) {
	res, md, svg, err := Build(testInput())
	if err != nil {
		t.Fatal(err)
	}
	checkSaturation(t, res)
	checkRatios(t, res)
	checkFloors(t, res)
	checkResultsKeys(t, res)
	report := string(md)
	for _, s := range wantReportLines() {
		if !strings.Contains(report, s) {
			t.Errorf("report lacks %q", s)
		}
	}
	checkSVG(t, svg)
}

// checkSaturation checks the run's configuration and saturation figures.
func checkSaturation(t *testing.T, res Results) {
	t.Helper()
	if res.Config.SaturationUsers != 64 || len(res.Config.Users) != 2 || res.Config.Rounds != 2 {
		t.Fatalf("config %+v", res.Config)
	}
	s := res.Saturation
	// Pooled 300/s, per-request 100/s, ceiling 400/s.
	if *s.WorkerAddItemPerS != 300 || *s.PerRequestAddItemPerS != 100 || *s.CeilingAddItemPerS != 400 || *s.GoSDKAddItemPerS != 500 {
		t.Fatalf("saturation %+v", s)
	}
	if *s.WorkerOverPerRequest != 3 || *s.WorkerOverCeiling != 0.75 || *res.Ratios.WorkerSaturationOverCeiling != 0.75 {
		t.Fatalf("saturation ratios %v %v", *s.WorkerOverPerRequest, *s.WorkerOverCeiling)
	}
	if res.WorkerRSSMiB15u == nil || *res.WorkerRSSMiB15u != 20 {
		t.Fatalf("rss15 %v", res.WorkerRSSMiB15u)
	}
}

// checkRatios checks the pooled / per-request, HTTP / go-sdk and paced
// pooled / ceiling ratios.
func checkRatios(t *testing.T, res Results) {
	t.Helper()
	// Paced 15u: pooled p99 is the 99th of 50..5000 µs = 4.95 ms; per-request 49.5 ms.
	var paced15 *ModeRatio
	for i, r := range res.Ratios.PooledOverPerRequest {
		if r.Scenario == loadkit.ScenarioPaced && r.Users == 15 {
			paced15 = &res.Ratios.PooledOverPerRequest[i]
		}
	}
	if paced15 == nil || *paced15.P99Ratio != 0.1 || *paced15.ThroughputRatio != 1 {
		t.Fatalf("pooled/per-request paced 15u: %+v", paced15)
	}
	if len(res.Ratios.HTTPOverGoSDK) != 3 { // 1, 15 and the saturation 64
		t.Fatalf("http/go-sdk rows %d", len(res.Ratios.HTTPOverGoSDK))
	}
	// Paced: the ceiling's latencies are half the pooled worker's.
	if got := res.Ratios.PacedPooledOverCeiling; len(got) != 2 || *got[1].P50Ratio != 2 || *got[1].P99Ratio != 2 || got[1].Users != 15 {
		t.Fatalf("paced pooled/ceiling %+v", got)
	}
}

// checkFloors checks the floors.
func checkFloors(t *testing.T, res Results) {
	t.Helper()
	floors := map[string]Floor{}
	for _, f := range res.Floors {
		floors[f.Name] = f
	}
	want := map[string]bool{
		"paced 15 users, pooled add-item p99":                              true, // 4.95 ms
		"closed-loop saturation, pooled / per-request add-item throughput": true, // 3×
		"closed-loop saturation, pooled / ceiling add-item throughput":     true, // 75 %
		"connections opened by the pooled worker over the whole run":       true, // 12
		"per-request worker: connections opened per state call":            true,
		"worker RSS at 15 users (pooled)":                                  true,
	}
	for name, pass := range want {
		f, ok := floors[name]
		if !ok || f.Pass == nil || *f.Pass != pass {
			t.Errorf("floor %q: %+v", name, f)
		}
	}
	if *floors["connections opened by the pooled worker over the whole run"].Value != 12 {
		t.Errorf("pooled dials %v", *floors["connections opened by the pooled worker over the whole run"].Value)
	}
}

// resultsDoc is res as results.json holds it, decoded without its types.
func resultsDoc(t *testing.T, res Results) map[string]any {
	t.Helper()
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// checkResultsKeys checks that results.json has the keys the issue asks
// for.
func checkResultsKeys(t *testing.T, res Results) {
	t.Helper()
	generic := resultsDoc(t, res)
	for _, k := range []string{"points", "saturation", "worker_rss_mib_15u"} {
		if _, ok := generic[k]; !ok {
			t.Errorf("results.json lacks %q", k)
		}
	}
	pt := generic["points"].([]any)[0].(map[string]any)
	for _, k := range []string{"mode", "scenario", "users", "type", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "throughput_per_s", "errors", "dials"} {
		if _, ok := pt[k]; !ok {
			t.Errorf("point lacks %q", k)
		}
	}
	sat := generic["saturation"].(map[string]any)
	for _, k := range []string{"users", "worker_add_item_per_s", "per_request_add_item_per_s", "ceiling_add_item_per_s"} {
		if _, ok := sat[k]; !ok {
			t.Errorf("saturation lacks %q", k)
		}
	}
}

// wantReportLines are lines REPORT.md must hold for testInput.
func wantReportLines() []string {
	return []string{
		"# cartworker load benchmark", "Test CPU", "| cores | 2 |", "daprd | 1.18.0",
		"**Earlier floors: 6 passed, 0 failed, 0 not measured.**",
		// Neither the Dapr pub/sub peer nor the idle step ran: their two
		// floors each are not measured.
		"**Faster than a direct Dapr client: 2 floor(s) passed, 3 missed, 4 not measured.**",
		"| worker CPU per command at saturation (pooled) | 1.10 ms | – | ≤ 0.25 ms | **MISS** |",
		"| largest cartworker RSS over the run, backlog drains included | 30.0 MiB | – | ≤ 48 MiB | pass |",
		// Speed floors: pooled 300/s over the ceiling's 400/s; hot drain
		// median 1,100/s over 400/s = 2.75 but a round failed its totals;
		// worker-grpc 390/s over watermill 200/s. The paced p99, 4.95 /
		// 2.48 ms, is a figure, not a floor.
		"| saturation add-items/s: worker as shipped (pooled) / HTTP ceiling | 0.75× | 0.75× | ≥ 0.9× | **MISS** |",
		"| hot-cart backlog drain commands/s (pooled) / HTTP ceiling add-items/s at saturation | 2.75× | 3.00× / 2.50× | ≥ 2.5× | **MISS** |",
		"| saturation add-items/s: worker / Watermill peer, both over grpc (worker-grpc) | 1.95× | 1.95× | ≥ 1.5× | pass |",
		"### Figures, not floors",
		"| paced 15 users add-item p99: worker as shipped (pooled) / HTTP ceiling | 2.00× | 2.00× / 2.00× | median of the rounds' p99",
		"## Paced p99 between rounds (add-item)",
		"| pooled | 15 | 200 | 100 / 100 | 4.95 / 4.95 | 4.95 | 4.95 | 4.95 | 0 % | 4.95 |",
		"## Backlog drain",
		"| hot (50 × 100) | pooled | 5,050 | 1,100 | 1,200 / 1,000 | 18 % | 990 | 2.75× | 5.00 | ≤ 4 / ≤ 8 / ≤ 8 | n/a | 30.0 MiB |",
		"**FAIL** (1 of 2 rounds)",
		"- **pooled hot round 2 FAILED:** TOTALS WRONG",
		"| hot (50 × 100) | watermill | 5,050 | 400 | 400 | n/a | 360 | 1.00× | n/a | n/a: no -metrics URL (not the worker) |",
		"| worker-grpc | 390 | 31.0 ms | 20.0 MiB | 33 % |",
		"Worker / Watermill peer: **1.95×**",
		"Backlog drains, worker / Watermill peer (commands/s): hot: pooled / watermill 2.75×.",
		"4,200 ms", "680 ms", "3.45", "2.63", "67.0 ms", "69.0 ms",
		"![add-item p50 and p99", "latency.svg",
		"| paced | 15 | 4.95 ms | 49.5 ms | 0.10× |",
		"### Paced: the worker against the bare state calls (add-item)",
		"| 15 | 2.50 ms | 1.25 ms | 2.00× | 4.95 ms | 2.48 ms | 2.00× |",
		"the ceiling at the same pacing with no NATS and no worker, had an add-item p99 of 2.48 ms.",
		"Worker saturation throughput / ceiling: **75 %**",
		"### paced (think 100 ms)", "### closed-loop", "64 (sat.)",
		// 2.4 CPU-s busy over 1.5 s: daprd 50 %, worker 33 %, extra 2 %,
		// loadgen 10 %, other (2.4-0.75-0.5-0.03-0.15)/1.5 = 65 %.
		"| mode | worker-pooled | daprd | extra | loadgen | other | machine busy |",
		"| pooled | 33 | 50 | 2 | 10 | 65 | 160 % |",
	}
}

// reportHas checks that REPORT.md, md, holds every line of want.
func reportHas(t *testing.T, md []byte, want ...string) {
	t.Helper()
	for _, w := range want {
		if !bytes.Contains(md, []byte(w)) {
			t.Errorf("report lacks %q", w)
		}
	}
}

func checkSVG(t *testing.T, svg []byte) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(svg))
	paths, texts := 0, 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("chart is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			switch se.Name.Local {
			case "path":
				paths++
			case "text":
				texts++
			}
		}
	}
	// Paced: pooled, per-request, ceiling; closed loop: the same and
	// watermill; each p50 and p99.
	if paths != 14 {
		t.Errorf("chart has %d series paths, want 14", paths)
	}
	if texts < 20 {
		t.Errorf("chart has only %d labels", texts)
	}
}

func TestReportWithMissingModes(t *testing.T) {
	in := testInput()
	var runs []*loadkit.Run
	for _, r := range in.Runs {
		if r.Mode == loadkit.ModePooled && r.Scenario == loadkit.ScenarioPaced {
			runs = append(runs, r)
		}
	}
	in.Runs = runs
	in.Peer = Peer{Reason: "not available: test"}
	res, md, svg, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	if res.Saturation.WorkerAddItemPerS != nil || res.Ratios.WorkerSaturationOverCeiling != nil {
		t.Fatalf("saturation should be unmeasured: %+v", res.Saturation)
	}
	if !strings.Contains(string(md), "not measured") || !strings.Contains(string(md), "not available: test") {
		t.Error("report does not say what is missing")
	}
	dec := xml.NewDecoder(bytes.NewReader(svg))
	for {
		if _, err := dec.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("chart: %v", err)
		}
	}
}

func TestFormatting(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 3.14159: "3.14", 15.86: "15.9", 4200: "4,200", 123456.7: "123,457"} {
		if got := ms(in); got != want {
			t.Errorf("ms(%v) = %q, want %q", in, got, want)
		}
	}
	if thousands(-1234567.891, 2) != "-1,234,567.89" {
		t.Errorf("thousands: %s", thousands(-1234567.891, 2))
	}
	if tickLabel(2000) != "2k" || tickLabel(0.5) != "0.5" || tickLabel(20) != "20" {
		t.Error("tick labels")
	}
}

// An external check reads these keys of results.json; they must be there
// with the figures they name.
func TestResultsKeysTheExternalCheckReads(t *testing.T) {
	res, _, _, err := Build(testInput())
	if err != nil {
		t.Fatal(err)
	}
	doc := resultsDoc(t, res)
	get := func(path ...string) any {
		var v any = doc
		for _, k := range path {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		}
		return v
	}
	if get("saturation", "transport") != "grpc" {
		t.Fatalf("saturation.transport %v", get("saturation", "transport"))
	}
	if _, ok := get("saturation", "watermill_add_item_per_s").(float64); !ok {
		t.Fatalf("saturation.watermill_add_item_per_s %v", get("saturation", "watermill_add_item_per_s"))
	}
	if get("backlog", "hot", "drain_per_s") != 1100.0 {
		t.Fatalf("backlog.hot.drain_per_s %v", get("backlog", "hot", "drain_per_s"))
	}
	if mb, ok := get("backlog", "hot", "mean_batch").(float64); !ok || mb <= 1 {
		t.Fatalf("backlog.hot.mean_batch %v", get("backlog", "hot", "mean_batch"))
	}
	hotRSS := get("backlog", "hot", "peak_rss_mib").(float64)
	if rss, ok := get("max_worker_rss_mib").(float64); !ok || rss < hotRSS || rss < *res.WorkerRSSMiB15u {
		t.Fatalf("max_worker_rss_mib %v (hot drain %v, 15 users %v)", get("max_worker_rss_mib"), hotRSS, *res.WorkerRSSMiB15u)
	}
}

// The paced p99 against the ceiling's is a figure with its rounds, judged
// by no floor.
func TestPacedP99IsAFigureNotAFloor(t *testing.T) {
	res, _, _, err := Build(testInput())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range res.SpeedFloors {
		if strings.Contains(f.Name, "paced") {
			t.Errorf("paced floor still judged: %+v", f)
		}
	}
	if len(res.Figures) != 1 || res.Figures[0].Value == nil || *res.Figures[0].Value != 2 || len(res.Figures[0].Rounds) != 2 {
		t.Fatalf("figures %+v", res.Figures)
	}
}
