package app

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/config"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/testkit"
)

// An in-process caller's listener serves the endpoints, and an abort ends
// Run at once, its NATS connection closed.
func TestRunWithListenerAndAbort(t *testing.T) {
	srv := testkit.StartJetStream(t)
	dapr := daprfake.New()
	t.Cleanup(dapr.Close)
	env := map[string]string{
		"NATS_URL": srv.ClientURL(), "DAPR_HTTP_ENDPOINT": dapr.URL(), "WORKER_STATE_PROTOCOL": "http",
		"WORKER_HTTP_ADDR": "127.0.0.1:1", // not used: the listener wins
		"LOG_FORMAT":       "text",
	}
	cfg, err := config.Load(nil, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	logs := &testkit.SyncBuffer{}
	abort := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), cfg, NewLogger(cfg, logs), WithListener(ln), WithAbort(abort))
	}()

	ctx := testkit.Context(t, 30*time.Second)
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + ln.Addr().String() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && srv.NumClients() == 1
	}, 20*time.Second, 20*time.Millisecond, "ready on the caller's listener")

	close(abort)
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("Run did not return after the abort")
	}
	require.Eventually(t, func() bool { return srv.NumClients() == 0 }, 5*time.Second, 10*time.Millisecond,
		"the worker's connection is closed")
	require.Contains(t, logs.String(), "aborted")
	_, err = net.Dial("tcp", ln.Addr().String())
	require.Error(t, err, "the listener is closed with Run")
}
