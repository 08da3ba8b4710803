package main

import (
	"context"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// fakeIdle is a probe on a fake clock: sleep moves the clock on at once,
// and each process's CPU seconds are read, call by call, from a list.
type fakeIdle struct {
	clock  time.Time
	slept  []time.Duration
	cpu    map[int][]float64
	cancel bool // sleep fails as if interrupted
}

func (f *fakeIdle) probe() idleProbe {
	return idleProbe{
		cpu: func(pid int) (float64, error) {
			v := f.cpu[pid]
			if len(v) == 0 {
				return 0, errors.New("no such process")
			}
			f.cpu[pid] = v[1:]
			return v[0], nil
		},
		host: func() (loadkit.HostCPU, error) { return loadkit.HostCPU{}, nil },
		now:  func() time.Time { return f.clock },
		sleep: func(_ context.Context, d time.Duration) error {
			if f.cancel {
				return context.Canceled
			}
			f.slept = append(f.slept, d)
			// Each wait overshoots by 1 %, as a busy machine's would: the
			// share is of the time that really passed.
			f.clock = f.clock.Add(d + d/100)
			return nil
		},
	}
}

func TestMeasureIdle(t *testing.T) {
	f := &fakeIdle{clock: time.Unix(1_700_000_000, 0), cpu: map[int][]float64{
		// CPU seconds at each window's start and end: the worker uses
		// 0.0404, 0.0202 and 0.0606 s in windows of 20.2 s.
		11: {5, 5.0404, 5.0404, 5.0606, 6, 6.0606},
		// Its NATS server: 0.101 s each time.
		12: {1, 1.101, 2, 2.101, 3, 3.101},
	}}
	cfg := idleConfig{watch: loadkit.PIDs{"worker": 11, "nats": 12}, settle: 15 * time.Second, window: 20 * time.Second, rounds: 3}
	run, err := measureIdle(context.Background(), f.probe(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.slept) != 4 || f.slept[0] != 15*time.Second || f.slept[1] != 20*time.Second {
		t.Fatalf("waits %v: want the settle, then three windows", f.slept)
	}
	if run.Kind != "idle" || run.Rounds != 3 || run.WindowS != 20 || run.SettleS != 15 || len(run.HostBusyPctRounds) != 3 {
		t.Fatalf("run %+v", run)
	}
	near := func(got, want []float64) bool {
		if len(got) != len(want) {
			return false
		}
		for i := range got {
			if math.Abs(got[i]-want[i]) > 1e-9 {
				return false
			}
		}
		return true
	}
	w, n := run.Procs["worker"], run.Procs["nats"]
	if w.PID != 11 || !near(w.CPUPctRounds, []float64{0.2, 0.1, 0.3}) || math.Abs(w.CPUPct-0.2) > 1e-9 {
		t.Errorf("worker %+v", w)
	}
	if n.PID != 12 || !near(n.CPUPctRounds, []float64{0.5, 0.5, 0.5}) || math.Abs(n.CPUPct-0.5) > 1e-9 {
		t.Errorf("nats %+v", n)
	}
	if s := idleSummary(run); !strings.Contains(s, "worker 0.20% of a core (rounds 0.20 0.10 0.30)") || !strings.Contains(s, "nats 0.50%") {
		t.Errorf("summary %q", s)
	}
}

// A process that ends during the windows fails the measurement, naming it;
// so does an interrupted wait.
func TestMeasureIdleFailures(t *testing.T) {
	cfg := idleConfig{watch: loadkit.PIDs{"worker": 11}, window: 20 * time.Second, rounds: 2}
	f := &fakeIdle{cpu: map[int][]float64{11: {1, 1.1, 1.1}}}
	if _, err := measureIdle(context.Background(), f.probe(), cfg); err == nil || !strings.Contains(err.Error(), "window 2: worker (pid 11)") {
		t.Errorf("ended process: %v", err)
	}
	f = &fakeIdle{cpu: map[int][]float64{11: {1, 1.1}}, cancel: true}
	if _, err := measureIdle(context.Background(), f.probe(), cfg); !errors.Is(err, context.Canceled) {
		t.Errorf("interrupted: %v", err)
	}
}

func TestIdleFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-watch", "worker=0"},
		{"-watch", "worker=1", "-window", "500ms"},
		{"-watch", "worker=1", "-rounds", "0"},
		{"-watch", "worker=1", "-rounds", "21"},
		{"-watch", "worker=1", "-settle", "-1s"},
	} {
		err := run(context.Background(), append([]string{"idle"}, args...), io.Discard, io.Discard)
		var u usageError
		if !errors.As(err, &u) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}
