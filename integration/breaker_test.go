//go:build integration

package integration

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
)

const (
	brkCommands   = 30
	brkCarts      = 3
	brkMaxDeliver = 3
)

// TestBreakerTripsAndRecovers stops daprd under load: the breaker opens,
// the worker turns unready and holds its commands (without spending their
// deliveries) while it probes daprd, and once daprd is back every command is
// applied exactly once and the worker is ready again.
func TestBreakerTripsAndRecovers(t *testing.T) {
	ctx := testkit.Context(t, 4*time.Minute)
	// A stack of its own, whose daprd stops and starts: it keeps its
	// endpoints across that, so the worker does too.
	st := newTestStack(t)
	b := connectBus(ctx, t, st.NATSURL())
	w := inProcessWorker(t, st, "breaker", map[string]string{
		"WORKER_BREAKER_FAILURES":      "3",
		"WORKER_BREAKER_OPEN_TIMEOUT":  "1s",
		"WORKER_MAX_DELIVER":           strconv.Itoa(brkMaxDeliver),
		"WORKER_CONCURRENCY":           "4",
		"WORKER_STATE_DIAL_TIMEOUT":    "500ms",
		"WORKER_STATE_HEADER_TIMEOUT":  "1s",
		"WORKER_STATE_REQUEST_TIMEOUT": "2s",
	})
	b.waitConsumer(ctx, t)

	carts := newCartIDs("brk", brkCarts)
	cacheIDs := cacheCarts(ctx, t, b, carts)
	plan := newLoad(carts, brkCommands)

	require.NoError(t, st.StopDaprd(ctx))
	for _, c := range plan.cmds {
		_, err := b.pub.Publish(ctx, c)
		require.NoError(t, err)
	}

	// The worker says it is not ready, naming the endpoint it cannot
	// reach: its commands hold on the first refused connection, so the
	// breaker may or may not have opened by then.
	poll(ctx, t, 30*time.Second, "/readyz 503", func() error {
		code, body, err := w.get("/readyz")
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "DAPR_GRPC_ENDPOINT") {
			return fmt.Errorf("readyz %d: %s", code, body)
		}
		return nil
	})

	// Hold daprd down for many probes of it, longer than any command
	// would last if each failed call spent a delivery: none may be
	// dead-lettered, and none is redelivered past WORKER_MAX_DELIVER.
	poll(ctx, t, time.Minute, "daprd probed while down", func() error {
		m := w.metrics(t)
		failed := 0.0
		for _, code := range []string{"error", "timeout", "Unavailable", "DeadlineExceeded"} {
			failed += valueOr(m, "cartworker_state_requests_total", "op", "check", "code", code)
		}
		if failed < 8 {
			return fmt.Errorf("%.0f failed probes", failed)
		}
		return nil
	})
	m := w.metrics(t)
	var dead []string
	for _, dl := range b.deadLetters(ctx, t) {
		dead = append(dead, fmt.Sprintf("%s code=%s deliveries=%s reason=%q", dl.Header.Get(command.HeaderDLQSubject),
			dl.Header.Get(command.HeaderDLQCode), dl.Header.Get(command.HeaderDLQDeliveries), dl.Header.Get(command.HeaderDLQReason)))
	}
	require.Empty(t, dead, "commands dead-lettered while daprd was down (a failed half-open probe on a command "+
		"already delivered WORKER_MAX_DELIVER times is dead-lettered instead of waiting for Dapr)")
	require.Zero(t, m.get(t, "cartworker_dead_letters_total"), "dead letters while daprd was down")
	for _, ev := range b.events.all() {
		require.NotEqual(t, command.OutcomeRejected, ev.Outcome, "rejected while daprd was down: %+v", ev.Error)
	}
	require.Zero(t, b.events.appliedCount()-brkCarts, "nothing applied while daprd was down")
	t.Logf("daprd down: %.0f attempts held by the open breaker, %.0f held as not ready, %.0f retried, %.0f redeliveries, state requests %.0f",
		valueOr(m, "cartworker_commands_total", "outcome", "breaker_open"),
		valueOr(m, "cartworker_commands_total", "outcome", "not_ready"),
		valueOr(m, "cartworker_commands_total", "outcome", "retry"),
		m.get(t, "cartworker_redeliveries_total"),
		m.get(t, "cartworker_state_requests_total"))

	// daprd comes back on the same port: everything is applied, once.
	downFor := time.Now()
	require.NoError(t, st.StartDaprd(ctx))
	b.events.waitApplied(ctx, t, time.Minute, plan.byCart())
	t.Logf("all %d commands applied %s after daprd restarted", brkCommands, time.Since(downFor).Round(time.Millisecond))
	poll(ctx, t, 30*time.Second, "breaker closed and /readyz 200", func() error {
		state := w.metrics(t).get(t, "cartworker_breaker_state")
		code, err := w.readyz()
		if err != nil {
			return err
		}
		if state != 0 || code != http.StatusOK {
			return fmt.Errorf("breaker state %.0f, readyz %d", state, code)
		}
		return nil
	})
	poll(ctx, t, 30*time.Second, "the consumer to settle", func() error { return b.consumerSettled(ctx) })
	plan.verify(ctx, t, st, cacheIDs)
	require.Zero(t, w.metrics(t).get(t, "cartworker_dead_letters_total"))
	n, err := b.deadLetterCount(ctx)
	require.NoError(t, err)
	require.Zero(t, n)

	// And it keeps working.
	ev, err := b.pub.PublishAndWait(ctx, command.Command{Type: command.TypeAddItem, CartID: carts[0],
		Items: []command.Item{{ItemCode: "after", Quantity: 1, UnitPrice: money.FromInt(1), TaxCode: "00"}}})
	require.NoError(t, err)
	require.False(t, ev.Duplicate)
	requireNoPanic(t, w)
}

// valueOr is a metric's value, 0 when it has no sample yet.
func valueOr(m metricsText, name string, labels ...string) float64 {
	v, _ := m.value(name, labels...)
	return v
}
