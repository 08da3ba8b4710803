package loadkit

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cartworker/cartworker/internal/statepool"
)

func TestPercentileNearestRank(t *testing.T) {
	s := make([]int64, 100)
	for i := range s {
		s[i] = int64(i + 1) // 1..100
	}
	for _, tc := range []struct {
		p    float64
		want int64
	}{{50, 50}, {90, 90}, {95, 95}, {99, 99}, {100, 100}, {0.5, 1}, {0, 1}, {99.9, 100}} {
		if got := Percentile(s, tc.p); got != tc.want {
			t.Errorf("p%v of 1..100 = %d, want %d", tc.p, got, tc.want)
		}
	}
	if got := Percentile([]int64{7}, 99); got != 7 {
		t.Errorf("single sample p99 = %d", got)
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("no samples = %d", got)
	}
	// 10 samples: p99 is the largest, p50 the 5th, p90 the 9th.
	ten := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 1000}
	if Percentile(ten, 99) != 1000 || Percentile(ten, 50) != 5 || Percentile(ten, 90) != 9 {
		t.Errorf("ten samples: p50 %d p90 %d p99 %d", Percentile(ten, 50), Percentile(ten, 90), Percentile(ten, 99))
	}
}

func TestSummarizeDoesNotSortInput(t *testing.T) {
	in := []int64{3000, 1000, 2000}
	s := Summarize(in)
	if in[0] != 3000 {
		t.Fatal("input was modified")
	}
	if s.Count != 3 || s.P50MS != 2 || s.MaxMS != 3 || s.MeanMS != 2 {
		t.Fatalf("summary %+v", s)
	}
	if (Summarize(nil) != Summary{}) {
		t.Fatal("empty summary not zero")
	}
}

func TestMedian(t *testing.T) {
	if Median([]float64{3, 1, 2}) != 2 || Median([]float64{4, 1, 3, 2}) != 2.5 || Median(nil) != 0 {
		t.Fatal("median")
	}
}

func TestRecorderWindow(t *testing.T) {
	from := time.Unix(100, 0)
	to := from.Add(10 * time.Second)
	r := NewRecorder(from, to, 2)
	r.Record(TypeAddItem, from.Add(-time.Millisecond), time.Millisecond, nil) // warm-up
	r.Record(TypeAddItem, from, 1500*time.Microsecond, nil)
	r.Record(TypeAddItem, from.Add(time.Second), 2*time.Millisecond, nil)
	r.Record(TypeAddItem, from.Add(2*time.Second), 3*time.Millisecond, nil) // over the cap
	r.Record(TypeAddItem, to, time.Millisecond, nil)                        // drain
	r.Record(TypeCache, from.Add(time.Second), time.Second, errors.New("boom"))
	r.Record(TypeCache, from.Add(time.Second), time.Second, errors.New("boom"))
	var run Run
	r.Fill(&run, to.Add(time.Hour))
	if got := run.LatenciesUS[TypeAddItem]; len(got) != 2 || got[0] != 1500 || got[1] != 2000 {
		t.Fatalf("latencies %v", got)
	}
	if run.Dropped[TypeAddItem] != 1 || run.Errors[TypeCache] != 2 || len(run.ErrorExamples) != 1 {
		t.Fatalf("dropped %v errors %v examples %v", run.Dropped, run.Errors, run.ErrorExamples)
	}
	if run.WindowS != 10 {
		t.Fatalf("window %v", run.WindowS)
	}
	// Cut short: the window ends when the run did.
	r.Fill(&run, from.Add(4*time.Second))
	if run.WindowS != 4 {
		t.Fatalf("short window %v", run.WindowS)
	}
}

func ptr(v int64) *int64 { return &v }

