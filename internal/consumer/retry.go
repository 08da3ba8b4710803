package consumer

import "time"

// Every delay and backoff of the consumer: before a command, its dead
// letter or its environment is tried again, and the bounds of each try.
// Their configurable bases (Config.RetryBaseDelay, RetryMaxDelay,
// ProbeInterval) have their defaults in config.go.

const (
	// probeTimeout bounds one probe of the environment.
	probeTimeout = 10 * time.Second
	// maxAttempt caps the doubling of backoffs: 2^6 × the base is past
	// every maximum in use.
	maxAttempt = 6
	// pullErrorDelay is the pause after an error from the pull iterator,
	// which recovers by itself; it keeps a persistent error from spinning.
	pullErrorDelay = 100 * time.Millisecond
	// maxProbeDelay caps the wait between probes of the environment: a
	// probe is one cheap metadata call, and an operator who fixes a fault
	// expects the worker to notice within a couple of seconds.
	maxProbeDelay = 2 * time.Second
	// handBackAfter is how long an instance that is not ready holds the
	// commands it has taken before it hands them back (a Nak that no
	// failure count sees): long enough to ride out a blip without churn,
	// short enough that healthy instances take over its partitions well
	// within the 10 s a stalled cart may wait. Each partition lets one
	// command be in flight, so a command held by a sick instance holds up
	// its whole partition everywhere.
	handBackAfter = 2 * time.Second
	// drainPollDelay is how often a new instance looks whether the
	// commands stored before partitioning are done.
	drainPollDelay = 250 * time.Millisecond
	// deadLetterRetryDelay is the Nak delay of a command whose dead letter
	// could not be stored: CART_DLQ is unavailable, which takes longer than
	// a transient blip to fix.
	deadLetterRetryDelay = 5 * time.Second
	// settleTimeout bounds counting a failure and storing a dead letter,
	// which must get out even when shutdown has cancelled the work.
	settleTimeout = 5 * time.Second
	// setupAttemptTimeout bounds one attempt of the start-up JetStream
	// setup, and setupRetryDelay is the pause before the next, while a
	// cluster elects its leaders (Config.SetupTimeout bounds them all).
	setupAttemptTimeout = 5 * time.Second
	setupRetryDelay     = time.Second
)

// backoff is the NakWithDelay of a command that failed transiently on its
// delivery-th delivery: RetryBaseDelay doubling up to RetryMaxDelay.
func (w *Worker) backoff(delivered uint64) time.Duration {
	return doubling(w.cfg.RetryBaseDelay, w.cfg.RetryMaxDelay, int(min(delivered, maxAttempt+1))-1)
}

// probeDelay is the wait before the attempt-th repeated probe of the
// environment while the gate is closed: ProbeInterval doubling up to
// maxProbeDelay.
func (w *Worker) probeDelay(attempt int) time.Duration {
	return doubling(w.cfg.ProbeInterval, max(w.cfg.ProbeInterval, maxProbeDelay), attempt)
}

// doubling returns base × 2^attempt, capped at limit.
func doubling(base, limit time.Duration, attempt int) time.Duration {
	d := base
	for i := 0; i < attempt && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}
