package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// driveFlags are the flags every measuring subcommand shares.
type driveFlags struct {
	users      int
	scenario   string
	warmup     time.Duration
	duration   time.Duration
	think      time.Duration
	timeout    time.Duration
	round      int
	saturation bool
	out        string
	cartPrefix string
	maxSamples int
	watch      loadkit.PIDs
}

func (d *driveFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&d.users, "users", 1, "concurrent users")
	fs.StringVar(&d.scenario, "scenario", loadkit.ScenarioPaced, "paced (think time after each command) or closed-loop (none)")
	fs.DurationVar(&d.warmup, "warmup", 2*time.Second, "warm-up run before the window, not counted")
	fs.DurationVar(&d.duration, "duration", 8*time.Second, "measured window")
	fs.DurationVar(&d.think, "think", 100*time.Millisecond, "think time after each command in the paced scenario")
	fs.DurationVar(&d.timeout, "timeout", 10*time.Second, "bound on each command")
	fs.IntVar(&d.round, "round", 1, "round number, recorded in the run")
	fs.BoolVar(&d.saturation, "saturation", false, "mark the run as the saturation point")
	fs.StringVar(&d.out, "out", "", "write the run as JSON to this file (default: stdout)")
	fs.StringVar(&d.cartPrefix, "cart-prefix", "", "cart id prefix (default: lg-<random>)")
	fs.IntVar(&d.maxSamples, "max-samples", loadkit.DefaultMaxSamples, "latencies kept per command type")
	d.watch = loadkit.PIDs{}
	fs.Var(d.watch, "watch", "name=pid of a process whose CPU time to measure (repeatable), e.g. daprd=1234")
}

func (d *driveFlags) config() (loadkit.DriveConfig, error) {
	var errs []error
	think := d.think
	switch d.scenario {
	case loadkit.ScenarioPaced:
		if think <= 0 {
			errs = append(errs, errors.New("-think must be positive in the paced scenario"))
		}
	case loadkit.ScenarioClosed:
		think = 0
	default:
		errs = append(errs, fmt.Errorf("-scenario %q: want paced or closed-loop", d.scenario))
	}
	if d.timeout <= 0 || d.timeout > 5*time.Minute {
		errs = append(errs, fmt.Errorf("-timeout %s: want 0 < timeout <= 5m", d.timeout))
	}
	prefix := d.cartPrefix
	if prefix == "" {
		prefix = "lg-" + randomID()
	}
	cfg := loadkit.DriveConfig{
		Users: d.users, Warmup: d.warmup, Duration: d.duration, Think: think, Timeout: d.timeout,
		CartPrefix: prefix, MaxSamples: d.maxSamples,
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

// newRun returns the run's description before it starts.
func (d *driveFlags) newRun(mode string, cfg loadkit.DriveConfig) *loadkit.Run {
	return &loadkit.Run{
		Mode: mode, Scenario: d.scenario, Users: d.users, Round: d.round, Saturation: d.saturation,
		ThinkMS: float64(cfg.Think) / float64(time.Millisecond),
		WarmupS: cfg.Warmup.Seconds(), DurationS: cfg.Duration.Seconds(),
	}
}

// write stores the run and prints a one-line summary on stderr.
func (d *driveFlags) write(run *loadkit.Run, stdout, stderr io.Writer) error {
	fmt.Fprintln(stderr, run.Summary())
	if d.out == "" {
		b, err := jsonMarshal(run)
		if err != nil {
			return err
		}
		_, err = stdout.Write(append(b, '\n'))
		return err
	}
	return run.WriteFile(d.out)
}

func randomID() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffff)
	}
	return hex.EncodeToString(b[:])
}

func int64p(v int64) *int64 { return &v }

// writeFileAtomic writes b to path through a temporary file.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