func TestAggregateMergesRounds(t *testing.T) {
	mk := func(round int, lat []int64, window float64, dials int64) *Run {
		return &Run{
			Mode: ModePooled, Scenario: ScenarioPaced, Users: 15, Round: round, WindowS: window,
			LatenciesUS: map[string][]int64{TypeAddItem: lat, TypeCache: {1000}},
			Errors:      map[string]int{TypeDelete: 1},
			Dials:       ptr(dials), StateCalls: ptr(100), DialsTotal: ptr(dials + 10),
			WorkerRSSMaxMiB: float64(20 + round), WorkerCPUS: 1, ElapsedS: 10, HostBusyPct: 50,
		}
	}
	runs := []*Run{
		mk(2, []int64{4000, 5000, 6000, 7000}, 2, 3),
		mk(1, []int64{1000, 2000, 3000}, 1, 2),
		{Mode: ModePerRequest, Scenario: ScenarioPaced, Users: 15, Round: 1, WindowS: 1,
			LatenciesUS: map[string][]int64{TypeAddItem: {9000}}},
		{Mode: ModePooled, Scenario: ScenarioPaced, Users: 1, Round: 1, WindowS: 1,
			LatenciesUS: map[string][]int64{TypeAddItem: {1}}},
		{Mode: ModePooled, Scenario: ScenarioClosed, Users: 1, Round: 1, WindowS: 1,
			LatenciesUS: map[string][]int64{TypeAddItem: {1}}},
	}
	pts := Aggregate(runs)
	// Order: paced 1u pooled, paced 15u pooled (cache, add-item, delete),
	// paced 15u per-request, closed-loop 1u pooled.
	var order []string
	for _, p := range pts {
		order = append(order, p.Scenario+"/"+p.Mode+"/"+p.Type)
	}
	want := []string{
		"paced/pooled/add-item",
		"paced/pooled/cache", "paced/pooled/add-item", "paced/pooled/delete",
		"paced/per-request/add-item",
		"closed-loop/pooled/add-item",
	}
	if len(order) != len(want) {
		t.Fatalf("order %v", order)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("order %v, want %v", order, want)
		}
	}
	p, ok := Find(pts, ModePooled, ScenarioPaced, 15, TypeAddItem)
	if !ok {
		t.Fatal("point missing")
	}
	// 7 merged samples 1..7 ms: p50 is the 4th, p99 and max the 7th.
	if p.Count != 7 || p.P50MS != 4 || p.P99MS != 7 || p.MaxMS != 7 || p.Rounds != 2 {
		t.Fatalf("point %+v", p)
	}
	// Throughput: round 1 3/1s, round 2 4/2s: median of [3, 2] = 2.5.
	if p.ThroughputPerS != 2.5 || p.ThroughputRounds[0] != 3 || p.ThroughputRounds[1] != 2 {
		t.Fatalf("throughput %v %v", p.ThroughputPerS, p.ThroughputRounds)
	}
	if p.Dials != 5 || p.StateCalls != 200 || p.DialsTotal != 13 || p.WorkerRSSMiB != 22 {
		t.Fatalf("dials %d calls %d total %d rss %v", p.Dials, p.StateCalls, p.DialsTotal, p.WorkerRSSMiB)
	}
	if math.Abs(p.WorkerCPUPct-10) > 1e-9 || math.Abs(p.HostBusyPct-50) > 1e-9 || p.WindowS != 3 {
		t.Fatalf("cpu %v busy %v window %v", p.WorkerCPUPct, p.HostBusyPct, p.WindowS)
	}
	d, _ := Find(pts, ModePooled, ScenarioPaced, 15, TypeDelete)
	if d.Errors != 2 || d.Count != 0 {
		t.Fatalf("delete point %+v", d)
	}
	pr, _ := Find(pts, ModePerRequest, ScenarioPaced, 15, TypeAddItem)
	if pr.Dials != -1 || pr.DialsTotal != -1 {
		t.Fatalf("unknown dials should be -1: %+v", pr)
	}
}

func TestRunFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.json")
	in := &Run{Mode: ModeCeiling, Scenario: ScenarioClosed, Users: 3, Round: 1, WindowS: 1,
		LatenciesUS: map[string][]int64{TypeAddItem: {1, 2}}, Dials: ptr(3)}
	if err := in.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	out, err := ReadRun(path)
	if err != nil {
		t.Fatal(err)
	}
	if out.Users != 3 || *out.Dials != 3 || len(out.LatenciesUS[TypeAddItem]) != 2 {
		t.Fatalf("%+v", out)
	}
}

// memOps is an in-memory store with ETags, made a cartcache.Store by
// statepool.OneByOne, to test Direct and Drive.
type memOps struct {
	mu    sync.Mutex
	data  map[string][]byte
	etags map[string]int
	ttls  map[string]time.Duration
	calls atomic.Int64
}

var _ statepool.Single = (*memOps)(nil)

func newMemOps() *memOps {
	return &memOps{data: map[string][]byte{}, etags: map[string]int{}, ttls: map[string]time.Duration{}}
}

func (m *memOps) Get(_ context.Context, key string) (statepool.Entry, error) {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.data[key]
	if !ok {
		return statepool.Entry{}, statepool.ErrNotFound
	}
	return statepool.Entry{Value: v, ETag: time.Duration(m.etags[key]).String()}, nil
}

func (m *memOps) Save(_ context.Context, key string, v []byte, opts statepool.SaveOptions) error {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if opts.ETag != "" && opts.ETag != time.Duration(m.etags[key]).String() {
		return statepool.ErrETagMismatch
	}
	m.data[key] = v
	m.etags[key]++
	m.ttls[key] = opts.TTL
	return nil
}

