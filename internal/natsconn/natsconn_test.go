package natsconn_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/natsconn"
	"github.com/cartworker/cartworker/internal/testkit"
)

// bound is the most any of these connects may take: a test context ends
// there, so a connect that waits when it should fail shows up as a
// context error rather than as a hang.
const bound = 15 * time.Second

// startAuthServer starts an embedded NATS server that only accepts user
// "cw" with password "right".
func startAuthServer(t *testing.T) *server.Server {
	t.Helper()
	return testkit.StartJetStream(t, func(o *server.Options) {
		o.Username = "cw"
		o.Password = "right"
	})
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func testLogger(buf *testkit.SyncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestConnectWrongPasswordFailsAtOnce(t *testing.T) {
	srv := startAuthServer(t)
	var logs testkit.SyncBuffer
	// A window longer than the test's bound: retrying an authorization
	// failure would end in the context's error, not in this one.
	opts := natsconn.Options{URL: srv.ClientURL(), User: "cw", Password: "wrong-pw", ConnectTimeout: time.Minute}
	ctx := testkit.Context(t, bound)

	nc, err := natsconn.Connect(ctx, opts, testLogger(&logs))
	require.Nil(t, nc)
	require.Error(t, err)
	require.NoError(t, ctx.Err(), "Connect returned by itself: %v", err)
	require.ErrorIs(t, err, nats.ErrAuthorization)
	msg := err.Error()
	require.Contains(t, msg, "NATS_URL "+srv.ClientURL())
	require.Contains(t, msg, "authorization failed (check NATS_USER/NATS_PASSWORD): ")
	require.NotContains(t, msg, "wrong-pw")
	require.NotContains(t, logs.String(), "wrong-pw")
	t.Logf("error: %v", err)
}

func TestConnectCredentialsInURLAreRedacted(t *testing.T) {
	srv := startAuthServer(t)
	addr := strings.TrimPrefix(srv.ClientURL(), "nats://")
	var logs testkit.SyncBuffer
	opts := natsconn.Options{URL: "nats://cw:wrong-pw@" + addr, ConnectTimeout: time.Minute}

	_, err := natsconn.Connect(testkit.Context(t, bound), opts, testLogger(&logs))
	require.ErrorIs(t, err, nats.ErrAuthorization)
	require.Contains(t, err.Error(), "NATS_URL nats://cw:xxxxx@"+addr+": authorization failed (check the credentials in NATS_URL)")
	require.NotContains(t, err.Error(), "wrong-pw")
	require.NotContains(t, logs.String(), "wrong-pw")
}

func TestConnectUnreachableGivesUpWithItsCause(t *testing.T) {
	addr := closedPort(t)
	var logs testkit.SyncBuffer
	opts := natsconn.Options{URL: "nats://" + addr, ConnectTimeout: 1500 * time.Millisecond}
	ctx := testkit.Context(t, bound)

	nc, err := natsconn.Connect(ctx, opts, testLogger(&logs))
	require.Nil(t, nc)
	require.Error(t, err)
	require.NoError(t, ctx.Err(), "Connect gave up by itself: %v", err)
	msg := err.Error()
	require.Contains(t, msg, fmt.Sprintf("NATS_URL nats://%s: not reachable after 1.5s", addr))
	require.Contains(t, msg, "connection refused", "the dial's own error, not only nats.go's 'no servers'")
	require.ErrorIs(t, err, nats.ErrNoServers)
	require.Contains(t, logs.String(), "NATS not reachable yet, retrying", "it retried within its window")
	t.Logf("error: %v", err)
}

func TestConnectRightPasswordConnects(t *testing.T) {
	srv := startAuthServer(t)
	var logs testkit.SyncBuffer
	opts := natsconn.Options{URL: srv.ClientURL(), User: "cw", Password: "right", ConnectTimeout: time.Minute}

	nc, err := natsconn.Connect(testkit.Context(t, bound), opts, testLogger(&logs))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	require.True(t, nc.IsConnected())
	require.NoError(t, nc.Flush())
	require.Contains(t, logs.String(), "connected to NATS")
}

// A server that comes up during the window is connected to: NATS starting
// next to the worker is why the window exists.
func TestConnectWaitsForALateServer(t *testing.T) {
	addr := closedPort(t)
	_, portStr, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	var port int
	_, err = fmt.Sscan(portStr, &port)
	require.NoError(t, err)
	opts := natsconn.Options{URL: "nats://" + addr, ConnectTimeout: bound}
	var logs testkit.SyncBuffer
	ctx := testkit.Context(t, bound)

	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := natsconn.Connect(ctx, opts, testLogger(&logs))
		done <- result{nc, err}
	}()
	// Start the server once the first attempt has failed.
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "retrying") }, bound, 10*time.Millisecond)
	testkit.StartJetStream(t, func(o *server.Options) { o.Port = port })
	r := <-done
	require.NoError(t, r.err)
	t.Cleanup(r.nc.Close)
	require.True(t, r.nc.IsConnected())
}

func TestConnectStopsWithItsContext(t *testing.T) {
	opts := natsconn.Options{URL: "nats://" + closedPort(t), ConnectTimeout: time.Minute}
	ctx, cancel := context.WithCancel(testkit.Context(t, bound))
	var logs testkit.SyncBuffer
	done := make(chan error, 1)
	go func() {
		_, err := natsconn.Connect(ctx, opts, testLogger(&logs))
		done <- err
	}()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "retrying") }, bound, 10*time.Millisecond)
	cancel()
	err := <-done
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, errors.Is(err, context.DeadlineExceeded), "it stopped at the cancel, not at the test's bound")
	require.Contains(t, err.Error(), "NATS_URL")
}

// With no ConnectTimeout, as cartctl connects, a server that is not there
// is one failed attempt, reported at once.
func TestConnectWithoutTimeoutTriesOnce(t *testing.T) {
	addr := closedPort(t)
	var logs testkit.SyncBuffer
	opts := natsconn.Options{URL: "nats://u:s3cret@" + addr, Name: "cartctl"}

	nc, err := natsconn.Connect(testkit.Context(t, bound), opts, testLogger(&logs))
	require.Nil(t, nc)
	require.ErrorIs(t, err, nats.ErrNoServers)
	require.Contains(t, err.Error(), fmt.Sprintf("NATS_URL nats://u:xxxxx@%s: not reachable: ", addr))
	require.Contains(t, err.Error(), "connection refused")
	require.NotContains(t, err.Error(), "s3cret")
	require.NotContains(t, logs.String(), "retrying")
}

func TestConnectNilLogger(t *testing.T) {
	srv := testkit.StartJetStream(t)
	nc, err := natsconn.Connect(testkit.Context(t, bound), natsconn.Options{URL: srv.ClientURL()}, nil)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	require.True(t, nc.IsConnected())
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ url, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://u:pw9@127.0.0.1:4222", "nats://u:xxxxx@127.0.0.1:4222"},
		// NATS takes a lone user in the URL as a token.
		{"nats://t0ken@a:4222,nats://b:4222", "nats://xxxxx@a:4222,nats://b:4222"},
		{"nats://a:4222, nats://u:pw9@b:4222", "nats://a:4222,nats://u:xxxxx@b:4222"},
		// A URL that does not parse is shown unless it may hide a secret.
		{"nats://u:pw9@[::1", "<unparsable URL>"},
		{"::", "::"},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			got := natsconn.RedactURL(tt.url)
			require.Equal(t, tt.want, got)
			require.NotContains(t, got, "pw9")
			require.NotContains(t, got, "t0ken")
		})
	}
}
