package consumer_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/consumer"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
)

// The tests in this file hold the rule that a fault of the worker's own
// configuration or environment (a wrong token, a missing store, an absent
// sidecar) never spends a command's deliveries and never dead-letters it:
// the instance goes not ready and says why. They run with MaxDeliver 1, so a
// single spent delivery followed by any failure would dead-letter.

// probe is the worker's probe as internal/app builds it: the sidecar's
// metadata, then the breaker.
func (e *env) probe(ctx context.Context) error {
	if err := e.client.Check(ctx); err != nil {
		return err
	}
	return breakerProbe(e.store)(ctx)
}

// waitProbes waits until the fake has answered n more metadata requests, so
// that a test knows the worker has had time to do the wrong thing.
func (e *env) waitProbes(t *testing.T, n int) {
	t.Helper()
	target := e.fake.Requests(daprfake.OpMetadata) + n
	eventually(t, func() bool { return e.fake.Requests(daprfake.OpMetadata) >= target }, waitFor, tick, "%d more probes", n)
}

// requireHeld checks that the commands are all still in JetStream, held by
// the instance or handed back, with no event and no dead letter.
func (e *env) requireHeld(t *testing.T, n int, ids ...string) {
	t.Helper()
	info := e.consumerInfo(t)
	require.EqualValues(t, n, uint64(info.NumAckPending)+info.NumPending, "the commands are kept")
	require.Empty(t, e.deadLetters(t), "no dead letter")
	for _, id := range ids {
		require.Empty(t, e.events.forCommand(id), "no event for %s", id)
	}
}

func TestConfigurationFaultsHoldCommands(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(f *daprfake.Fake)
		fix    func(f *daprfake.Fake)
		reason error
	}{
		{
			name:   "wrong API token",
			break_: func(f *daprfake.Fake) { f.SetToken("the-sidecars-token") },
			fix:    func(f *daprfake.Fake) { f.SetToken("") },
			reason: statepool.ErrUnauthorized,
		},
		{
			name:   "missing state store",
			break_: func(f *daprfake.Fake) { f.SetStoreName("otherstore") },
			fix:    func(f *daprfake.Fake) { f.SetStoreName(daprfake.DefaultStoreName) },
			reason: statepool.ErrStoreNotFound,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			obs := newObserver()
			r := e.startWorker(t, consumer.Config{Observer: obs, MaxDeliver: 1, Probe: e.probe}, nil)

			// At start-up: the probe fails, so nothing is pulled.
			tc.break_(e.fake)
			e.publishCmd(t, cacheCmd("c1", ""))
			e.waitProbes(t, 3)
			require.ErrorIs(t, r.w.Ready(), tc.reason)
			e.requireHeld(t, 1, "cache-c1")

			tc.fix(e.fake)
			e.events.waitApplied(t, "cache-c1")
			eventually(t, func() bool { return r.w.Ready() == nil }, waitFor, tick, "ready again")

			// Mid-run: the state calls fail, the commands are held.
			tc.break_(e.fake)
			ids := []string{"a1", "a2", "a3"}
			for i, id := range ids {
				e.publishCmd(t, addCmd(id, "c1", item("I"+strconv.Itoa(i), 1, "10", "00")))
			}
			eventually(t, func() bool { return errors.Is(r.w.Ready(), tc.reason) }, waitFor, tick, "not ready")
			e.waitProbes(t, 3)
			e.requireHeld(t, 3, ids...)
			require.Zero(t, obs.count("", consumer.LabelRetry), "no command was Nak'ed for retry")

			tc.fix(e.fake)
			e.events.waitApplied(t, ids...)
			require.Equal(t, []string{"I0", "I1", "I2"}, e.lineCodes(t, "c1"), "applied once each, in order")
			e.waitSettled(t)
			require.Empty(t, e.deadLetters(t))
			require.Zero(t, obs.count("", consumer.LabelRetry), "no failure was counted")
		})
	}
}

