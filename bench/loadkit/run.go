package loadkit

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Command types, as in package command (repeated so that this package stays
// free of the main module's dependencies).
const (
	TypeCache   = "cache"
	TypeAddItem = "add-item"
	TypeDelete  = "delete"
)

// Types lists the command types in scenario order.
var Types = []string{TypeCache, TypeAddItem, TypeDelete}

// Modes compared by the benchmark.
const (
	// ModePooled is the worker as shipped (its default state transport).
	ModePooled = "pooled"
	// ModePerRequest is the worker with WORKER_STATE_CLIENT=per-request.
	ModePerRequest = "per-request"
	// ModeWorkerGRPC and ModeWorkerHTTP are the worker with
	// WORKER_STATE_PROTOCOL=grpc and =http.
	ModeWorkerGRPC = "worker-grpc"
	ModeWorkerHTTP = "worker-http"
	// ModeWatermill is bench/watermillpeer, a Watermill router instead of
	// the worker.
	ModeWatermill = "watermill"
	// ModeDaprPubSub is bench/daprpeer, a Dapr app that daprd's
	// pubsub.jetstream component delivers the commands to, one ordered
	// subscription per partition; ModeDaprPubSubBulk is the same peer with
	// Dapr's (emulated) bulk subscribe.
	ModeDaprPubSub     = "dapr-pubsub"
	ModeDaprPubSubBulk = "dapr-pubsub-bulk"
	// ModeCeiling is the scenario's state calls straight to daprd through
	// the worker's pooled HTTP client, no NATS and no worker.
	ModeCeiling = "ceiling"
	// ModeGoSDK is the same calls through the Dapr Go SDK over gRPC.
	ModeGoSDK = "go-sdk"
	// ModeTraced is the pooled worker exporting its spans over OTLP. It
	// runs only in the tracing rounds, which the report keeps apart, so it
	// is not one of Modes.
	ModeTraced = "traced"
)

// Modes lists the modes in report order.
var Modes = []string{ModePooled, ModePerRequest, ModeWorkerGRPC, ModeWorkerHTTP, ModeWatermill, ModeDaprPubSub, ModeDaprPubSubBulk, ModeCeiling, ModeGoSDK}

// ThroughNATS reports whether mode sends commands through NATS to a
// consumer (the worker or a peer consuming the stream) rather than state calls
// straight to daprd.
func ThroughNATS(mode string) bool {
	switch mode {
	case ModeCeiling, ModeGoSDK:
		return false
	}
	return true
}

// WorkerStages are the stages of an applied command's way through the
// worker, in order, as the label stage of its
// cartworker_command_stage_seconds names them: fetch (stored by JetStream
// to fetched by the worker), queue (fetched to started by a pool
// goroutine), apply (started to its cart's read-modify-write returned) and
// ack (applied to its outcome event published and the command acked).
func WorkerStages() []string { return []string{"fetch", "queue", "apply", "ack"} }

// Scenarios.
const (
	ScenarioPaced  = "paced"
	ScenarioClosed = "closed-loop"
)

// DefaultMaxSamples bounds the latencies kept per command type in one run.
// At 8 bytes each it caps a run's memory at a few tens of MiB.
const DefaultMaxSamples = 1 << 20

// Run is the raw result of one measurement. It is written as JSON by
// bench/loadgen and bench/sdkpeer and read back by the report.
type Run struct {
	Mode       string  `json:"mode"`
	Scenario   string  `json:"scenario"`
	Users      int     `json:"users"`
	Round      int     `json:"round"`
	Saturation bool    `json:"saturation,omitempty"`
	ThinkMS    float64 `json:"think_ms"`
	WarmupS    float64 `json:"warmup_s"`
	DurationS  float64 `json:"duration_s"`
	// WindowS is the measured window actually run: DurationS unless the
	// run was cut short.
	WindowS   float64   `json:"window_s"`
	StartedAt time.Time `json:"started_at"`
	// Client describes what sent the state calls or commands.
	Client string `json:"client,omitempty"`

	// LatenciesUS holds the latency of every successful command that
	// started inside the window, in microseconds, by command type.
	LatenciesUS map[string][]int64 `json:"latencies_us"`
	// Errors counts failed commands that started inside the window.
	Errors map[string]int `json:"errors,omitempty"`
	// ErrorExamples holds a few distinct error messages.
	ErrorExamples []string `json:"error_examples,omitempty"`
	// Dropped counts samples beyond the per-type cap (counted in neither
	// latencies nor throughput).
	Dropped map[string]int `json:"dropped,omitempty"`

	// Dials is the number of TCP connections opened to Dapr during the whole
	// run (warm-up, window and drain), StateCalls the state API calls made
	// in the same interval; nil when unknown. DialsTotal is the process's
	// cumulative count at the end of the run.
	Dials      *int64 `json:"dials,omitempty"`
	StateCalls *int64 `json:"state_calls,omitempty"`
	DialsTotal *int64 `json:"dials_total,omitempty"`
	// StateFailures counts the worker's state calls answered with neither
	// 200 nor 204 (conflicts, server errors, timeouts), when known.
	StateFailures *int64 `json:"state_failures,omitempty"`

	// Process figures over the whole run. Zero when not measured.
	WorkerRSSMaxMiB float64 `json:"worker_rss_max_mib,omitempty"`
	WorkerCPUS      float64 `json:"worker_cpu_s,omitempty"`
	LoadgenCPUS     float64 `json:"loadgen_cpu_s,omitempty"`
	HostBusyPct     float64 `json:"host_busy_pct,omitempty"`
	ElapsedS        float64 `json:"elapsed_s,omitempty"`
	// HostCPUS is the CPU time the whole machine spent busy during the
	// run, and ProcCPUS that of each watched process (daprd, NATS, ...),
	// so that what the benchmark itself used can be told from the rest.
	HostCPUS float64 `json:"host_cpu_s,omitempty"`
	// WorkerHandleMS is the worker's own mean time per command, pull to
	// ack (cartworker_command_duration_seconds), over the whole run.
	WorkerHandleMS float64 `json:"worker_handle_mean_ms,omitempty"`
	// WorkerStagesMS is the worker's own mean time per stage of the
	// commands it applied over the whole run, in ms, by stage
	// (WorkerStages; cartworker_command_stage_seconds); nil when the
	// worker exports none.
	WorkerStagesMS map[string]float64 `json:"worker_stage_mean_ms,omitempty"`
	ProcCPUS       map[string]float64 `json:"proc_cpu_s,omitempty"`
	// SpansPerCommand is the spans the worker exported per command it
	// handled over the run, when it exported any (ModeTraced).
	SpansPerCommand *float64 `json:"spans_per_command,omitempty"`
}

// Count returns the successful samples of typ.
func (r *Run) Count(typ string) int { return len(r.LatenciesUS[typ]) }

// Throughput returns successful commands of typ per second of window.
func (r *Run) Throughput(typ string) float64 {
	if r.WindowS <= 0 {
		return 0
	}
	return float64(r.Count(typ)) / r.WindowS
}

// Summary is the one-line progress report of a run that bench/loadgen and
// bench/sdkpeer print as they finish it.
func (r *Run) Summary() string {
	var b strings.Builder
	sat := ""
	if r.Saturation {
		sat = " (saturation)"
	}
	fmt.Fprintf(&b, "%-11s %-11s %3du r%d%s:", r.Mode, r.Scenario, r.Users, r.Round, sat)
	for _, t := range Types {
		s := Summarize(r.LatenciesUS[t])
		fmt.Fprintf(&b, " %s p50 %.2fms p99 %.2fms %.1f/s", t, s.P50MS, s.P99MS, r.Throughput(t))
		if n := r.Errors[t]; n > 0 {
			fmt.Fprintf(&b, " (%d errors)", n)
		}
		b.WriteString(";")
	}
	if r.Dials != nil {
		fmt.Fprintf(&b, " dials %d", *r.Dials)
		if r.StateCalls != nil {
			fmt.Fprintf(&b, "/%d calls", *r.StateCalls)
		}
	}
	if r.WorkerRSSMaxMiB > 0 {
		fmt.Fprintf(&b, " rss %.1fMiB", r.WorkerRSSMaxMiB)
	}
	fmt.Fprintf(&b, " host busy %.0f%%", r.HostBusyPct)
	for _, e := range r.ErrorExamples {
		fmt.Fprintf(&b, "\n    error: %s", e)
	}
	return b.String()
}

// WriteFile writes r as JSON to path, atomically.
func (r *Run) WriteFile(path string) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReadRun reads a Run written by WriteFile.
func ReadRun(path string) (*Run, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Run
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Mode == "" || r.Scenario == "" || r.Users <= 0 {
		return nil, fmt.Errorf("%s: not a loadkit run (mode %q, scenario %q, users %d)", path, r.Mode, r.Scenario, r.Users)
	}
	return &r, nil
}

// ReadRuns reads every run (*.json) in dir, in file name order; none when
// dir holds none.
func ReadRuns(dir string) ([]*Run, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var runs []*Run
	for _, p := range paths {
		r, err := ReadRun(p)
		if err != nil {
			return nil, err
		}
		runs = append(runs, r)
	}
	return runs, nil
}

// maxErrorExamples bounds Run.ErrorExamples.
const maxErrorExamples = 5

// Recorder collects the outcome of commands. Only commands that start in
// [from, to) are counted: the warm-up before from and the drain after to
// are not. It is safe for concurrent use.
type Recorder struct {
	from, to time.Time
	max      int

	mu       sync.Mutex
	lat      map[string][]int64
	errs     map[string]int
	dropped  map[string]int
	examples []string
}

// NewRecorder returns a Recorder for the window [from, to) keeping at most
// maxPerType latencies per type (DefaultMaxSamples when <= 0).
func NewRecorder(from, to time.Time, maxPerType int) *Recorder {
	if maxPerType <= 0 {
		maxPerType = DefaultMaxSamples
	}
	return &Recorder{
		from: from, to: to, max: maxPerType,
		lat:     map[string][]int64{},
		errs:    map[string]int{},
		dropped: map[string]int{},
	}
}

// InWindow reports whether a command started at t is counted.
func (r *Recorder) InWindow(t time.Time) bool { return !t.Before(r.from) && t.Before(r.to) }

// Record notes one command of type typ that started at start and took d.
// A non-nil err counts an error instead of a latency.
func (r *Recorder) Record(typ string, start time.Time, d time.Duration, err error) {
	if !r.InWindow(start) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errs[typ]++
		msg := err.Error()
		if len(r.examples) < maxErrorExamples && !contains(r.examples, msg) {
			r.examples = append(r.examples, msg)
		}
		return
	}
	if len(r.lat[typ]) >= r.max {
		r.dropped[typ]++
		return
	}
	us := (d + 500*time.Nanosecond) / time.Microsecond
	if us < 1 {
		us = 1
	}
	r.lat[typ] = append(r.lat[typ], int64(us))
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Fill copies what was recorded into run, and sets its window: the
// configured one, or up to end if the run stopped before its window closed.
func (r *Recorder) Fill(run *Run, end time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	run.LatenciesUS = map[string][]int64{}
	for _, t := range Types {
		run.LatenciesUS[t] = append([]int64{}, r.lat[t]...)
	}
	for t, v := range r.lat {
		if _, ok := run.LatenciesUS[t]; !ok {
			run.LatenciesUS[t] = append([]int64{}, v...)
		}
	}
	run.Errors = copyCounts(r.errs)
	run.Dropped = copyCounts(r.dropped)
	run.ErrorExamples = append([]string(nil), r.examples...)
	stop := r.to
	if end.Before(stop) {
		stop = end
	}
	run.WindowS = max(0, stop.Sub(r.from).Seconds())
}

func copyCounts(m map[string]int) map[string]int {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]int, len(m))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out[k] = m[k]
	}
	return out
}
