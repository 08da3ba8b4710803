package app

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

	"github.com/cartworker/cartworker/internal/config"
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

func TestConnectNATSWrongPasswordFailsAtOnce(t *testing.T) {
	srv := startAuthServer(t)
	var logs testkit.SyncBuffer
	// A window longer than the test's bound: retrying an authorization
	// failure would end in the context's error, not in this one.
	cfg := config.Config{NATSURL: srv.ClientURL(), NATSUser: "cw", NATSPassword: "wrong-pw", NATSConnectTimeout: time.Minute}
	ctx := testkit.Context(t, bound)

	nc, err := connectNATS(ctx, cfg, testLogger(&logs))
	require.Nil(t, nc)
	require.Error(t, err)
	require.NoError(t, ctx.Err(), "connectNATS returned by itself: %v", err)
	require.ErrorIs(t, err, nats.ErrAuthorization)
	msg := err.Error()
	require.Contains(t, msg, "NATS_URL "+srv.ClientURL())
	require.Contains(t, msg, "authorization failed (check NATS_USER/NATS_PASSWORD, NATS_TOKEN or NATS_CREDS)")
	require.NotContains(t, msg, "wrong-pw")
	require.NotContains(t, logs.String(), "wrong-pw")
	t.Logf("error: %v", err)
}

func TestConnectNATSCredentialsInURLAreRedacted(t *testing.T) {
	srv := startAuthServer(t)
	addr := strings.TrimPrefix(srv.ClientURL(), "nats://")
	var logs testkit.SyncBuffer
	cfg := config.Config{NATSURL: "nats://cw:wrong-pw@" + addr, NATSConnectTimeout: time.Minute}

	_, err := connectNATS(testkit.Context(t, bound), cfg, testLogger(&logs))
	require.ErrorIs(t, err, nats.ErrAuthorization)
	require.Contains(t, err.Error(), "NATS_URL nats://cw:xxxxx@"+addr+": authorization failed")
	require.NotContains(t, err.Error(), "wrong-pw")
	require.NotContains(t, logs.String(), "wrong-pw")
}

func TestConnectNATSUnreachableGivesUpWithItsCause(t *testing.T) {
	addr := closedPort(t)
	var logs testkit.SyncBuffer
	cfg := config.Config{NATSURL: "nats://" + addr, NATSConnectTimeout: 1500 * time.Millisecond}
	ctx := testkit.Context(t, bound)

	nc, err := connectNATS(ctx, cfg, testLogger(&logs))
	require.Nil(t, nc)
	require.Error(t, err)
	require.NoError(t, ctx.Err(), "connectNATS gave up by itself: %v", err)
	msg := err.Error()
	require.Contains(t, msg, fmt.Sprintf("NATS_URL nats://%s: not reachable after 1.5s", addr))
	require.Contains(t, msg, "connection refused", "the dial's own error, not only nats.go's 'no servers'")
	require.ErrorIs(t, err, nats.ErrNoServers)
	require.Contains(t, logs.String(), "NATS not reachable yet, retrying", "it retried within its window")
	t.Logf("error: %v", err)
}

func TestConnectNATSRightPasswordConnects(t *testing.T) {
	srv := startAuthServer(t)
	var logs testkit.SyncBuffer
	cfg := config.Config{NATSURL: srv.ClientURL(), NATSUser: "cw", NATSPassword: "right", NATSConnectTimeout: time.Minute}

	nc, err := connectNATS(testkit.Context(t, bound), cfg, testLogger(&logs))
	require.NoError(t, err)
	t.Cleanup(func() { closeNATS(nc, slog.New(slog.DiscardHandler)) })
	require.True(t, nc.IsConnected())
	require.NoError(t, nc.Flush())
	require.Contains(t, logs.String(), "connected to NATS")
}

// A server that comes up during the window is connected to: NATS starting
// next to the worker is why the window exists.
func TestConnectNATSWaitsForALateServer(t *testing.T) {
	addr := closedPort(t)
	_, portStr, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	var port int
	_, err = fmt.Sscan(portStr, &port)
	require.NoError(t, err)
	cfg := config.Config{NATSURL: "nats://" + addr, NATSConnectTimeout: bound}
	var logs testkit.SyncBuffer
	ctx := testkit.Context(t, bound)

	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := connectNATS(ctx, cfg, testLogger(&logs))
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

func TestConnectNATSStopsWithItsContext(t *testing.T) {
	cfg := config.Config{NATSURL: "nats://" + closedPort(t), NATSConnectTimeout: time.Minute}
	ctx, cancel := context.WithCancel(testkit.Context(t, bound))
	var logs testkit.SyncBuffer
	done := make(chan error, 1)
	go func() {
		_, err := connectNATS(ctx, cfg, testLogger(&logs))
		done <- err
	}()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "retrying") }, bound, 10*time.Millisecond)
	cancel()
	err := <-done
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, errors.Is(err, context.DeadlineExceeded), "it stopped at the cancel, not at the test's bound")
	require.Contains(t, err.Error(), "NATS_URL")
}