func TestAbsentSidecarHoldsCommands(t *testing.T) {
	// The breaker would also hold the commands once open; a high threshold
	// shows that the first refused connections are held too.
	e := newEnv(t, withSidecarDown(), withBreaker(breaker.Settings{ConsecutiveFailures: 1 << 20}))
	probes := atomic.Int32{}
	probe := func(ctx context.Context) error { probes.Add(1); return e.probe(ctx) }
	r := e.startWorker(t, consumer.Config{MaxDeliver: 1, Probe: probe}, nil)

	e.publishCmd(t, cacheCmd("c1", ""))
	eventually(t, func() bool { return probes.Load() >= 3 }, waitFor, tick, "probes")
	require.ErrorIs(t, r.w.Ready(), statepool.ErrUnreachable)
	e.requireHeld(t, 1, "cache-c1")

	e.sidecar.Up(t)
	e.events.waitApplied(t, "cache-c1")

	e.sidecar.Down()
	e.publishCmd(t, addCmd("a1", "c1", item("A", 1, "10", "00")))
	target := probes.Load() + 3
	eventually(t, func() bool { return probes.Load() >= target }, waitFor, tick, "probes")
	e.requireHeld(t, 1, "a1")

	e.sidecar.Up(t)
	e.events.waitApplied(t, "a1")
	e.waitSettled(t)
	require.Empty(t, e.deadLetters(t))
}

func TestStateRejectedIsDeadLetteredAtOnce(t *testing.T) {
	e := newEnv(t)
	e.startWorker(t, consumer.Config{MaxDeliver: 10, Probe: e.probe}, nil)
	e.publishCmd(t, cacheCmd("c1", ""))
	e.events.waitApplied(t, "cache-c1")

	// daprd answers 400 for a request it refuses because of what is in it.
	e.fake.FailNextWith(1, http.StatusBadRequest, "ERR_MALFORMED_REQUEST")
	e.publishCmd(t, addCmd("a1", "c1", item("A", 1, "10", "00")))
	ev := e.events.waitCommand(t, "a1")
	require.Equal(t, command.OutcomeRejected, ev.Outcome)
	require.Equal(t, command.CodeStateRejected, ev.Error.Code)
	dls := e.deadLetters(t)
	require.Len(t, dls, 1)
	require.Equal(t, command.CodeStateRejected, dls[0].Header.Get(command.HeaderDLQCode))
	require.Equal(t, "1", dls[0].Header.Get(command.HeaderDLQDeliveries), "decided on the first delivery")
}

func TestDeadLetterAlwaysFits(t *testing.T) {
	e := newEnv(t)
	obs := newObserver()
	e.startWorker(t, consumer.Config{Observer: obs}, nil)

	// A body just under the server's max_payload: the dead letter's extra
	// headers would push a full copy over it.
	body := make([]byte, maxPayload-160)
	for i := range body {
		body[i] = 'x'
	}
	m := nats.NewMsg(subjects.Command("c1", command.TypeAddItem))
	m.Data = body
	m.Header.Set(command.HeaderMsgID, "big-1")
	m.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	ack := e.publishMsg(t, m)

	ev := e.events.waitCommand(t, "big-1")
	require.Equal(t, command.CodeBodyTooLarge, ev.Error.Code)
	dls := e.deadLetters(t)
	require.Len(t, dls, 1)
	dl := dls[0]
	require.Empty(t, dl.Data, "the body is left out")
	require.Contains(t, dl.Header.Get(command.HeaderDLQBodyOmitted), strconv.Itoa(len(body))+" bytes")
	require.Equal(t, strconv.FormatUint(ack.Sequence, 10), dl.Header.Get(command.HeaderDLQSequence),
		"the original can be read from the command stream")
	require.Equal(t, command.CodeBodyTooLarge, dl.Header.Get(command.HeaderDLQCode))
	require.NotEmpty(t, dl.Header.Get("Traceparent"), "the headers still fit, so they are kept")

	orig, err := e.stream(t, command.StreamCommands).GetMsg(t.Context(), ack.Sequence)
	require.NoError(t, err)
	require.Equal(t, body, orig.Data)
	e.waitSettled(t)
	redelivered, _ := obs.counts()
	require.Zero(t, redelivered, "stored on the first try: no spinning")
}

