package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeIdle writes an idle run as `loadgen idle` does and returns its path.
func writeIdle(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "idle.json")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// idleFile is three windows of 20 s: the worker at 0.2 % of a core
// (median), its NATS server at 0.6 %, over the floor.
const idleFile = `{"kind": "idle", "settle_s": 15, "window_s": 20, "rounds": 3,
 "procs": {"worker": {"pid": 11, "cpu_pct_rounds": [0.25, 0.15, 0.2], "cpu_pct": 0.2},
           "nats": {"pid": 12, "cpu_pct_rounds": [0.6, 0.55, 0.7], "cpu_pct": 0.6}},
 "host_busy_pct_rounds": [3.2, 4, 12]}`

func TestIdleFiguresAndFloors(t *testing.T) {
	run, err := ReadIdle(writeIdle(t, idleFile))
	if err != nil || run == nil {
		t.Fatalf("%v %v", run, err)
	}
	in := testInput()
	in.Idle = run
	res, md, _, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	doc := resultsDoc(t, res)
	idle, ok := doc["idle"].(map[string]any)
	if !ok || idle["worker_cpu_pct"] != 0.2 || idle["nats_cpu_pct"] != 0.6 || idle["rounds"] != 3.0 || idle["window_s"] != 20.0 {
		t.Fatalf("results.json idle = %v", doc["idle"])
	}
	reportHas(t, md,
		"| an idle instance (pooled), no commands: the worker's CPU, % of one core | 0.20 % | 0.25 % / 0.15 % / 0.20 % | ≤ 0.5 % | pass |",
		"| an idle instance (pooled), no commands: its NATS server's CPU, % of one core | 0.60 % | 0.60 % / 0.55 % / 0.70 % | ≤ 0.5 % | **MISS** |",
		"## An idle instance",
		"15 s for the worker to take its partitions and park them, then 3 window(s) of 20 s",
		"| worker (pooled) | 0.20 % | 0.25 % / 0.15 % / 0.20 % | ≤ 0.5 % |",
		"| its nats-server | 0.60 % | 0.60 % / 0.55 % / 0.70 % | ≤ 0.5 % |",
		"| machine busy | – | 3 % / 4 % / 12 % | – |",
	)
	for _, f := range res.SpeedFloors {
		if strings.HasPrefix(f.Name, "an idle instance") && f.Detail != "at most; median of 3 windows of 20 s with no commands" {
			t.Errorf("%s: detail %q", f.Name, f.Detail)
		}
	}
}

// Without the idle file its two floors are not measured, the section says
// so, and results.json's idle is null.
func TestIdleNotMeasured(t *testing.T) {
	run, err := ReadIdle(filepath.Join(t.TempDir(), "missing.json"))
	if err != nil || run != nil {
		t.Fatalf("a missing file: %v %v", run, err)
	}
	res, md, _, err := Build(testInput())
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := resultsDoc(t, res)["idle"]; !ok || v != nil {
		t.Errorf("results.json idle = %v (present %v)", v, ok)
	}
	n := 0
	for _, f := range res.SpeedFloors {
		if strings.HasPrefix(f.Name, "an idle instance") {
			n++
			if f.Verdict != "not measured" || f.Pass != nil {
				t.Errorf("%s: %+v", f.Name, f)
			}
		}
	}
	if n != 2 {
		t.Errorf("%d idle floors, want 2", n)
	}
	if !strings.Contains(string(md), "Not measured (BENCH_IDLE=0") {
		t.Error("report does not say the idle instance was not measured")
	}
}

// A file that is not an idle run is refused, not read as zeros.
func TestReadIdleRefusesOtherFiles(t *testing.T) {
	for _, text := range []string{`{"kind": "backlog"}`, `not json`} {
		if _, err := ReadIdle(writeIdle(t, text)); err == nil {
			t.Errorf("%q accepted", text)
		}
	}
	if run, err := ReadIdle(""); run != nil || err != nil {
		t.Errorf("no path: %v %v", run, err)
	}
}
