//go:build integration

package integration

import (
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/cartworkertest"
	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// TestDaprAPITokenEnforced runs daprd with DAPR_API_TOKEN: a worker with the
// right token applies commands; one with a wrong token applies nothing,
// holds its commands without spending a delivery and says it is not ready
// because of DAPR_API_TOKEN; neither token ever shows in the workers' output.
func TestDaprAPITokenEnforced(t *testing.T) {
	ctx := testkit.Context(t, 3*time.Minute)
	token := "tok-" + randomHex(16)
	wrong := "tok-" + randomHex(16)
	st := newTestStack(t, cartworkertest.WithDaprToken(token))

	// daprd itself refuses a request without the token, or with another.
	_, status, err := daprGet(ctx, st.DaprHTTPEndpoint(), "", "anything")
	require.ErrorIs(t, err, statepool.ErrUnauthorized)
	require.Equal(t, http.StatusUnauthorized, status, "no token: %v", err)
	_, status, err = daprGet(ctx, st.DaprHTTPEndpoint(), wrong, "anything")
	require.ErrorIs(t, err, statepool.ErrUnauthorized)
	require.Equal(t, http.StatusUnauthorized, status, "wrong token: %v", err)
	_, status, err = daprGet(ctx, st.DaprHTTPEndpoint(), token, "anything")
	require.ErrorIs(t, err, statepool.ErrNotFound)
	require.Equal(t, http.StatusNoContent, status, "right token, missing key: %v", err)

	// The right token: commands are applied.
	b := connectBus(ctx, t, st.NATSURL())
	good := startProcess(t, st, "token-right", nil)
	b.waitConsumer(ctx, t)
	cart := newCartIDs("tok", 1)[0]
	cacheIDs := cacheCarts(ctx, t, b, []string{cart})
	ev, err := b.pub.PublishAndWait(ctx, publisher.AddItemCommand(cart,
		command.Item{ItemCode: "GOOD", Quantity: 2, UnitPrice: money.FromInt(120), TaxCode: "01"}))
	require.NoError(t, err)
	require.Equal(t, command.OutcomeApplied, ev.Outcome)
	d := readCart(ctx, t, st, cart)
	require.Len(t, d.LineItems, 1)
	require.Equal(t, money.FromInt(264), d.Sales.TotalAmountWithTax)
	good.signal(t, syscall.SIGTERM)
	code, _ := good.waitExit(t, 30*time.Second)
	require.Zero(t, code, "worker with the right token exits cleanly")

	// A wrong token is the worker's misconfiguration, not the command's
	// fault: the worker checks daprd at start-up, stays not ready naming
	// DAPR_API_TOKEN, pulls nothing and dead-letters nothing, however long
	// it runs (WORKER_MAX_DELIVER 1 would dead-letter at the first spent
	// delivery).
	bad := startProcess(t, st, "token-wrong", map[string]string{"WORKER_MAX_DELIVER": "1", "DAPR_API_TOKEN": wrong})
	cmd := publisher.AddItemCommand(cart, command.Item{ItemCode: "LATER", Quantity: 1, UnitPrice: money.FromInt(1), TaxCode: "01"})
	cmd.ID = "later-" + cart
	_, err = b.pub.Publish(ctx, cmd)
	require.NoError(t, err)
	poll(ctx, t, 30*time.Second, "several failed checks of daprd", func() error {
		m := bad.metrics(t)
		if n := valueOr(m, "cartworker_state_requests_total", "op", "check", "code", "401") +
			valueOr(m, "cartworker_state_requests_total", "op", "check", "code", "Unauthenticated"); n < 3 {
			return fmt.Errorf("%.0f checks refused", n)
		}
		return nil
	})
	code, body, err := bad.get("/readyz")
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "DAPR_API_TOKEN")
	require.Contains(t, bad.logs.String(), "DAPR_API_TOKEN", "the log names the setting to fix")
	b.requireHeld(ctx, t, 1)
	m := bad.metrics(t)
	require.Equal(t, 0.0, m.get(t, "cartworker_breaker_state"), "a 401 must not trip the breaker")
	require.Equal(t, 0.0, m.get(t, "cartworker_dead_letters_total"))
	require.True(t, bad.running(), "the wrong-token worker keeps running")
	bad.signal(t, syscall.SIGTERM)
	code, _ = bad.waitExit(t, 30*time.Second)
	require.Zero(t, code)

	// With the token fixed, the command is applied, not lost.
	fixed := startProcess(t, st, "token-fixed", nil)
	b.events.waitFor(ctx, t, cart, cmd.ID, func(e command.Event) bool { return e.Outcome == command.OutcomeApplied })
	after := readCart(ctx, t, st, cart)
	require.Len(t, after.LineItems, 2)
	require.Equal(t, []string{cacheIDs[cart], ev.CommandID, cmd.ID}, after.AppliedCommandIDs)
	require.Empty(t, b.deadLetters(ctx, t))
	fixed.signal(t, syscall.SIGTERM)
	code, _ = fixed.waitExit(t, 30*time.Second)
	require.Zero(t, code)

	requireNoPanic(t, good.worker, bad.worker)
	for _, w := range []*worker{good.worker, bad.worker} {
		out := w.logs.String()
		require.Contains(t, out, "config.dapr_api_token=REDACTED", "worker %s logs its config with the token redacted", w.name)
		require.NotContains(t, out, token, "worker %s logged the token", w.name)
		require.NotContains(t, out, wrong, "worker %s logged the token", w.name)
	}
}
