package consumer_test

// Tests of defects found while writing this package's tests. Each fails
// against the code as it stands; the test's comment names the cause and the
// fix.

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/consumer"
)

// A publisher may guard its publish with JetStream's expectation headers,
// for example jetstream.WithExpectStream (Nats-Expected-Stream), which the
// stream stores with the message. deadLetter (handle.go, the header copy
// loop) copies every original header onto the dead letter, so the dead
// letter's own publish to CART_DLQ carries "Nats-Expected-Stream:
// CART_COMMANDS" and is refused (err_code 10060, expected stream does not
// match). The command is then Nak'ed with RetryBaseDelay for ever: never
// dead-lettered, never given up (MaxDeliver is not consulted on that path),
// redelivered ten times a second. Nats-Expected-Last-Sequence,
// Nats-Expected-Last-Subject-Sequence and Nats-Expected-Last-Msg-Id break it
// the same way.
//
// Fix: do not copy JetStream publish-control headers: skip every header
// whose name starts with "Nats-Expected-" (and Nats-Rollup, Nats-TTL,
// Nats-Marker-Reason, Nats-Batch-*, Nats-Schedule*), or copy only headers
// without the "Nats-" prefix and keep the original Nats-Msg-Id under a
// Cartworker-* name.
func TestDeadLetterDropsPublishExpectationHeaders(t *testing.T) {
	e := newEnv(t)
	obs := newObserver()
	e.startWorker(t, consumer.Config{Observer: obs}, nil)

	m := nats.NewMsg(subjects.Command("x1", command.TypeAddItem))
	m.Data = []byte(`{"id":"bad-1",`)
	m.Header.Set(command.HeaderMsgID, "bad-1")
	m.Header.Set("Nats-Expected-Stream", command.StreamCommands)
	m.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	e.publishMsg(t, m)

	eventually(t, func() bool { return len(e.deadLetters(t)) == 1 }, 5*time.Second, tick,
		"the malformed command was never dead-lettered; observer: %s", obs)
	dl := e.deadLetters(t)[0]
	require.Equal(t, command.CodeMalformedJSON, dl.Header.Get(command.HeaderDLQCode))
	require.Equal(t, m.Header.Get("Traceparent"), dl.Header.Get("Traceparent"))
	e.waitSettled(t)
}

// When the durable consumer disappears (deleted by an operator or a
// migration script) the pull iterator reports ErrConsumerDeleted once and
// closes; the next Next returns ErrMsgIteratorClosed and consume
// (worker.go, the "break" on ErrMsgIteratorClosed, then "return nil") ends
// Run with nil although its context is still live. The same happens when
// the connection is closed. internal/app then logs "stopped err=<nil>" and
// the process exits 0: the worker silently stops consuming, and a
// supervisor restarting only on failure leaves it down.
//
// Fix: after the loop, if ctx.Err() == nil, return an error (remember the
// last error from Next, e.g. fmt.Errorf("consume %s: iterator closed: %w",
// command.ConsumerName, lastErr)); or, better, re-run Setup and resume.
func TestRunDoesNotStopSilentlyWhenTheConsumerIsDeleted(t *testing.T) {
	e := newEnv(t)
	r := e.startWorker(t, consumer.Config{}, nil)
	e.publishCmd(t, cacheCmd("c1", ""))
	e.events.waitApplied(t, "cache-c1")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, e.js.DeleteConsumer(ctx, command.StreamCommands, command.ConsumerName))

	if r.wait(3 * time.Second) {
		require.Error(t, r.err, "Run returned nil although its context had not ended")
		return
	}
	// Still running: then it must still be consuming.
	e.publishCmd(t, cacheCmd("c2", ""))
	e.events.waitApplied(t, "cache-c2")
}

// Run's contract is to return within ShutdownTimeout of its context ending.
// On ctx.Done the watcher (worker.go) calls iter.Drain(), and when
// ShutdownTimeout expires it calls iter.Stop() "to end a drain stuck on a
// broken connection". But Stop is a no-op after Drain: both flip the same
// closed flag with a CompareAndSwap, so the second call returns at once.
// With NATS unreachable the drain of the core subscription waits for
// nc.Flush (10 s in nats.go's checkDrained) before the iterator closes, so
// Run takes about 10 s whatever ShutdownTimeout says; Kubernetes may kill
// the pod first.
//
// Fix: bound the loop's wait itself: call iter.Next(jetstream.NextContext(work))
// (work is cancelled when ShutdownTimeout expires) and leave the loop when
// work.Err() != nil; messages still buffered are redelivered after AckWait.
func TestShutdownWhileNATSIsDownHonoursShutdownTimeout(t *testing.T) {
	const shutdownTimeout = 300 * time.Millisecond
	e := newEnv(t)
	r := e.startWorker(t, consumer.Config{ShutdownTimeout: shutdownTimeout}, nil)
	e.publishCmd(t, cacheCmd("c1", ""))
	e.events.waitApplied(t, "cache-c1")

	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	eventually(t, func() bool { return r.nc.Status() == nats.RECONNECTING }, waitFor, tick,
		"the worker's connection never noticed the server went away")
	require.False(t, r.wait(0), "Run must not return by itself while NATS is reconnecting")

	err, ok := r.stop(shutdownTimeout + time.Second)
	require.True(t, ok, "Run did not return within ShutdownTimeout + 1s with NATS down")
	require.NoError(t, err)
}