func (m *memOps) Delete(_ context.Context, key, etag string) error {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if etag != "" && etag != time.Duration(m.etags[key]).String() {
		return statepool.ErrETagMismatch
	}
	delete(m.data, key)
	return nil
}

func TestDirectScenarioStateCalls(t *testing.T) {
	ops := newMemOps()
	docs := SyntheticDocs()
	if err := docs.Validate(); err != nil {
		t.Fatal(err)
	}
	s := &Direct{Store: statepool.OneByOne{Single: ops}, Docs: docs}
	ctx := context.Background()
	if err := s.Do(ctx, TypeCache, "c1", 0); err != nil {
		t.Fatal(err)
	}
	for k := 1; k <= Lines; k++ {
		if err := s.Do(ctx, TypeAddItem, "c1", k); err != nil {
			t.Fatal(err)
		}
	}
	if string(ops.data["c1"]) != string(docs.Doc(Lines)) {
		t.Fatal("cart does not hold the 20-line document")
	}
	if err := s.Do(ctx, TypeDelete, "c1", 0); err != nil {
		t.Fatal(err)
	}
	if _, ok := ops.data["c1"]; ok {
		t.Fatal("cart not deleted")
	}
	if _, ok := ops.data["c1:tombstone"]; !ok {
		t.Fatal("no tombstone")
	}
	if ops.ttls["c1:tombstone"] != time.Hour || ops.ttls["c1"] != 0 {
		t.Fatalf("TTLs: tombstone %v, cart %v", ops.ttls["c1:tombstone"], ops.ttls["c1"])
	}
	// Same calls as the worker: cache 3, add-item 2 each, delete 3.
	if got := ops.calls.Load(); got != 3+2*Lines+3 {
		t.Fatalf("%d state calls", got)
	}
	if err := s.Do(ctx, TypeAddItem, "missing", 1); !errors.Is(err, ErrMissing) {
		t.Fatalf("add-item on a missing cart: %v", err)
	}
	first, last := docs.Sizes()
	if first >= last || last < 5000 {
		t.Fatalf("synthetic sizes %d..%d", first, last)
	}
}

