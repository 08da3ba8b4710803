package app

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/config"
	"github.com/cartworker/cartworker/internal/natsconn"
	"github.com/cartworker/cartworker/internal/testkit"
)

// The worker's NATS settings reach the connection: the right password
// connects, a wrong one fails at once, naming NATS_URL and not the
// password. internal/natsconn tests the connection itself.
func TestNATSOptionsFromConfig(t *testing.T) {
	srv := testkit.StartJetStream(t, func(o *server.Options) {
		o.Username = "cw"
		o.Password = "right"
	})
	ctx := testkit.Context(t, 15*time.Second)
	log := slog.New(slog.DiscardHandler)
	env := map[string]string{"NATS_URL": srv.ClientURL(), "NATS_USER": "cw", "NATS_PASSWORD": "right"}
	cfg, err := config.Load(nil, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err)

	nc, err := natsconn.Connect(ctx, cfg.NATS, log)
	require.NoError(t, err)
	require.True(t, nc.IsConnected())
	closeNATS(nc, log)
	require.True(t, nc.IsClosed())

	env["NATS_PASSWORD"] = "wrong-pw"
	cfg, err = config.Load(nil, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err)
	_, err = natsconn.Connect(ctx, cfg.NATS, log)
	require.ErrorIs(t, err, nats.ErrAuthorization)
	require.NoError(t, ctx.Err(), "an authorization failure is not retried")
	require.Contains(t, err.Error(), "NATS_URL "+srv.ClientURL()+": authorization failed")
	require.NotContains(t, err.Error(), "wrong-pw")
}
