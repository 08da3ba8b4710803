//go:build integration

package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// The rule these tests hold: a fault of the worker's own configuration or
// environment (a wrong token, a missing store, an absent daprd) never spends
// a command's deliveries and never dead-letters it; the instance goes not
// ready and says which setting to look at.

// requireHeld checks that n commands wait in the command stream's
// consumers, none delivered twice, and nothing was dead-lettered.
func (b *bus) requireHeld(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	tot, err := b.totals(ctx)
	require.NoError(t, err)
	require.EqualValues(t, n, uint64(tot.ackPending)+tot.pending, "commands kept: %s", tot)
	require.Zero(t, tot.redelivered, "no command was delivered twice: %s", tot)
	require.Empty(t, b.deadLetters(ctx, t), "no dead letter")
}

// waitNotReady waits until w's /readyz answers 503 naming setting, and its
// log does too.
func waitNotReady(ctx context.Context, t *testing.T, w *worker, setting string) {
	t.Helper()
	poll(ctx, t, 30*time.Second, "/readyz 503 naming "+setting, func() error {
		code, body, err := w.get("/readyz")
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(body, setting) {
			return fmt.Errorf("readyz %d: %s", code, body)
		}
		if !strings.Contains(w.logs.String(), setting) {
			return fmt.Errorf("the log does not name %s yet", setting)
		}
		return nil
	})
}

func TestMissingStateStoreHoldsCommands(t *testing.T) {
	ctx := testkit.Context(t, 3*time.Minute)
	st := sharedStack(t)
	b := connectBus(ctx, t, st.NATSURL())

	bad := startProcess(t, st, "nostore", map[string]string{
		"CART_STATE_STORE": "nosuchstore", "WORKER_MAX_DELIVER": "1",
	})
	b.waitConsumer(ctx, t)
	cart := newCartIDs("nostore", 1)[0]
	cache := publisher.CacheCommand(cart, publisher.NewCart{})
	cache.ID = "cache-" + cart
	_, err := b.pub.Publish(ctx, cache)
	require.NoError(t, err)
	waitNotReady(ctx, t, bad.worker, "CART_STATE_STORE")
	poll(ctx, t, 30*time.Second, "several failed checks", func() error {
		// The metadata call answers (HTTP 200, gRPC OK); the store is not in it.
		m := bad.metrics(t)
		if n := valueOr(m, "cartworker_state_requests_total", "op", "check", "code", "200") +
			valueOr(m, "cartworker_state_requests_total", "op", "check", "code", "OK"); n < 3 {
			return fmt.Errorf("%.0f checks", n)
		}
		return nil
	})
	b.requireHeld(ctx, t, 1)
	require.Empty(t, b.events.of(cart, cache.ID))
	bad.signal(t, syscall.SIGTERM)
	code, _ := bad.waitExit(t, 30*time.Second)
	require.Zero(t, code)

	good := inProcessWorker(t, st, "store", nil)
	_ = good
	b.events.waitFor(ctx, t, cart, cache.ID, func(e command.Event) bool { return e.Outcome == command.OutcomeApplied })
	require.Empty(t, b.deadLetters(ctx, t))
}

func TestDaprAbsentAtStartHoldsCommands(t *testing.T) {
	ctx := testkit.Context(t, 4*time.Minute)
	// A stack of its own whose daprd is stopped before the worker starts:
	// it comes back on the same ports.
	st := newTestStack(t)
	b := connectBus(ctx, t, st.NATSURL())
	require.NoError(t, st.StopDaprd(ctx))
	endpoint := st.DaprHTTPEndpoint()

	// No daprd yet: the worker starts, is not ready, and pulls nothing.
	w := inProcessWorker(t, st, "nodapr", map[string]string{
		// daprd's HTTP API is what comes up below.
		"WORKER_STATE_PROTOCOL": "http",
		"WORKER_MAX_DELIVER":    "1",
	})
	b.waitConsumer(ctx, t)
	cart := newCartIDs("nodapr", 1)[0]
	cache := publisher.CacheCommand(cart, publisher.NewCart{})
	cache.ID = "cache-" + cart
	add := publisher.AddItemCommand(cart, command.Item{ItemCode: "A", Quantity: 2, UnitPrice: money.FromInt(120), TaxCode: "01"})
	add.ID = "add-" + cart
	for _, c := range []command.Command{cache, add} {
		_, err := b.pub.Publish(ctx, c)
		require.NoError(t, err)
	}
	waitNotReady(ctx, t, w, "DAPR_HTTP_ENDPOINT")
	b.requireHeld(ctx, t, 2)

	// daprd comes up on that port: the same worker finds it and applies
	// both, in order, without a restart.
	require.NoError(t, st.StartDaprd(ctx))
	require.Equal(t, endpoint, st.DaprHTTPEndpoint())
	b.events.waitFor(ctx, t, cart, add.ID, func(e command.Event) bool { return e.Outcome == command.OutcomeApplied })
	d := readCart(ctx, t, st, cart)
	require.Equal(t, []string{cache.ID, add.ID}, d.AppliedCommandIDs)
	require.Equal(t, money.FromInt(264), d.Sales.TotalAmountWithTax)
	require.Empty(t, b.deadLetters(ctx, t))
	code, _, err := w.get("/readyz")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
}

func TestDeadLetterOfNearMaxPayloadBodyIsStored(t *testing.T) {
	ctx := testkit.Context(t, 2*time.Minute)
	st := sharedStack(t)
	b := connectBus(ctx, t, st.NATSURL())
	w := inProcessWorker(t, st, "bigdlq", nil)
	b.waitConsumer(ctx, t)

	// A malformed body as large as the server accepts with its headers:
	// the dead letter's own headers would not fit beside a full copy.
	maxPayload := int(b.nc.MaxPayload())
	cart := newCartIDs("bigdlq", 1)[0]
	m := nats.NewMsg(b.subj.Command(cart, command.TypeAddItem))
	m.Header.Set(command.HeaderMsgID, "big-"+cart)
	m.Data = []byte(strings.Repeat("x", maxPayload-200))
	ack, err := b.js.PublishMsg(ctx, m)
	require.NoError(t, err)

	ev := b.events.waitFor(ctx, t, cart, "big-"+cart, func(e command.Event) bool { return e.Outcome == command.OutcomeRejected })
	want := command.CodeMalformedJSON
	if len(m.Data) > command.MaxBodyBytes {
		want = command.CodeBodyTooLarge
	}
	require.Equal(t, want, ev.Error.Code)
	dls := b.deadLetters(ctx, t)
	require.Len(t, dls, 1)
	require.Empty(t, dls[0].Data)
	require.NotEmpty(t, dls[0].Header.Get(command.HeaderDLQBodyOmitted))
	require.Equal(t, fmt.Sprint(ack.Sequence), dls[0].Header.Get(command.HeaderDLQSequence))
	poll(ctx, t, 30*time.Second, "the command settled", func() error { return b.consumerSettled(ctx) })
	// A consumer counts only the redelivered commands still unacknowledged,
	// which a settled one has none of: the worker counts every redelivery.
	require.Zero(t, w.metrics(t).get(t, "cartworker_redeliveries_total"), "stored at the first try, no spinning")
}
