package consumer

import (
	"time"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/ownership"
)

// Every delay and backoff of the consumer: before a command, its event, its
// dead letter, a rewind or its environment is tried again, the bounds of
// each try, and the timing of the partitions' leases. Whether a failed step
// is tried again at all is the retry policy's (retry.go); how long it waits
// is here, next to the probes' backoff, which doubles alike. Their
// configurable bases (Config.RetryBaseDelay, RetryMaxDelay, ProbeInterval)
// have their defaults in config.go.

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
	// rewindRetryDelay is the pause between attempts at rewinding a
	// partition while NATS cannot be reached.
	rewindRetryDelay = 250 * time.Millisecond
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
// stalled cart may wait. It is past pullsGone, so that no pull request of
// the instance is left when it hands a partition over. Order does not rest
// on it: whoever takes the partition next rewinds it to its ack floor.
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

// leaseTTL is how long a partition's lease outlives its holder's last
// renewal: two renewals and the life of a pull request, so that one late
// renewal loses nothing. It no longer needs to outlast AckWait: a new
// holder rewinds the partition, so the commands a dead holder held come
// back at once, in order. It bounds how long a crashed instance's
// partitions wait.
func (w *Worker) leaseTTL() time.Duration { return 2*balanceEvery + w.pullsGone() }

// ownershipConfig is the partitions' ownership timing (internal/ownership).
func (w *Worker) ownershipConfig() ownership.Config {
	return ownership.Config{
		Stream:          command.StreamCommands,
		Consumer:        command.PartitionConsumer,
		Partitions:      w.cfg.Partitions,
		Replicas:        w.cfg.Replicas,
		Renew:           balanceEvery,
		TTL:             w.leaseTTL(),
		MemberTTL:       memberTTL,
		PullExpiry:      w.pullExpiry(),
		PullMargin:      pullMargin,
		ShutdownTimeout: w.cfg.ShutdownTimeout,
		CallTimeout:     settleTimeout,
		Logger:          w.log,
	}
}

// pullExpiry is how long one pull request waits: short, because a
// partition changes hands only once its holder's requests are gone
// (pullsGone). A partition whose fetch comes back empty parks rather than
// pull again (idle.go), so an idle one costs no request a second.
func (w *Worker) pullExpiry() time.Duration { return time.Second }

// backoffAfter is the wait, after a step's failures-th failure, before the
// retry policy (retry.go) tries it again in place: RetryBaseDelay doubling
// up to RetryMaxDelay.
func (w *Worker) backoffAfter(failures int) time.Duration {
	return doubling(w.cfg.RetryBaseDelay, w.cfg.RetryMaxDelay, min(max(failures, 1), maxAttempt+1)-1)
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

// idleRecheck is how often watch looks whether the command stream stored
// anything while partitions were parked: the longest a command the
// subscription did not hear waits.
const idleRecheck = 5 * time.Second

// lastLook is the expiry of the fetch a puller makes once its partition is
// parked, before it stops pulling: it takes a command that was published
// before the subscription was in place and stored after the empty fetch.
// It is shorter than pullExpiry, so a partition's hand-back waits no longer.
const lastLook = 100 * time.Millisecond

// sampleEvery is how often an instance samples its consumers' lag and the
// dead-letter stream's depth: a few info requests, cheap next to a
// Prometheus scrape interval.
const sampleEvery = 10 * time.Second
