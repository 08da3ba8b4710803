//go:build integration

package integration

import (
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// TestDaprAPITokenEnforced runs daprd with DAPR_API_TOKEN: a worker with the
// right token applies commands; one with a wrong token applies nothing and
// dead-letters its commands as max_deliveries without tripping anything;
// neither token ever shows in the workers' output.
func TestDaprAPITokenEnforced(t *testing.T) {
	const maxDeliver = 3
	ctx := testkit.Context(t, 3*time.Minute)
	nats := sharedStack(t)
	token := "tok-" + randomHex(16)
	wrong := "tok-" + randomHex(16)
	st := newTestStack(t, stackOptions{daprToken: token})

	// daprd itself refuses a request without the token, or with another.
	s, err := daprGet(ctx, st.DaprURL, "", "anything")
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, s.Status, "no token: %s", s.Body)
	s, err = daprGet(ctx, st.DaprURL, wrong, "anything")
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, s.Status, "wrong token: %s", s.Body)
	s, err = daprGet(ctx, st.DaprURL, token, "anything")
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, s.Status, "right token, missing key: %s", s.Body)

	// The right token: commands are applied.
	b := connectBus(ctx, t, nats.NATSURL)
	good := startProcess(t, "token-right", workerEnv(t, st, nats, nil))
	b.waitConsumer(ctx, t)
	cart := newCartIDs("tok", 1)[0]
	cacheIDs := cacheCarts(ctx, t, b, []string{cart})
	ev, err := b.pub.PublishAndWait(ctx, publisher.AddItemCommand(cart,
		command.Item{ItemCode: "GOOD", Quantity: 2, UnitPrice: money.FromInt(120), TaxCode: "01"}))
	require.NoError(t, err)
	require.Equal(t, command.OutcomeApplied, ev.Outcome)
	d, _ := readCart(ctx, t, st, cart)
	require.Len(t, d.LineItems, 1)
	require.Equal(t, 264.0, d.Sales.TotalAmountWithTax)
	good.signal(t, syscall.SIGTERM)
	code, _ := good.waitExit(t, 30*time.Second)
	require.Zero(t, code, "worker with the right token exits cleanly")

	// A wrong token: every state call is refused with 401, which is not
	// Dapr's ill health, so the breaker stays closed; the command is
	// retried and dead-lettered after WORKER_MAX_DELIVER deliveries.
	envWrong := workerEnv(t, st, nats, map[string]string{"WORKER_MAX_DELIVER": strconv.Itoa(maxDeliver)})
	envWrong["DAPR_API_TOKEN"] = wrong
	bad := startProcess(t, "token-wrong", envWrong)
	cmd := publisher.AddItemCommand(cart, command.Item{ItemCode: "NEVER", Quantity: 1, UnitPrice: money.FromInt(1), TaxCode: "01"})
	_, err = b.pub.PublishAndWait(ctx, cmd)
	requireRejected(t, err, "max_deliveries")
	var rej *publisher.RejectedError
	require.ErrorAs(t, err, &rej)
	require.Contains(t, rej.Message, "401")

	dls := b.deadLetters(ctx, t)
	require.Len(t, dls, 1)
	require.Equal(t, "max_deliveries", dls[0].Header.Get(command.HeaderDLQCode))
	require.Equal(t, strconv.Itoa(maxDeliver), dls[0].Header.Get(command.HeaderDLQDeliveries))
	require.Equal(t, b.subj.Command(cart, command.TypeAddItem), dls[0].Header.Get(command.HeaderDLQSubject))

	m := bad.metrics(t)
	require.Equal(t, 0.0, m.get(t, "cartworker_breaker_state"), "a 401 must not trip the breaker")
	require.Equal(t, float64(maxDeliver), m.get(t, "cartworker_state_requests_total", "op", "get", "code", "401"))
	require.Equal(t, 1.0, m.get(t, "cartworker_dead_letters_total"))
	code, err = bad.readyz()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.True(t, bad.running(), "the wrong-token worker keeps running")

	// The cart is untouched.
	after, _ := readCart(ctx, t, st, cart)
	require.Equal(t, d.LineItems, after.LineItems)
	require.Equal(t, []string{cacheIDs[cart], ev.CommandID}, after.AppliedIDs)

	bad.signal(t, syscall.SIGTERM)
	code, _ = bad.waitExit(t, 30*time.Second)
	require.Zero(t, code)
	requireNoPanic(t, good.worker, bad.worker)
	for _, w := range []*worker{good.worker, bad.worker} {
		out := w.logs.String()
		require.Contains(t, out, "config.dapr_api_token=REDACTED", "worker %s logs its config with the token redacted", w.name)
		require.NotContains(t, out, token, "worker %s logged the token", w.name)
		require.NotContains(t, out, wrong, "worker %s logged the token", w.name)
	}
}
