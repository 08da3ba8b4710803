package consumer

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/cartworker/cartworker/internal/statepool"
)

// errNotChecked is the gate's reason before the first probe has answered.
var errNotChecked = errors.New("the state store has not been checked yet")

// gate holds work back while the instance's own environment is at fault: a
// wrong API token, a missing state store, an absent sidecar or an open
// breaker. Such a fault is no command's doing, so while the gate is closed
// the worker pulls nothing, and the commands it already holds wait, kept
// alive by heartbeats, instead of spending their deliveries on calls that
// cannot succeed. One prober goroutine (run) reopens the gate.
type gate struct {
	probe func(context.Context) error
	delay func(attempt int) time.Duration
	// handBack is how long commands wait on a closed gate before they
	// are handed back.
	handBack time.Duration
	log      *slog.Logger

	mu    sync.Mutex
	fault error         // nil while open
	open  chan struct{} // closed while fault == nil
	shut  chan struct{} // closed while fault != nil
	kick  chan struct{} // wakes the prober; one slot
	// cleared is when the gate last opened, so that faults in quick
	// succession back the prober off instead of probing in a loop.
	cleared time.Time
	// closed is when the gate last closed.
	closed time.Time
}

// newGate returns a closed gate: nothing is pulled until the first probe
// passes.
func newGate(probe func(context.Context) error, delay func(int) time.Duration, handBack time.Duration, log *slog.Logger) *gate {
	g := &gate{
		probe:    probe,
		delay:    delay,
		handBack: handBack,
		log:      log,
		fault:    errNotChecked,
		closed:   time.Now(),
		open:     make(chan struct{}),
		shut:     make(chan struct{}),
		kick:     make(chan struct{}, 1),
	}
	close(g.shut)
	return g
}

// err is nil while the gate is open, else why it is closed.
func (g *gate) err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fault
}

// EnvironmentFault reports whether err is the fault of the instance's own
// configuration or surroundings rather than of a command: daprd refused
// the API token, has no such state store, or cannot be reached. A command
// that meets one is held, uncounted, while the gate is closed on it, until
// Config.Probe passes; a probe's error should name the setting that fixes
// it (internal/app's does).
func EnvironmentFault(err error) bool {
	return errors.Is(err, statepool.ErrUnauthorized) ||
		errors.Is(err, statepool.ErrStoreNotFound) ||
		errors.Is(err, statepool.ErrUnreachable)
}

// Ready, Opening and HeldTooLong let the partitions' leases follow the gate
// (ownership.Gate).
func (g *gate) Ready() bool { return g.err() == nil }

// Opening returns nil while the gate is open, else a channel that is
// closed when it opens.
func (g *gate) Opening() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fault == nil {
		return nil
	}
	return g.open
}

// fail closes the gate because of err and wakes the prober. An open gate
// logs err once; a closed one keeps the prober's more precise reason.
func (g *gate) fail(err error) {
	g.mu.Lock()
	if g.fault == nil {
		g.fault = err
		g.closed = time.Now()
		g.open = make(chan struct{})
		close(g.shut)
		g.log.Warn("pausing: the state store cannot be used", "err", err)
	}
	g.mu.Unlock()
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// set records the prober's verdict: nil opens the gate.
func (g *gate) set(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case err == nil && g.fault != nil:
		g.fault = nil
		g.shut = make(chan struct{})
		close(g.open)
		g.cleared = time.Now()
		g.log.Info("ready: the state store answers")
	case err != nil && (g.fault == nil || g.fault.Error() != err.Error()):
		if g.fault == nil {
			g.closed = time.Now()
			g.open = make(chan struct{})
			close(g.shut)
		}
		g.fault = err
		// One line per distinct reason: the operator must see it, and a
		// fault that lasts hours must not flood the log.
		g.log.Error("not ready", "err", err)
	}
}

// HeldTooLong reports whether the gate has been closed for longer than
// handBack: the instance has handed its commands back.
func (g *gate) HeldTooLong() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fault != nil && time.Since(g.closed) >= g.handBack
}

// waitOrHandBack waits for the gate until it has been closed for
// handBack. It returns nil once the gate is open, errHandBack when the
// time is up, and errPaused when stop ends first.
func (g *gate) waitOrHandBack(stop context.Context) error {
	g.mu.Lock()
	closed, faulty := g.closed, g.fault != nil
	g.mu.Unlock()
	if !faulty {
		return nil
	}
	ctx, cancel := context.WithTimeout(stop, g.handBack-time.Since(closed))
	defer cancel()
	switch err := g.wait(ctx); {
	case err == nil:
		return nil
	case stop.Err() != nil:
		return errPaused
	default:
		return errHandBack
	}
}

// wait returns nil once the gate is open, or ctx's error.
func (g *gate) wait(ctx context.Context) error {
	for {
		g.mu.Lock()
		open, ok := g.open, g.fault == nil
		g.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-open:
		}
	}
}

// run probes while the gate is closed until ctx ends. The first probe after
// a quiet spell is immediate; repeated ones back off by delay.
func (g *gate) run(ctx context.Context) {
	attempt := 0
	for {
		g.mu.Lock()
		faulty, shut, cleared := g.fault != nil, g.shut, g.cleared
		g.mu.Unlock()
		if !faulty {
			select {
			case <-ctx.Done():
				return
			case <-shut:
			}
			if time.Since(cleared) > g.delay(maxAttempt) {
				attempt = 0
			}
		}
		if attempt > 0 && !sleepCtx(ctx, g.delay(attempt-1)) {
			return
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		err := g.probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		g.set(err)
		attempt = min(attempt+1, maxAttempt)
		// Drain a kick that only repeated what this probe saw.
		select {
		case <-g.kick:
		default:
		}
	}
}

// sleepCtx waits d, reporting false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
