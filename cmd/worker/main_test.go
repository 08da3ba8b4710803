package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url) //nolint:noctx // test helper against loopback
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRunEndToEnd(t *testing.T) {
	ns := testkit.StartJetStream(t)
	fake := daprfake.New(daprfake.WithAPIToken("tok"))
	t.Cleanup(fake.Close)
	addr := freeAddr(t)
	env := map[string]string{
		"NATS_URL":           ns.ClientURL(),
		"DAPR_HTTP_ENDPOINT": fake.URL(),
		"DAPR_GRPC_ENDPOINT": fake.GRPCAddr(),
		"DAPR_API_TOKEN":     "tok",
		"WORKER_CONCURRENCY": "4",
	}
	logs := &testkit.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-http-addr", addr}, func(k string) string { return env[k] }, logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("run did not return after cancel")
		}
	})

	require.Eventually(t, func() bool {
		code, _ := httpGet(t, "http://"+addr+"/readyz")
		return code == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond)
	code, _ := httpGet(t, "http://"+addr+"/healthz")
	require.Equal(t, http.StatusOK, code)

	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	events := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe("cart.evt.>", events)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	publish := publishFunc(t, js)
	publish(command.Command{ID: "c1", Type: command.TypeCache, CartID: "cart-1"})
	for i := range 3 {
		publish(command.Command{ID: "a" + strconv.Itoa(i), Type: command.TypeAddItem, CartID: "cart-1",
			Items: []command.Item{{ItemCode: "X", Quantity: 2, UnitPrice: mustAmount(t, "120"), TaxCode: "01"}}})
	}
	for range 4 {
		select {
		case m := <-events:
			var ev command.Event
			require.NoError(t, json.Unmarshal(m.Data, &ev))
			require.Equal(t, command.OutcomeApplied, ev.Outcome, string(m.Data))
		case <-time.After(10 * time.Second):
			t.Fatal("no event")
		}
	}
	raw, ok := fake.Get("cart-1")
	require.True(t, ok)
	var cart struct {
		Sales struct {
			TotalWithTax json.Number `json:"total_amount_with_tax"`
		} `json:"sales"`
	}
	require.NoError(t, json.Unmarshal(raw, &cart))
	require.Equal(t, "792", cart.Sales.TotalWithTax.String())

	_, body := httpGet(t, "http://"+addr+"/metrics")
	for _, name := range []string{
		`cartworker_commands_total{outcome="applied",type="add-item"} 3`,
		"cartworker_command_duration_seconds_bucket",
		`cartworker_state_requests_total{code="OK",op="save"}`,
		"cartworker_state_connections_opened_total",
		"cartworker_breaker_state 0",
		"cartworker_redeliveries_total 0",
		"cartworker_dead_letters_total 0",
	} {
		require.Contains(t, body, name)
	}
	require.NotContains(t, logs.String(), "tok\"", "the API token must never be logged")

	// Dapr down: the breaker opens and readiness follows.
	fake.FailWith(http.StatusInternalServerError)
	for i := range 6 {
		publish(command.Command{ID: "b" + strconv.Itoa(i), Type: command.TypeAddItem, CartID: "cart-1",
			Items: []command.Item{{ItemCode: "X", Quantity: 1, UnitPrice: mustAmount(t, "1"), TaxCode: "00"}}})
	}
	require.Eventually(t, func() bool {
		code, _ := httpGet(t, "http://"+addr+"/readyz")
		return code == http.StatusServiceUnavailable
	}, 15*time.Second, 20*time.Millisecond)
	fake.Heal()
}

func TestHelpAndBadConfig(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-h"}, func(string) string { return "" }, &out)
	require.ErrorContains(t, err, "help requested")
	require.Contains(t, out.String(), "WORKER_CONCURRENCY")

	err = run(context.Background(), nil, func(k string) string {
		if k == "WORKER_CONCURRENCY" {
			return "lots"
		}
		return ""
	}, &out)
	require.ErrorContains(t, err, "WORKER_CONCURRENCY")
}

// publishFunc returns a function that publishes a command as a client
// would, failing t if JetStream does not store it.
func publishFunc(t *testing.T, js jetstream.JetStream) func(command.Command) {
	t.Helper()
	p, err := publisher.New(js, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return func(cmd command.Command) {
		t.Helper()
		_, err := p.Publish(context.Background(), cmd)
		require.NoError(t, err)
	}
}

func mustAmount(t *testing.T, s string) money.Amount {
	t.Helper()
	a, err := money.Parse(s)
	require.NoError(t, err)
	return a
}

// The soft memory limit follows the one memory setting, unless the
// operator set GOMEMLIMIT, which the Go runtime has read already.
func TestTuneGCFollowsTheHeldBytes(t *testing.T) {
	limit, percent := debug.SetMemoryLimit(-1), debug.SetGCPercent(-1)
	debug.SetGCPercent(percent)
	t.Cleanup(func() {
		debug.SetMemoryLimit(limit)
		debug.SetGCPercent(percent)
	})
	tuneGC(func(string) string { return "" }, 16<<20)
	require.EqualValues(t, 28<<20, debug.SetMemoryLimit(-1), "held bytes plus the runtime's 12 MiB")

	debug.SetMemoryLimit(123 << 20)
	tuneGC(func(k string) string {
		if k == "GOMEMLIMIT" {
			return "123MiB"
		}
		return ""
	}, 16<<20)
	require.EqualValues(t, 123<<20, debug.SetMemoryLimit(-1), "GOMEMLIMIT wins")
}
