package config

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cartworker/cartworker/internal/budget"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/natsconn/natstest"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	c, err := Load(nil, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "nats://127.0.0.1:4222", c.NATS.URL)
	require.Equal(t, "http://127.0.0.1:3500", c.State.Endpoint)
	require.Equal(t, "cartstore", c.State.StoreName)
	require.Equal(t, ":8080", c.HTTPAddr)
	require.Equal(t, 20*time.Second, c.Consumer.ShutdownTimeout)
	require.Equal(t, statepool.ModePooled, c.State.Mode)
	require.Equal(t, statepool.DefaultProtocol, c.State.Protocol)
	require.Equal(t, statepool.DefaultGRPCEndpoint, c.State.GRPCEndpoint)
	require.Equal(t, statepool.DefaultGRPCPort, c.DaprGRPCPort)
	p := c.State
	require.Equal(t, 50, p.MaxConns)
	require.Equal(t, 3*time.Second, p.DialTimeout)
	require.Equal(t, 5*time.Second, p.ResponseHeaderTimeout)
	require.Equal(t, 10*time.Second, p.RequestTimeout)
}

func TestEnvThenFlags(t *testing.T) {
	c, err := Load([]string{"-concurrency", "4"}, env(map[string]string{
		"DAPR_HTTP_PORT":     "3601",
		"WORKER_CONCURRENCY": "32",
		"NATS_URL":           "nats://a:4222,nats://b:4222",
		"CART_TAX_TABLE":     "01:external:10",
	}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 4, c.Consumer.Concurrency, "flags win over env")
	require.Equal(t, "http://127.0.0.1:3601", c.State.Endpoint)
	require.Equal(t, "01:external:10", c.Carts.TaxTable.String())
}

func TestGRPCSettings(t *testing.T) {
	c, err := Load(nil, env(map[string]string{"WORKER_STATE_PROTOCOL": "grpc", "DAPR_GRPC_PORT": "50002"}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, statepool.ProtocolGRPC, c.State.Protocol)
	require.Equal(t, "127.0.0.1:50002", c.State.GRPCEndpoint, "DAPR_GRPC_PORT makes the default endpoint")

	c, err = Load([]string{"-dapr-grpc-endpoint", "http://daprd:50001"}, env(map[string]string{
		"DAPR_GRPC_ENDPOINT": "elsewhere:1", "DAPR_GRPC_PORT": "50002",
	}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "http://daprd:50001", c.State.GRPCEndpoint, "flags win; the endpoint wins over the port")

	c, err = Load([]string{"-state-protocol", "grpc"}, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, statepool.ProtocolGRPC, c.State.Protocol)
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "config", c)
	require.Contains(t, buf.String(), `"state_protocol":"grpc"`)
	require.Contains(t, buf.String(), `"dapr_grpc_endpoint":"127.0.0.1:50001"`)
}

func TestBadValuesNameTheVariable(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"WORKER_CONCURRENCY": "many"}, "WORKER_CONCURRENCY"},
		{map[string]string{"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY"},
		{map[string]string{"WORKER_SHUTDOWN_TIMEOUT": "soon"}, "WORKER_SHUTDOWN_TIMEOUT"},
		{map[string]string{"WORKER_SHUTDOWN_TIMEOUT": "-1s"}, "WORKER_SHUTDOWN_TIMEOUT"},
		{map[string]string{"WORKER_STATE_CLIENT": "magic"}, "WORKER_STATE_CLIENT"},
		{map[string]string{"WORKER_STATE_PROTOCOL": "grpc-web"}, "WORKER_STATE_PROTOCOL"},
		{map[string]string{"WORKER_STATE_PROTOCOL": "grpc", "WORKER_STATE_CLIENT": "per-request"}, "WORKER_STATE_CLIENT"},
		{map[string]string{"DAPR_GRPC_ENDPOINT": "unix:///tmp/dapr.sock"}, "DAPR_GRPC_ENDPOINT"},
		{map[string]string{"DAPR_GRPC_PORT": "70000"}, "DAPR_GRPC_PORT"},
		{map[string]string{"DAPR_GRPC_PORT": "0"}, "DAPR_GRPC_PORT"},
		{map[string]string{"DAPR_HTTP_ENDPOINT": "ftp://x"}, "DAPR_HTTP_ENDPOINT"},
		{map[string]string{"NATS_URL": "::"}, "NATS_URL"},
		{map[string]string{"NATS_USER": "u"}, "NATS_USER"},
		{map[string]string{"CART_TAX_TABLE": "01:vat:10"}, "CART_TAX_TABLE"},
		{map[string]string{"CART_SUBJECT_PREFIX": "a.b"}, "CART_SUBJECT_PREFIX"},
		{map[string]string{"WORKER_HTTP_ADDR": "8080"}, "WORKER_HTTP_ADDR"},
		{map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{map[string]string{"WORKER_STATE_MAX_CONNS": "0"}, "WORKER_STATE_MAX_CONNS"},
		{map[string]string{"WORKER_BREAKER_FAILURES": "-1"}, "WORKER_BREAKER_FAILURES"},
		{map[string]string{"WORKER_BREAKER_FAILURES": "0"}, "WORKER_BREAKER_FAILURES"},
		{map[string]string{"CART_TOMBSTONE_TTL": "500ms"}, "CART_TOMBSTONE_TTL"},
		{map[string]string{"WORKER_MAX_CART_BYTES": "0"}, "WORKER_MAX_CART_BYTES"},
		{map[string]string{"WORKER_MAX_CART_BYTES": "-1"}, "WORKER_MAX_CART_BYTES"},
		{map[string]string{"WORKER_MAX_CART_BYTES": "2MiB"}, "WORKER_MAX_CART_BYTES"},
		{map[string]string{"WORKER_MAX_HELD_BYTES": "0"}, "WORKER_MAX_HELD_BYTES"},
		{map[string]string{"WORKER_MAX_HELD_BYTES": "65536"}, "WORKER_MAX_HELD_BYTES"},
		{map[string]string{"WORKER_MAX_HELD_BYTES": "16MiB"}, "WORKER_MAX_HELD_BYTES"},
		{map[string]string{"CART_STATE_STORE": "a/b"}, "CART_STATE_STORE"},
		{map[string]string{"DAPR_HTTP_PORT": "70000"}, "DAPR_HTTP_PORT"},
		{map[string]string{"WORKER_CONCURRENCY": "5000"}, "WORKER_CONCURRENCY"},
		{map[string]string{"WORKER_PARTITIONS": "0"}, "WORKER_PARTITIONS"},
		{map[string]string{"WORKER_PARTITIONS": "257"}, "WORKER_PARTITIONS"},
		{map[string]string{"WORKER_ACK_WAIT": "500ms"}, "WORKER_ACK_WAIT"},
		{map[string]string{"NATS_STREAM_REPLICAS": "0"}, "NATS_STREAM_REPLICAS"},
		{map[string]string{"NATS_STREAM_REPLICAS": "6"}, "NATS_STREAM_REPLICAS"},
		{map[string]string{"NATS_STREAM_REPLICAS": "three"}, "NATS_STREAM_REPLICAS"},
		{map[string]string{"NATS_MANAGE_STREAMS": "maybe"}, "NATS_MANAGE_STREAMS"},
		{map[string]string{"NATS_CONNECT_TIMEOUT": "0s"}, "NATS_CONNECT_TIMEOUT"},
		{map[string]string{"NATS_CONNECT_TIMEOUT": "soon"}, "NATS_CONNECT_TIMEOUT"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := Load(nil, env(tt.env), &bytes.Buffer{})
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestSecretsNeverShown(t *testing.T) {
	_, err := Load(nil, env(map[string]string{"DAPR_API_TOKEN": "s3cret", "WORKER_CONCURRENCY": "x"}), &bytes.Buffer{})
	require.Error(t, err)

	// One way to authenticate at a time: user and password, then a token.
	var buf bytes.Buffer
	c, err := Load(nil, env(map[string]string{
		"DAPR_API_TOKEN": "s3cret", "NATS_USER": "u", "NATS_PASSWORD": "pw9",
		"NATS_URL": "nats://u:pw9@127.0.0.1:4222",
	}), &bytes.Buffer{})
	require.NoError(t, err)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "config", c)
	require.Contains(t, buf.String(), `"nats_password":"REDACTED"`)
	c, err = Load(nil, env(map[string]string{
		"DAPR_API_TOKEN": "s3cret", "NATS_TOKEN": "t0ken", "NATS_URL": "nats://u:pw9@127.0.0.1:4222",
	}), &bytes.Buffer{})
	require.NoError(t, err)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "config", c)
	for _, s := range []string{"s3cret", "t0ken", "pw9"} {
		require.NotContains(t, buf.String(), s)
	}
	// The keys are stable: operators' log queries use them.
	for _, k := range []string{`"nats_url":"nats://u:xxxxx@127.0.0.1:4222"`, `"nats_token":"REDACTED"`, `"dapr_api_token":"REDACTED"`,
		`"dapr_http_endpoint":"http://127.0.0.1:3500"`, `"state_store":"cartstore"`, `"state_client":"pooled"`, `"concurrency":4`, `"batch_carts":16`} {
		require.Contains(t, buf.String(), k)
	}
}

// The cart size limit binds like every setting, defaults to cartcache's
// default, and reaches cartcache.Config, which the worker builds its carts
// with.
func TestMaxCartBytes(t *testing.T) {
	c, err := Load(nil, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, cartcache.DefaultMaxCartBytes, c.Carts.MaxCartBytes)
	require.Equal(t, 2<<20, c.Carts.MaxCartBytes)

	c, err = Load(nil, env(map[string]string{"WORKER_MAX_CART_BYTES": "1048576"}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 1<<20, c.Carts.MaxCartBytes)

	c, err = Load([]string{"-max-cart-bytes", "3000000"}, env(map[string]string{"WORKER_MAX_CART_BYTES": "1048576"}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 3000000, c.Carts.MaxCartBytes, "flags win over env")
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "config", c)
	require.Contains(t, buf.String(), `"max_cart_bytes":3000000`)

	c.Carts.MaxCartBytes = -5
	require.ErrorContains(t, c.Validate(), "WORKER_MAX_CART_BYTES")
}

func TestStreamAndConnectSettings(t *testing.T) {
	c, err := Load(nil, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 10*time.Second, c.NATS.ConnectTimeout)
	require.Equal(t, 1, c.Consumer.Replicas)
	require.False(t, c.Consumer.ManageStreams, "existing streams are left alone unless asked")

	c, err = Load([]string{"-nats-stream-replicas", "5"}, env(map[string]string{
		"NATS_STREAM_REPLICAS": "3",
		"NATS_MANAGE_STREAMS":  "true",
		"NATS_CONNECT_TIMEOUT": "30s",
	}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 5, c.Consumer.Replicas, "flags win over env")
	require.True(t, c.Consumer.ManageStreams)
	require.Equal(t, 30*time.Second, c.NATS.ConnectTimeout)

	c, err = Load([]string{"-nats-manage-streams"}, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	require.True(t, c.Consumer.ManageStreams)
}

func TestHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	_, err := Load([]string{"-h"}, env(nil), &out)
	require.True(t, errors.Is(err, flag.ErrHelp))
	for _, v := range []string{"NATS_URL", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS", "NATS_CONNECT_TIMEOUT",
		"NATS_NKEY_SEED", "NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY", "-nats-nkey-seed", "-nats-tls-ca", "-nats-tls-cert", "-nats-tls-key",
		"NATS_STREAM_REPLICAS", "NATS_MANAGE_STREAMS", "DAPR_HTTP_ENDPOINT",
		"DAPR_HTTP_PORT", "DAPR_API_TOKEN", "CART_STATE_STORE", "WORKER_CONCURRENCY", "WORKER_HTTP_ADDR",
		"WORKER_SHUTDOWN_TIMEOUT", "CART_SUBJECT_PREFIX", "WORKER_STATE_CLIENT", "default 20s", `default ":8080"`,
		"WORKER_STATE_PROTOCOL", "DAPR_GRPC_ENDPOINT", "DAPR_GRPC_PORT", `default "grpc"`, "default 50001",
		"WORKER_MAX_CART_BYTES", "default 2097152"} {
		require.True(t, strings.Contains(out.String(), v), v)
	}
}

// The TLS and nkey files bind like every setting, are checked when the
// configuration loads, and are logged by path, never by content.
func TestNATSSecuritySettings(t *testing.T) {
	pki := natstest.NewPKI(t, "cfg")
	user := natstest.NewNkey(t)
	c, err := Load([]string{"-nats-tls-key", pki.ClientKey}, env(map[string]string{
		"NATS_TLS_CA":    pki.CA,
		"NATS_TLS_CERT":  pki.ClientCert,
		"NATS_TLS_KEY":   pki.ServerKey, // the flag wins: a mismatched key would fail
		"NATS_NKEY_SEED": user.SeedFile,
	}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, pki.CA, c.NATS.TLSCA)
	require.Equal(t, pki.ClientCert, c.NATS.TLSCert)
	require.Equal(t, pki.ClientKey, c.NATS.TLSKey)
	require.Equal(t, user.SeedFile, c.NATS.NkeySeed)

	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "config", c)
	for _, k := range []string{`"nats_tls_ca":"` + pki.CA + `"`, `"nats_tls_cert":"` + pki.ClientCert + `"`,
		`"nats_tls_key":"` + pki.ClientKey + `"`, `"nats_nkey_seed":"` + user.SeedFile + `"`} {
		require.Contains(t, buf.String(), k)
	}
	require.NotContains(t, buf.String(), user.Seed(t))

	missing := filepath.Join(t.TempDir(), "missing.pem")
	tests := []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"NATS_TLS_CERT": pki.ClientCert}, []string{"NATS_TLS_CERT: NATS_TLS_CERT and NATS_TLS_KEY must be set together"}},
		{map[string]string{"NATS_TLS_CA": missing}, []string{"NATS_TLS_CA: open " + missing}},
		{map[string]string{"NATS_TLS_CERT": pki.ClientCert, "NATS_TLS_KEY": missing}, []string{"NATS_TLS_KEY: open " + missing}},
		{map[string]string{"NATS_NKEY_SEED": missing}, []string{"NATS_NKEY_SEED: open " + missing}},
		{map[string]string{"NATS_NKEY_SEED": pki.CA}, []string{"NATS_NKEY_SEED: " + pki.CA + ": "}},
		{map[string]string{"NATS_NKEY_SEED": user.SeedFile, "NATS_TOKEN": "t0ken", "NATS_CREDS": "/x.creds"},
			[]string{"NATS_TOKEN, NATS_CREDS and NATS_NKEY_SEED are all set: authenticate one way only"}},
	}
	for _, tt := range tests {
		t.Run(tt.want[0], func(t *testing.T) {
			_, err := Load(nil, env(tt.env), &bytes.Buffer{})
			require.Error(t, err)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
			require.NotContains(t, err.Error(), "t0ken")
			require.NotContains(t, err.Error(), user.Seed(t))
		})
	}
}

// The memory setting binds like every setting and defaults to budget's
// default.
func TestMaxHeldBytes(t *testing.T) {
	c, err := Load(nil, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, budget.DefaultTotal, c.MaxHeldBytes)
	require.Equal(t, 16<<20, c.MaxHeldBytes)

	c, err = Load(nil, env(map[string]string{"WORKER_MAX_HELD_BYTES": "33554432"}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 32<<20, c.MaxHeldBytes)
}
