package consumer_test

// Regression tests of defects found while writing this package's tests.
// Each test's comment names the cause and the fix that was made.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/consumer"
)

// A publisher may guard its publish with JetStream's expectation headers,
// for example jetstream.WithExpectStream (Nats-Expected-Stream), which the
// stream stores with the message. deadLetter used to copy every original
// header onto the dead letter, so the dead letter's own publish to CART_DLQ
// carried "Nats-Expected-Stream: CART_COMMANDS" and was refused (err_code
// 10060). The command was then Nak'ed for ever, never dead-lettered.
// Nats-Expected-Last-Sequence and its siblings broke it the same way.
//
// Fix: deadLetter copies only headers without the "Nats-" prefix and keeps
// the original Nats-Msg-Id as Cartworker-Original-Msg-Id.
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
// closes, as it does when the connection is closed. consume used to end Run
// with nil then, although its context was still live: the process exited 0
// and a supervisor restarting only on failure left it down.
//
// Fix: when the iterator closes while ctx is live, Run returns ErrStopped
// wrapping the last error from Next.
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
// On ctx.Done the watcher drains the iterator, and it used to call
// iter.Stop() when ShutdownTimeout expired. But Stop is a no-op after Drain
// (both flip the same closed flag), and with NATS unreachable the drain
// waits about 10 s for a flush before the iterator closes, so Run overran
// ShutdownTimeout; Kubernetes may kill the pod first.
//
// Fix: the loop's own wait is bounded: iter.Next(jetstream.NextContext(work)),
// where work is cancelled when ShutdownTimeout expires; messages still
// buffered are redelivered after AckWait.
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

// cartcache.Carts.Apply reported an unknown command type as
// ErrInvalidCart, which handle dead-letters as invalid_cart: the cart was
// blamed for a command it never saw.
//
// Fix: Apply returns cart.ErrUnknownType, which handle dead-letters at
// once with command.CodeUnknownType, the code command validation gives an
// unknown type.
func TestUnknownTypeFromTheServiceIsDeadLetteredAsUnknownType(t *testing.T) {
	e := newEnv(t)
	app := newApplier(nil, func(context.Context, command.Command) error {
		return fmt.Errorf("apply: %w", cart.ErrUnknownType)
	})
	e.startWorker(t, consumer.Config{MaxDeliver: 2}, app)

	e.publishCmd(t, addCmd("a1", "c1", item("A", 1, "10", "00")))
	ev := e.events.waitCommand(t, "a1")
	require.Equal(t, command.OutcomeRejected, ev.Outcome)
	require.NotNil(t, ev.Error)
	require.Equal(t, command.CodeUnknownType, ev.Error.Code)
	e.waitSettled(t)
	dls := e.deadLetters(t)
	require.Len(t, dls, 1)
	require.Equal(t, command.CodeUnknownType, dls[0].Header.Get(command.HeaderDLQCode))
	require.Equal(t, "1", dls[0].Header.Get(command.HeaderDLQDeliveries), "decided on the first delivery")
}

// The rejected event of a command that fails validation carried the
// Nats-Msg-Id header as command_id even when the body's id was readable, so
// a publisher waiting on the body's id never heard back.
//
// Fix: handle passes deadLetter the body's id whenever it can be read: the
// id Decode got to, else the top-level "id" of a body that failed to decode;
// the header only when the body has no readable id.
func TestRejectedEventCarriesTheBodysID(t *testing.T) {
	e := newEnv(t)
	e.startWorker(t, consumer.Config{}, nil)

	badQty, err := command.Marshal(addCmd("body-id", "qty", item("A", 0, "10", "00")))
	require.NoError(t, err)
	for _, c := range []struct {
		name, subject string
		body          []byte
		msgID, want   string
	}{
		{"invalid quantity", subjects.Command("qty", command.TypeAddItem), badQty, "hdr-id", "body-id"},
		{"trailing data", subjects.Command("trailing", command.TypeDelete),
			[]byte(`{"id":"body-trailing","type":"delete","cart_id":"trailing"} {}`), "hdr-trailing", "body-trailing"},
		{"unknown type in subject", "cart.cmd.subjtype.frobnicate",
			[]byte(`{"id":"body-subjtype","type":"frobnicate","cart_id":"subjtype"}`), "hdr-subjtype", "body-subjtype"},
		{"unreadable body", subjects.Command("cut", command.TypeAddItem), []byte(`{"id":"body-cut",`), "hdr-cut", "hdr-cut"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.publish(t, c.subject, c.body, c.msgID)
			cartID, _, _ := subjects.ParseCommand(c.subject)
			eventually(t, func() bool { return len(e.events.forCart(cartID)) > 0 }, waitFor, tick, "no event for cart %s", cartID)
			ev := e.events.forCart(cartID)[0]
			require.Equal(t, command.OutcomeRejected, ev.Outcome)
			require.Equal(t, c.want, ev.CommandID)
		})
	}
}
