package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cartworker/cartworker/bench/loadkit"
	"github.com/cartworker/cartworker/bench/report"
)

// idleConfig is what `loadgen idle` measures: the watched processes, how
// long to wait before the first window, and the windows.
type idleConfig struct {
	watch          loadkit.PIDs
	settle, window time.Duration
	rounds         int
}

// idleProbe is how the idle windows read the processes' CPU, the machine's
// and the clock, and wait: /proc and the wall clock in loadgen, fakes in
// its tests.
type idleProbe struct {
	cpu   func(pid int) (float64, error)
	host  func() (loadkit.HostCPU, error)
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// procProbe reads /proc and the wall clock.
func procProbe() idleProbe {
	return idleProbe{cpu: loadkit.ProcCPUSeconds, host: loadkit.ReadHostCPU, now: time.Now, sleep: sleepCtx}
}

// sleepCtx waits d, or until ctx ends (its error then).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// runIdle measures the CPU that processes use while no command is sent:
// after -settle, each process's CPU time at the start and end of each
// window, in % of one core, and their median.
func runIdle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("idle", stderr)
	cfg := idleConfig{watch: loadkit.PIDs{}}
	fs.Var(cfg.watch, "watch", "name=pid of a process whose CPU to measure, repeatable (scripts/bench.sh: worker and nats)")
	fs.DurationVar(&cfg.settle, "settle", 15*time.Second, "wait before the first window: lets the worker take its partitions and park them")
	fs.DurationVar(&cfg.window, "window", 20*time.Second, "length of each window")
	fs.IntVar(&cfg.rounds, "rounds", 3, "windows; the figure is their median (1..20)")
	out := fs.String("out", "", "file to write the JSON to (default: stdout)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := cfg.check(); err != nil {
		return usageError{err}
	}
	run, err := measureIdle(ctx, procProbe(), cfg)
	if err != nil {
		return err
	}
	fmt.Fprintln(stderr, idleSummary(run))
	b, err := jsonMarshal(run)
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = stdout.Write(append(b, '\n'))
		return err
	}
	return writeFileAtomic(*out, b)
}

// check refuses a configuration that would measure nothing or run
// unbounded.
func (c idleConfig) check() error {
	switch {
	case len(c.watch) == 0:
		return errors.New("give at least one -watch name=pid")
	case c.settle < 0:
		return fmt.Errorf("-settle %s: want 0 or more", c.settle)
	case c.window < time.Second:
		// /proc counts CPU in 10 ms ticks: a shorter window could not
		// tell 0.5 % of a core from nothing.
		return fmt.Errorf("-window %s: want 1s or more", c.window)
	case c.rounds < 1 || c.rounds > 20:
		return fmt.Errorf("-rounds %d: want 1..20", c.rounds)
	}
	return nil
}

// measureIdle waits cfg.settle, then measures cfg.rounds windows.
func measureIdle(ctx context.Context, p idleProbe, cfg idleConfig) (*report.IdleRun, error) {
	if err := p.sleep(ctx, cfg.settle); err != nil {
		return nil, err
	}
	pcts := map[string][]float64{}
	run := &report.IdleRun{Kind: "idle", SettleS: cfg.settle.Seconds(), WindowS: cfg.window.Seconds(), Rounds: cfg.rounds,
		Procs: map[string]report.IdleCPU{}}
	for i := range cfg.rounds {
		w, busy, err := idleWindow(ctx, p, cfg.watch, cfg.window)
		if err != nil {
			return nil, fmt.Errorf("idle window %d: %w", i+1, err)
		}
		for name, v := range w {
			pcts[name] = append(pcts[name], v)
		}
		run.HostBusyPctRounds = append(run.HostBusyPctRounds, busy)
	}
	for name, pid := range cfg.watch {
		run.Procs[name] = report.NewIdleCPU(pid, pcts[name])
	}
	return run, nil
}

// idleWindow is each watched process's CPU over one window, in % of one
// core of the time it really took, and the machine's busy share (all
// cores). A process that cannot be read (it ended) fails the window.
func idleWindow(ctx context.Context, p idleProbe, watch loadkit.PIDs, window time.Duration) (map[string]float64, float64, error) {
	start, err := readCPU(p, watch)
	if err != nil {
		return nil, 0, err
	}
	h0, hostErr := p.host()
	t0 := p.now()
	if err := p.sleep(ctx, window); err != nil {
		return nil, 0, err
	}
	elapsed := p.now().Sub(t0).Seconds()
	end, err := readCPU(p, watch)
	if err != nil {
		return nil, 0, err
	}
	if elapsed <= 0 {
		return nil, 0, errors.New("the clock did not move")
	}
	out := make(map[string]float64, len(watch))
	for name := range watch {
		out[name] = (end[name] - start[name]) / elapsed * 100
	}
	var busy float64
	if h1, err := p.host(); err == nil && hostErr == nil {
		busy = h1.BusyPct(h0)
	}
	return out, busy, nil
}

// readCPU reads every watched process's CPU seconds.
func readCPU(p idleProbe, watch loadkit.PIDs) (map[string]float64, error) {
	out := make(map[string]float64, len(watch))
	for name, pid := range watch {
		c, err := p.cpu(pid)
		if err != nil {
			return nil, fmt.Errorf("%s (pid %d): %w", name, pid, err)
		}
		out[name] = c
	}
	return out, nil
}

// idleSummary is the one line `loadgen idle` prints as it finishes.
func idleSummary(run *report.IdleRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "idle: %d window(s) of %gs after %gs:", run.Rounds, run.WindowS, run.SettleS)
	for _, name := range slices.Sorted(maps.Keys(run.Procs)) {
		c := run.Procs[name]
		fmt.Fprintf(&b, " %s %.2f%% of a core (rounds", name, c.CPUPct)
		for _, v := range c.CPUPctRounds {
			fmt.Fprintf(&b, " %.2f", v)
		}
		b.WriteString(");")
	}
	return b.String()
}
