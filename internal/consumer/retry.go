package consumer

import (
	"cmp"
	"fmt"
	"time"

	"github.com/cartworker/cartworker/command"
)

// This file is the consumer's one retry policy: what follows the n-th
// failure of a step that may succeed when tried again. Two kinds of step
// fail so, and both are retried in place, holding their cart's place, so
// that the cart's later commands, already held by this instance, never
// overtake them. Nothing is Nak'ed with a delay for later: the partition's
// later commands would go on meanwhile.
//
//   - The apply of a command (its cart's read-modify-write, or its step in
//     it) is the command's failure: it is counted (failures.go), across
//     deliveries and instances, and the policy gives up once it has failed
//     MaxDeliver times, with an exhaustedError that fate dead-letters as
//     max_deliveries. The loop is apply's, in handle.go, because it holds
//     several carts and waits for the gate.
//   - The publish of an outcome event or a dead letter is NATS's failure,
//     not the command's: never counted, and retried for as long as it
//     fails. The loop is inPlace's, in fate.go; it stops only when the
//     partition's grant lapses or shutdown cuts the work off.
//
// How long to wait is backoffAfter's, in timing.go with every other delay
// of the consumer: it shares the doubling and its cap with the probes'
// backoff. What is no failure at all (a fault of the environment, an open
// breaker) is held by the gate (gate.go), not retried here; and the
// compare-and-set of the failure count (failures.go) and the store's ETag
// loop (internal/cartcache) are concurrency control, not retries.

// stepApply names the apply of a command in a failure; the other steps are
// named by what they publish ("outcome event", "rejected event", "dead
// letter").
const stepApply = "apply"

// failure is a failed step the retry policy decides about.
type failure struct {
	// step is what failed: stepApply, or what could not be published.
	step string
	// d is the delivery the step failed for: for an apply, the first of
	// its cart's failing ones. batch is how many commands the step was for.
	d     *delivery
	batch int
	// n is how many times the step has failed: for an apply, the most any
	// of its failing commands has (its failure count); for a publish, the
	// failures in a row in this hold, which nothing else keeps.
	n   int
	err error
}

// counted reports whether f is the command's own failure, which brings it
// closer to a dead letter.
func (f failure) counted() bool { return f.step == stepApply }

// afterFailure is the retry policy: after f, try the step again in place
// once the returned delay has passed, or give up with the returned error,
// an exhaustedError once a counted failure has happened MaxDeliver times.
// It writes the one log line of a retry.
func (w *Worker) afterFailure(f failure) (time.Duration, error) {
	if f.counted() && f.n >= w.cfg.MaxDeliver {
		return 0, &exhaustedError{err: f.err, failed: f.n}
	}
	delay := w.backoffAfter(f.n)
	// A counted failure happens at most MaxDeliver times, so each is
	// logged; a publish may fail for as long as NATS is away, so only its
	// first failure and every tenth are.
	if f.counted() || f.n == 1 || f.n%10 == 0 {
		w.log.Warn("retrying in place; the cart's later commands wait",
			"step", f.step, "subject", w.subject(f.d.msg), "cart_id", f.d.cmd.CartID,
			"command_id", cmp.Or(f.d.cmd.ID, f.d.msg.Headers().Get(command.HeaderMsgID)),
			"batch", f.batch, "failures", f.n, "retry_in", delay, "err", f.err)
	}
	return delay, nil
}

// exhaustedError is the retry policy giving up on a command that has failed
// MaxDeliver times; fate dead-letters it as max_deliveries.
type exhaustedError struct {
	err    error
	failed int
}

func (e *exhaustedError) Error() string {
	return fmt.Sprintf("failed %d times, last: %v", e.failed, e.err)
}

func (e *exhaustedError) Unwrap() error { return e.err }
