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

// handBackAfter is how long an instance that is not ready holds the
// commands it has taken before it hands them back (a Nak that no failure
// count sees): long enough to ride out a blip without churn, short enough
// that healthy instances take over its partitions well within the 10 s a
// stalled cart may wait. Two bounds make it keep each cart's order:
//   - it is past pullsGone: a pull request the instance sent before it
//     stopped pulling could still take a handed-back command, and lose it
//     until AckWait expires, behind the cart's later commands;
//   - it is under AckWait: the messages that were on their way when the
//     instance stopped pulling are lost in flight and redelivered once
//     AckWait expires; they are later in their carts than every command
//     the instance holds, which must be handed back before them.
//
// MinAckWait leaves room for both.
func (w *Worker) handBackAfter() time.Duration { return w.pullsGone() }

// pullsGone is how long after an instance stops pulling a partition none of
// its pull requests is left on the server: pullExpiry and a margin.
func (w *Worker) pullsGone() time.Duration { return w.pullExpiry() + pullMargin }

// pullMargin covers the time a pull request takes to expire on the server
// after its expiry.
const pullMargin = 250 * time.Millisecond

// balanceEvery is how often an instance renews its member key and its
// leases and checks its share of the partitions; memberTTL is how long a
// member key outlives the last renewal, after which its instance counts as
// gone.
const (
	balanceEvery = 2 * time.Second
	memberTTL    = 3 * balanceEvery
)

// forgetTimeout bounds removing the member key, which must not hold up a
// shutdown: a key not removed expires by itself.
const forgetTimeout = time.Second

// leaseTTL is how long a partition's lease outlives its holder's last
// renewal. When an instance dies, every command it held must be due for
// redelivery before another instance takes the partition: its pull
// requests are gone after pullsGone, and what they or it still held is
// redelivered after AckWait. A renewal every balanceEvery, well within it,
// keeps a live holder's lease.
func (w *Worker) leaseTTL() time.Duration {
	return w.cfg.AckWait + w.pullsGone()
}

// pullExpiry is how long one pull request waits: the least nats.go allows,
// because a partition changes hands only once its holder's requests are
// gone (pullsGone). An idle partition costs a pull request a second.
func (w *Worker) pullExpiry() time.Duration { return time.Second }

// backoff is the wait before a command that failed transiently for the
// delivered-th time is tried again, in place or by NakWithDelay:
// RetryBaseDelay doubling up to RetryMaxDelay.
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

// sampleEvery is how often an instance samples its consumers' lag and the
// dead-letter stream's depth: a few info requests, cheap next to a
// Prometheus scrape interval.
const sampleEvery = 10 * time.Second
