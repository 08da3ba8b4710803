package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/testkit"
)

// TestShutdownAcknowledgesBeforeReturning stops run while commands are in
// flight and, the moment it returns, asks the server what is still
// unacknowledged. main exits right after run returns, so an ack or Nak still
// in the client's write buffer at that point is lost with the process and the
// command comes back, a duplicate, only after AckWait.
func TestShutdownAcknowledgesBeforeReturning(t *testing.T) {
	const (
		carts    = 8
		perCart  = 25
		commands = carts * perCart
	)
	ns := testkit.StartJetStream(t)
	fake := daprfake.New()
	t.Cleanup(fake.Close)
	// Slow state calls keep every pool slot busy when the stop comes, so
	// the last acks are written just before run returns.
	fake.SetDelay(5 * time.Millisecond)
	env := map[string]string{
		"NATS_URL":                ns.ClientURL(),
		"DAPR_HTTP_ENDPOINT":      fake.URL(),
		"WORKER_CONCURRENCY":      "8",
		"WORKER_HTTP_ADDR":        freeAddr(t),
		"WORKER_ACK_WAIT":         "1m",
		"WORKER_SHUTDOWN_TIMEOUT": "10s",
		"LOG_LEVEL":               "warn",
	}

	nc := testkit.Connect(t, ns)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	var applied atomic.Int64
	sub, err := nc.Subscribe("cart.evt.*.applied", func(*nats.Msg) { applied.Add(1) })
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, &testkit.SyncBuffer{}) }()

	require.Eventually(t, func() bool {
		_, err := js.Consumer(context.Background(), command.StreamCommands, command.ConsumerName)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the worker creates its consumer")

	publish := publishFunc(t, js)
	for c := range carts {
		cartID := fmt.Sprintf("cart-%d", c)
		cmds := []command.Command{{ID: cartID + "-cache", Type: command.TypeCache, CartID: cartID}}
		for i := range perCart - 1 {
			cmds = append(cmds, command.Command{ID: fmt.Sprintf("%s-add-%d", cartID, i), Type: command.TypeAddItem, CartID: cartID,
				Items: []command.Item{{ItemCode: "X", Quantity: 1, UnitPrice: mustAmount(t, "10"), TaxCode: "01"}}})
		}
		for _, cmd := range cmds {
			publish(cmd)
		}
	}
	require.Eventually(t, func() bool { return applied.Load() >= commands/4 }, 30*time.Second, time.Millisecond,
		"a quarter of the commands applied")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return within 20s of the stop")
	}
	// No waiting here: whatever the server has not read by now, a real
	// process would have taken with it.
	info, err := js.Consumer(context.Background(), command.StreamCommands, command.ConsumerName)
	require.NoError(t, err)
	ci := info.CachedInfo()
	require.Zero(t, ci.NumAckPending, "deliveries left unacknowledged when run returned (%d applied events seen)", applied.Load())
	require.Less(t, applied.Load(), int64(commands), "the stop came mid-load")
}