func TestDriveClosedLoop(t *testing.T) {
	ops := newMemOps()
	cfg := DriveConfig{Users: 3, Warmup: 20 * time.Millisecond, Duration: 150 * time.Millisecond, CartPrefix: "t"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rec, _, end := Drive(context.Background(), &Direct{Store: statepool.OneByOne{Single: ops}, Docs: SyntheticDocs()}, cfg)
	if time.Since(start) > 5*time.Second {
		t.Fatal("drive overran")
	}
	var run Run
	rec.Fill(&run, end)
	if run.Count(TypeAddItem) == 0 || run.Count(TypeCache) == 0 || len(run.Errors) != 0 {
		t.Fatalf("counts add %d cache %d errors %v", run.Count(TypeAddItem), run.Count(TypeCache), run.Errors)
	}
	// Every cart was deleted at the end, recorded or not.
	ops.mu.Lock()
	defer ops.mu.Unlock()
	for k := range ops.data {
		if len(k) < 10 || k[len(k)-10:] != ":tombstone" {
			t.Fatalf("cart %s left behind", k)
		}
	}
}

type failing struct{ n atomic.Int64 }

func (f *failing) Do(ctx context.Context, typ, cart string, line int) error {
	f.n.Add(1)
	return errors.New("down")
}

func TestDrivePacedErrorsAreBounded(t *testing.T) {
	f := &failing{}
	cfg := DriveConfig{Users: 2, Duration: 200 * time.Millisecond, Think: 10 * time.Millisecond, ErrorPause: 20 * time.Millisecond}
	rec, _, end := Drive(context.Background(), f, cfg)
	var run Run
	rec.Fill(&run, end)
	if run.Errors[TypeCache] == 0 {
		t.Fatal("no errors recorded")
	}
	// Each failure pauses, so two users cannot spin: well under 100 calls.
	if n := f.n.Load(); n > 100 {
		t.Fatalf("%d calls against a failing target", n)
	}
}

func TestParsers(t *testing.T) {
	kib, err := parseStatusKiB([]byte("Name:\tworker\nVmRSS:\t   23456 kB\n"), "VmRSS:")
	if err != nil || kib != 23456 {
		t.Fatalf("rss %d %v", kib, err)
	}
	cpu, err := parseStatCPU([]byte("42 (a b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0"))
	if err != nil || cpu != 3 {
		t.Fatalf("cpu %v %v", cpu, err)
	}
	a, _ := parseHostCPU([]byte("cpu 100 0 100 700 100 0 0 0 0 0\ncpu0 1"))
	b, _ := parseHostCPU([]byte("cpu 200 0 200 800 100 0 0 0 0 0\n"))
	if got := b.BusyPct(a); math.Abs(got-200.0/3) > 1e-9 {
		t.Fatalf("busy %v", got)
	}
}

func TestRunSummary(t *testing.T) {
	dials, calls := int64(3), int64(120)
	r := &Run{
		Mode: ModeGoSDK, Scenario: ScenarioClosed, Users: 64, Round: 2, Saturation: true, WindowS: 2,
		LatenciesUS:   map[string][]int64{TypeAddItem: {1000, 3000}},
		Errors:        map[string]int{TypeDelete: 1},
		Dials:         &dials,
		StateCalls:    &calls,
		HostBusyPct:   93.4,
		ErrorExamples: []string{"delete: timeout"},
	}
	want := "go-sdk      closed-loop  64u r2 (saturation):" +
		" cache p50 0.00ms p99 0.00ms 0.0/s;" +
		" add-item p50 1.00ms p99 3.00ms 1.0/s;" +
		" delete p50 0.00ms p99 0.00ms 0.0/s (1 errors);" +
		" dials 3/120 calls host busy 93%\n    error: delete: timeout"
	if got := r.Summary(); got != want {
		t.Errorf("Summary:\n got %q\nwant %q", got, want)
	}
}

func TestRoundP99Spread(t *testing.T) {
	mk := func(round int, base int64) *Run {
		lat := make([]int64, 100)
		for i := range lat {
			lat[i] = base * int64(i+1)
		}
		return &Run{Mode: ModePooled, Scenario: ScenarioPaced, Users: 15, Round: round, WindowS: 1,
			LatenciesUS: map[string][]int64{TypeAddItem: lat}}
	}
	// Round p99s: 99, 198 and 297 µs.
	pts := Aggregate([]*Run{mk(2, 2), mk(1, 1), mk(3, 3)})
	p, ok := Find(pts, ModePooled, ScenarioPaced, 15, TypeAddItem)
	if !ok {
		t.Fatal("no point")
	}
	if p.P99RoundMinMS != 0.099 || p.P99RoundMedianMS != 0.198 || p.P99RoundMaxMS != 0.297 || len(p.CountRounds) != 3 || p.CountRounds[0] != 100 {
		t.Fatalf("%+v", p)
	}
	if p.P99SpreadPct == nil || math.Abs(*p.P99SpreadPct-100) > 1e-9 {
		t.Fatalf("spread %v", p.P99SpreadPct)
	}
	if Spread([]float64{5}) != nil || Spread([]float64{0, 0}) != nil {
		t.Error("spread of one round or a zero median must be unknown")
	}
	if !ThroughNATS(ModeWatermill) || !ThroughNATS(ModeWorkerGRPC) || ThroughNATS(ModeCeiling) || ThroughNATS(ModeGoSDK) {
		t.Error("ThroughNATS")
	}
}

// A point's stage times are each the mean over the rounds that had it: a
// round whose worker exported none, or not every stage, does not pull the
// mean towards zero.
func TestAggregateStageMeans(t *testing.T) {
	mk := func(round int, stages map[string]float64) *Run {
		return &Run{Mode: ModePooled, Scenario: ScenarioClosed, Users: 15, Round: round, WindowS: 1,
			LatenciesUS: map[string][]int64{TypeAddItem: {1000}, TypeCache: {1000}}, WorkerStagesMS: stages}
	}
	pts := Aggregate([]*Run{
		mk(1, map[string]float64{"fetch": 1, "queue": 0.2, "apply": 2, "ack": 0.5}),
		mk(2, map[string]float64{"fetch": 3, "queue": 0.4, "apply": 4}),
		mk(3, nil),
	})
	want := map[string]float64{"fetch": 2, "queue": 0.3, "apply": 3, "ack": 0.5}
	for _, typ := range []string{TypeAddItem, TypeCache} {
		p, ok := Find(pts, ModePooled, ScenarioClosed, 15, typ)
		if !ok || len(p.WorkerStageMeanMS) != len(want) {
			t.Fatalf("%s: %+v", typ, p.WorkerStageMeanMS)
		}
		for st, v := range want {
			if math.Abs(p.WorkerStageMeanMS[st]-v) > 1e-9 {
				t.Errorf("%s %s: %v, want %v", typ, st, p.WorkerStageMeanMS[st], v)
			}
		}
	}
	if p := Aggregate([]*Run{mk(1, nil)}); p[0].WorkerStageMeanMS != nil {
		t.Errorf("no stages: %v", p[0].WorkerStageMeanMS)
	}
}
