package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// This file reads what `loadgen idle` measured, the CPU of an instance to
// which no command is sent, and judges it: a worker whose partitions park
// when idle should cost its machine and its NATS server next to nothing.

// floorIdleCPUPct is the most CPU, in % of one core, that an idle worker
// and, apart, its NATS server may use: medians of the idle windows.
const floorIdleCPUPct = 0.5

// The names scripts/bench.sh watches the idle instance's processes by
// (`loadgen idle -watch worker=PID -watch nats=PID`).
const (
	IdleWorker = "worker"
	IdleNATS   = "nats"
)

// IdleRun is what `loadgen idle` writes: the CPU each watched process used
// in windows in which no command was sent.
type IdleRun struct {
	// Kind is "idle", so that another file given by mistake is refused.
	Kind string `json:"kind"`
	// SettleS is how long it waited before the first window, for the
	// worker to take its partitions and park them; WindowS each window's
	// length and Rounds how many there were.
	SettleS float64 `json:"settle_s"`
	WindowS float64 `json:"window_s"`
	Rounds  int     `json:"rounds"`
	// Procs is each watched process's CPU, by name.
	Procs map[string]IdleCPU `json:"procs"`
	// HostBusyPctRounds is how busy the whole machine was in each window,
	// in % of all its cores: what else ran beside the idle instance.
	HostBusyPctRounds []float64 `json:"host_busy_pct_rounds,omitempty"`
}

// IdleCPU is one watched process's CPU in the idle windows.
type IdleCPU struct {
	PID int `json:"pid"`
	// CPUPctRounds is its CPU in each window, in % of one core, and CPUPct
	// their median.
	CPUPctRounds []float64 `json:"cpu_pct_rounds"`
	CPUPct       float64   `json:"cpu_pct"`
}

// NewIdleCPU is a process's idle figures from its windows' CPU, the median
// taken here.
func NewIdleCPU(pid int, rounds []float64) IdleCPU {
	return IdleCPU{PID: pid, CPUPctRounds: rounds, CPUPct: loadkit.Median(rounds)}
}

// ReadIdle reads the file `loadgen idle` wrote; nil when path is "" or no
// file is there (the idle step was skipped or failed: its figures are then
// not measured).
func ReadIdle(path string) (*IdleRun, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r IdleRun
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Kind != "idle" {
		return nil, fmt.Errorf("%s: not an idle run (kind %q)", path, r.Kind)
	}
	return &r, nil
}

// Idle is an idle instance's cost in results.json: the pooled worker and
// its NATS server, before any command of the run was sent.
type Idle struct {
	// WorkerCPUPct and NATSCPUPct are medians over the windows, in % of
	// one core, nil when that process was not watched; the Rounds fields
	// are each window's.
	WorkerCPUPct       *float64  `json:"worker_cpu_pct"`
	NATSCPUPct         *float64  `json:"nats_cpu_pct"`
	WorkerCPUPctRounds []float64 `json:"worker_cpu_pct_rounds"`
	NATSCPUPctRounds   []float64 `json:"nats_cpu_pct_rounds"`
	// HostBusyPctRounds is the whole machine's busy share in each window,
	// in % of all its cores.
	HostBusyPctRounds []float64 `json:"host_busy_pct_rounds,omitempty"`
	SettleS           float64   `json:"settle_s"`
	WindowS           float64   `json:"window_s"`
	Rounds            int       `json:"rounds"`
}

// idleOf is the idle figures of run; nil when it was not measured.
func idleOf(run *IdleRun) *Idle {
	if run == nil {
		return nil
	}
	idle := &Idle{HostBusyPctRounds: run.HostBusyPctRounds, SettleS: run.SettleS, WindowS: run.WindowS, Rounds: run.Rounds}
	if c, ok := run.Procs[IdleWorker]; ok {
		idle.WorkerCPUPct, idle.WorkerCPUPctRounds = f64(c.CPUPct), c.CPUPctRounds
	}
	if c, ok := run.Procs[IdleNATS]; ok {
		idle.NATSCPUPct, idle.NATSCPUPctRounds = f64(c.CPUPct), c.CPUPctRounds
	}
	return idle
}

// idleFloors are the idle worker's CPU and its NATS server's, each at most
// floorIdleCPUPct; not measured without the figures.
func idleFloors(idle *Idle) []Floor {
	detail := "at most; median of the windows with no commands"
	var worker, nats *float64
	var workerRounds, natsRounds []float64
	if idle != nil {
		detail = fmt.Sprintf("at most; median of %d windows of %s s with no commands", idle.Rounds, trimFloat(idle.WindowS))
		worker, nats, workerRounds, natsRounds = idle.WorkerCPUPct, idle.NATSCPUPct, idle.WorkerCPUPctRounds, idle.NATSCPUPctRounds
	}
	floor := func(name string, v *float64, rounds []float64) Floor {
		return judgeSpeed(Floor{Name: name, Limit: floorIdleCPUPct, Unit: "%", Detail: detail, Value: v, Rounds: rounds}, true)
	}
	return []Floor{
		floor("an idle instance (pooled), no commands: the worker's CPU, % of one core", worker, workerRounds),
		floor("an idle instance (pooled), no commands: its NATS server's CPU, % of one core", nats, natsRounds),
	}
}

// pct2 is a small share of a core, with the two decimals it needs.
func pct2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + " %" }
