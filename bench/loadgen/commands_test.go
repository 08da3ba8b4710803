package main

import (
	"bytes"
	"context"
	"go/parser"
	"go/token"
	"io"
	"math"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cartworker/cartworker/bench/loadkit"
	"github.com/cartworker/cartworker/bench/report"
	workerconsumer "github.com/cartworker/cartworker/internal/consumer"
	"github.com/cartworker/cartworker/internal/metrics"
)

// reportRuns are the pooled and the per-request worker at one user count:
// enough for a report whose connection floors pass.
func reportRuns() []*loadkit.Run {
	mk := func(mode string, dials int64) *loadkit.Run {
		lat := make([]int64, 100)
		for i := range lat {
			lat[i] = int64(100 * (i + 1))
		}
		calls := int64(1000)
		return &loadkit.Run{
			Mode: mode, Scenario: loadkit.ScenarioClosed, Users: 1, Round: 1, WindowS: 1, DurationS: 1,
			LatenciesUS: map[string][]int64{loadkit.TypeAddItem: lat},
			Dials:       &dials, StateCalls: &calls, DialsTotal: &dials,
		}
	}
	return []*loadkit.Run{mk(loadkit.ModePooled, 0), mk(loadkit.ModePerRequest, 1000)}
}

func TestRunReportWritesFiles(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "raw")
	if err := os.Mkdir(raw, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, r := range reportRuns() {
		if err := r.WriteFile(filepath.Join(raw, strings.Repeat("r", i+1)+".json")); err != nil {
			t.Fatal(err)
		}
	}
	idle := filepath.Join(dir, "idle.json")
	if err := os.WriteFile(idle, []byte(`{"kind":"idle","window_s":20,"rounds":1,"procs":{"worker":{"pid":1,"cpu_pct_rounds":[0.25],"cpu_pct":0.25}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"report", "-raw", raw, "-out", out, "-peer", "ok", "-version", "daprd=1.18.0", "-idle", idle}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	if res, err := os.ReadFile(filepath.Join(out, report.ResultsFile)); err != nil || !strings.Contains(string(res), `"worker_cpu_pct": 0.25`) {
		t.Errorf("results.json lacks the idle worker's CPU (%v)", err)
	}
	for _, f := range []string{report.ReportFile, report.ResultsFile, report.ChartFile} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	if !strings.Contains(stdout.String(), "pass") {
		t.Errorf("stdout: %s", stdout.String())
	}
}

func TestParseWorkerMetrics(t *testing.T) {
	text := `# HELP cartworker_state_connections_opened_total TCP connections dialled to Dapr.
# TYPE cartworker_state_connections_opened_total counter
cartworker_state_connections_opened_total 7
cartworker_state_requests_total{code="200",op="get"} 1200
cartworker_state_requests_total{code="204",op="save"} 1.2e+03
cartworker_state_requests_total{code="timeout",op="delete"} 3
cartworker_state_requests_total{code="OK",op="get"} 5
cartworker_state_requests_total{code="Aborted",op="save"} 2
cartworker_commands_total{outcome="applied",type="add-item"} 999
cartworker_command_duration_seconds_bucket{type="add-item",le="0.001"} 3
cartworker_command_duration_seconds_sum{type="add-item"} 1.5
cartworker_command_duration_seconds_count{type="add-item"} 300
cartworker_command_duration_seconds_sum{type="cache"} 0.5
cartworker_command_duration_seconds_count{type="cache"} 100
cartworker_command_stage_seconds_bucket{stage="fetch",le="0.001"} 10
cartworker_command_stage_seconds_sum{stage="fetch"} 0.4
cartworker_command_stage_seconds_count{stage="fetch"} 400
cartworker_command_stage_seconds_sum{stage="apply"} 1.2
cartworker_command_stage_seconds_count{stage="apply"} 400
`
	c, err := parseWorkerMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if c.Dials != 7 || c.StateCalls != 2410 || c.StateFailures != 5 || c.HandleS != 2 || c.Handled != 400 {
		t.Fatalf("%+v", c)
	}
	if len(c.Stages) != 2 || c.Stages["fetch"] != (sumCount{0.4, 400}) || c.Stages["apply"] != (sumCount{1.2, 400}) {
		t.Fatalf("stages %+v", c.Stages)
	}
	if _, err := parseWorkerMetrics(strings.NewReader("up 1\n")); err == nil {
		t.Fatal("missing dial metric not reported")
	}
}

func TestDriveFlagsValidate(t *testing.T) {
	for _, args := range [][]string{
		{"-scenario", "bursty"},
		{"-users", "0"},
		{"-duration", "0s"},
		{"-scenario", "paced", "-think", "0s"},
	} {
		fs := newFlagSet("t", io.Discard)
		var d driveFlags
		d.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if _, err := d.config(); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	fs := newFlagSet("t", io.Discard)
	var d driveFlags
	d.register(fs)
	_ = fs.Parse([]string{"-scenario", "closed-loop", "-think", "1s"})
	cfg, err := d.config()
	if err != nil || cfg.Think != 0 {
		t.Fatalf("closed-loop must ignore think: %v %v", cfg.Think, err)
	}
}

func TestUnknownSubcommand(t *testing.T) {
	err := run(context.Background(), []string{"explode"}, io.Discard, io.Discard)
	var u usageError
	if err == nil || !asUsage(err, &u) {
		t.Fatalf("got %v", err)
	}
}

func asUsage(err error, u *usageError) bool {
	v, ok := err.(usageError)
	if ok {
		*u = v
	}
	return ok
}

// The worker's own /metrics page, as internal/metrics serves it (with its
// # TYPE lines, histograms and the Go collectors), reads as the worker's
// counters and histograms.
func TestParseWorkerExposition(t *testing.T) {
	m := metrics.New()
	hooks := m.StateHooks()
	hooks.OnDial()
	hooks.OnDial()
	for range 5 {
		hooks.OnRequest("get", "200", time.Millisecond)
	}
	for _, code := range []string{"204", "OK", "409", "timeout"} {
		hooks.OnRequest("save", code, time.Millisecond)
	}
	m.CommandDone("add-item", "applied", 3*time.Millisecond)
	m.CommandDone("cache", "applied", 1500*time.Microsecond)
	m.CommandDone("add-item", "rejected", time.Millisecond)
	for _, n := range []int{1, 1, 2, 3, 5, 9, 200, 300} {
		m.Batch(n)
	}
	for _, n := range []int{1, 2, 2} {
		m.Apply(n)
	}
	// Two applied commands through a fetch: fetch 2 and 1 ms, queue 3 and
	// 1 ms, apply 4 and 2 ms, ack 1 and 3 ms; a third not through a fetch,
	// apply 3 ms and ack 1 ms.
	at := func(ms int) time.Time { return time.Unix(1_700_000_000, 0).Add(time.Duration(ms) * time.Millisecond) }
	m.Acked(workerconsumer.Stages{Stored: at(0), Fetched: at(2), Started: at(5), Applied: at(9), Acked: at(10)})
	m.Acked(workerconsumer.Stages{Stored: at(0), Fetched: at(1), Started: at(2), Applied: at(4), Acked: at(7)})
	m.Acked(workerconsumer.Stages{Started: at(0), Applied: at(3), Acked: at(4)})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	page := rec.Body.String()

	c, err := parseWorkerMetrics(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	if c.Dials != 2 || c.StateCalls != 9 || c.StateFailures != 2 || c.Handled != 3 || math.Abs(c.HandleS-0.0055) > 1e-9 {
		t.Fatalf("%+v", c)
	}
	checkStages(t, c.Stages)
	h, err := parseHistogram(strings.NewReader(page), metricBatchSize)
	if err != nil || h == nil {
		t.Fatalf("%v %v", h, err)
	}
	// Buckets 1, 2, 4 ... 128 and +Inf; 200 and 300 are past the last.
	if len(h.Buckets) != 9 || h.Buckets[0].LE != "1" || h.Buckets[0].Count != 2 || h.Buckets[7].LE != "128" ||
		h.Buckets[8].LE != "+Inf" || h.Buckets[8].Count != 8 || h.Sum != 521 || h.Count != 8 {
		t.Fatalf("batch sizes %+v", h)
	}
	if h.P50 != "4" || h.P90 != "+Inf" || h.Max != "+Inf" {
		t.Errorf("p50 %s p90 %s max %s", h.P50, h.P90, h.Max)
	}
	a, err := parseHistogram(strings.NewReader(page), metricApplyCarts)
	if err != nil || a == nil || a.Count != 3 || a.Sum != 5 || a.P50 != "2" || a.Max != "2" {
		t.Fatalf("carts per apply %+v %v", a, err)
	}
}

// checkStages checks the stage sums and counts of the page
// TestParseWorkerExposition serves: a command without a fetch time counts
// in apply and ack only.
func checkStages(t *testing.T, got map[string]sumCount) {
	t.Helper()
	want := map[string]sumCount{"fetch": {0.003, 2}, "queue": {0.004, 2}, "apply": {0.009, 3}, "ack": {0.005, 3}}
	if len(got) != len(want) {
		t.Fatalf("stages %+v", got)
	}
	for st, w := range want {
		if g := got[st]; g.Count != w.Count || math.Abs(g.Sum-w.Sum) > 1e-9 {
			t.Errorf("stage %s: %+v, want %+v", st, g, w)
		}
	}
}

// A run's stage times are the observations between the two readings: a
// stage that saw none in between is left out, and so is one the first
// reading had not seen at all and the second has none of.
func TestStageMeans(t *testing.T) {
	before := map[string]sumCount{"fetch": {1, 100}, "queue": {0.5, 100}, "ack": {2, 100}}
	after := map[string]sumCount{"fetch": {1.3, 200}, "queue": {0.5, 100}, "apply": {0.4, 100}, "ack": {2.05, 150}}
	got := stageMeans(before, after)
	want := map[string]float64{"fetch": 3, "apply": 4, "ack": 1}
	if len(got) != len(want) {
		t.Fatalf("%v, want %v", got, want)
	}
	for st, w := range want {
		if math.Abs(got[st]-w) > 1e-9 {
			t.Errorf("%s: %v, want %v", st, got[st], w)
		}
	}
	if got := stageMeans(nil, nil); got != nil {
		t.Errorf("no stages: %v", got)
	}
}

// A page that is not the text format is an error, not a page without the
// metrics.
func TestParseMetricsRejectsGarbage(t *testing.T) {
	if _, err := parseWorkerMetrics(strings.NewReader("cartworker_state_connections_opened_total{ 3\n")); err == nil {
		t.Error("a malformed page was read")
	}
}

// Every subcommand is in the usage text and in the package doc, which is
// read from main.go.
func TestUsageListsEverySubcommand(t *testing.T) {
	var stderr bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, io.Discard, &stderr); err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile(token.NewFileSet(), "main.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	doc := f.Doc.Text()
	for _, sc := range subcommands() {
		if !strings.Contains(stderr.String(), "  "+sc.name+" ") {
			t.Errorf("usage lacks %s:\n%s", sc.name, stderr.String())
		}
		if !strings.Contains(doc, "loadgen "+sc.name) {
			t.Errorf("package doc lacks loadgen %s", sc.name)
		}
	}
}