func TestDeadLetterFitsAStreamMaxMsgSize(t *testing.T) {
	e := newEnv(t)
	// An operator's CART_DLQ that refuses anything over 2 KiB.
	_, err := e.js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: command.StreamDeadLetters, Subjects: []string{subjects.DeadLetters()}, MaxMsgSize: 2048,
	})
	require.NoError(t, err)
	e.startWorker(t, consumer.Config{}, nil)

	m := nats.NewMsg(subjects.Command("c1", command.TypeAddItem))
	m.Data = bytesOf('x', 4096) // malformed JSON
	m.Header.Set(command.HeaderMsgID, "x1")
	m.Header.Set("X-Big", string(bytesOf('h', 3000)))
	e.publishMsg(t, m)
	e.events.waitCommand(t, "x1")
	dls := e.deadLetters(t)
	require.Len(t, dls, 1)
	require.Empty(t, dls[0].Data)
	require.Empty(t, dls[0].Header.Get("X-Big"), "headers too large for the stream are left out as well")
	require.Contains(t, dls[0].Header.Get(command.HeaderDLQBodyOmitted), "original headers")
	e.waitSettled(t)
}

func bytesOf(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}

func TestHeartbeatsKeepSlowCommands(t *testing.T) {
	e := newEnv(t)
	obs := newObserver()
	slow := newApplier(e.svc, func(ctx context.Context, cmd command.Command) error {
		if cmd.Type == command.TypeAddItem {
			return sleep(ctx, 5*time.Second)
		}
		return nil
	})
	e.startWorker(t, consumer.Config{Observer: obs, AckWait: consumer.MinAckWait}, slow)
	e.publishCmd(t, cacheCmd("c1", ""))
	e.publishCmd(t, addCmd("a1", "c1", item("A", 1, "10", "00")))
	e.events.waitApplied(t, "cache-c1", "a1")
	e.waitSettled(t)
	redelivered, _ := obs.counts()
	require.Zero(t, redelivered, "two and a half AckWaits of work, and JetStream never redelivered")
	require.Equal(t, []string{"A"}, e.lineCodes(t, "c1"))
}

// A store call refused with 403 while the probe still passes (daprd's
// metadata answers) must neither spin nor spend deliveries: the command is
// held and retried at the probe's pace until the call succeeds.
func TestForbiddenStateCallsHoldWithoutSpinning(t *testing.T) {
	e := newEnv(t)
	e.startWorker(t, consumer.Config{MaxDeliver: 1, Probe: e.probe}, nil)
	e.publishCmd(t, cacheCmd("c1", ""))
	e.events.waitApplied(t, "cache-c1")

	e.fake.FailNextWith(-1, http.StatusForbidden, "ERR_PERMISSION_DENIED")
	start := e.fake.Requests(daprfake.OpGet)
	e.publishCmd(t, addCmd("a1", "c1", item("A", 1, "10", "00")))
	eventually(t, func() bool { return e.fake.Requests(daprfake.OpGet) >= start+4 }, waitFor, tick, "retries")
	e.requireHeld(t, 1, "a1")
	// The probe's backoff paces the retries: after four, the fifth waits
	// at least the backoff's third step (4 × ProbeInterval, 200ms here).
	probes := e.fake.Requests(daprfake.OpMetadata)
	require.Less(t, probes, 20, "probes back off")

	e.fake.Heal()
	e.events.waitApplied(t, "a1")
	e.waitSettled(t)
	require.Empty(t, e.deadLetters(t))
}
