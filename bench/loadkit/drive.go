package loadkit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Lines is the number of add-items per cart in the upstream scenario.
const Lines = 20

// Scenario performs the commands of a cart's life. Do must honour ctx and
// return when it ends. line is the add-item's line number (1..Lines), 0 for
// the other types. Do is called concurrently for different carts, never for
// the same cart.
type Scenario interface {
	Do(ctx context.Context, typ, cartID string, line int) error
}

// DriveConfig configures Drive.
type DriveConfig struct {
	// Users run the cart loop concurrently.
	Users int
	// Warmup is run but not counted; Duration is the measured window.
	Warmup, Duration time.Duration
	// Think is the pause after each command (the paced scenario); 0 for a
	// closed loop.
	Think time.Duration
	// Timeout bounds each command. Default 10s.
	Timeout time.Duration
	// Lines is the number of add-items per cart. Default Lines.
	Lines int
	// CartPrefix starts every cart id; it must be unique per run so that
	// runs never share a cart.
	CartPrefix string
	// MaxSamples caps the latencies kept per type (DefaultMaxSamples).
	MaxSamples int
	// ErrorPause is the wait after a failed command before the user starts
	// a new cart, so that a broken target cannot be spun on. Default 50ms.
	ErrorPause time.Duration
}

func (c DriveConfig) withDefaults() DriveConfig {
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Lines <= 0 {
		c.Lines = Lines
	}
	if c.ErrorPause <= 0 {
		c.ErrorPause = 50 * time.Millisecond
	}
	if c.CartPrefix == "" {
		c.CartPrefix = "lg"
	}
	return c
}

// Validate reports settings Drive cannot use.
func (c DriveConfig) Validate() error {
	var errs []error
	if c.Users < 1 || c.Users > 4096 {
		errs = append(errs, fmt.Errorf("users %d: want 1..4096", c.Users))
	}
	if c.Duration <= 0 {
		errs = append(errs, fmt.Errorf("duration %s: want > 0", c.Duration))
	}
	if c.Warmup < 0 || c.Think < 0 {
		errs = append(errs, errors.New("warm-up and think time must not be negative"))
	}
	if c.Duration > time.Hour || c.Warmup > time.Hour {
		errs = append(errs, errors.New("duration and warm-up are limited to 1h"))
	}
	return errors.Join(errs...)
}

// HardDeadline is the latest a Drive started at start can return: the
// window's end plus two command timeouts (the one in flight and the clean-up
// delete) and a margin.
func (c DriveConfig) HardDeadline(start time.Time) time.Time {
	c = c.withDefaults()
	return start.Add(c.Warmup + c.Duration + 2*c.Timeout + 2*time.Second)
}

// Drive runs the upstream locust scenario against s: each user loops
// creating a cart (cache), adding Lines items one at a time, and deleting it,
// waiting for each command before the next and pausing Think after each.
// Commands that start in the window after Warmup are recorded. At the end
// of the window users stop starting commands, let the one in flight finish,
// and delete their open cart without recording it. A failed command
// abandons its cart (deleted best-effort, unrecorded).
//
// Drive returns when every user has stopped, at the latest at
// cfg.HardDeadline(start); the returned time is when the users stopped.
func Drive(ctx context.Context, s Scenario, cfg DriveConfig) (*Recorder, time.Time, time.Time) {
	cfg = cfg.withDefaults()
	start := time.Now()
	from := start.Add(cfg.Warmup)
	to := from.Add(cfg.Duration)
	rec := NewRecorder(from, to, cfg.MaxSamples)

	stopCtx, cancelStop := context.WithDeadline(ctx, to)
	defer cancelStop()
	hardCtx, cancelHard := context.WithDeadline(ctx, cfg.HardDeadline(start))
	defer cancelHard()

	d := &driver{s: s, cfg: cfg, rec: rec, stop: stopCtx, hard: hardCtx}
	var wg sync.WaitGroup
	for u := range cfg.Users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.user(u)
		}()
	}
	wg.Wait()
	return rec, start, time.Now()
}

type driver struct {
	s    Scenario
	cfg  DriveConfig
	rec  *Recorder
	stop context.Context // ends with the window: start nothing new
	hard context.Context // ends at the hard deadline: abandon everything
}

func (d *driver) stopped() bool { return d.stop.Err() != nil }

// pause waits dur unless the window ends first; false when it has ended.
func (d *driver) pause(dur time.Duration) bool {
	if dur <= 0 {
		return !d.stopped()
	}
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-d.stop.Done():
		return false
	case <-t.C:
		return true
	}
}

// step runs one recorded command.
func (d *driver) step(typ, cart string, line int) bool {
	ctx, cancel := context.WithTimeout(d.hard, d.cfg.Timeout)
	defer cancel()
	start := time.Now()
	err := d.s.Do(ctx, typ, cart, line)
	d.rec.Record(typ, start, time.Since(start), err)
	if err != nil {
		d.pause(d.cfg.ErrorPause)
		return false
	}
	return true
}

// cleanup deletes a cart left open, unrecorded.
func (d *driver) cleanup(cart string) {
	if d.hard.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(d.hard, d.cfg.Timeout)
	defer cancel()
	_ = d.s.Do(ctx, TypeDelete, cart, 0)
}

func (d *driver) user(u int) {
	// Spread the paced users over one think time so that they do not move
	// in lock step.
	if d.cfg.Think > 0 && !d.pause(rand.N(d.cfg.Think)+time.Millisecond) {
		return
	}
	for cycle := 0; !d.stopped(); cycle++ {
		cart := fmt.Sprintf("%s-%d-%d", d.cfg.CartPrefix, u, cycle)
		if !d.step(TypeCache, cart, 0) {
			d.cleanup(cart)
			continue
		}
		ok := true
		for line := 1; line <= d.cfg.Lines && ok; line++ {
			if !d.pause(d.cfg.Think) {
				ok = false
				break
			}
			ok = d.step(TypeAddItem, cart, line)
		}
		if !ok || !d.pause(d.cfg.Think) {
			d.cleanup(cart)
			continue
		}
		if !d.step(TypeDelete, cart, 0) {
			d.cleanup(cart)
			continue
		}
		d.pause(d.cfg.Think)
	}
}
