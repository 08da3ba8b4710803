package natsconn_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/natsconn"
	"github.com/cartworker/cartworker/internal/natsconn/natstest"
	"github.com/cartworker/cartworker/internal/setting"
	"github.com/cartworker/cartworker/internal/testkit"
)

// connectFailsFast connects with a retry window longer than the test's
// bound and requires a failure by Connect itself, naming NATS_URL: a
// failure that was retried would end in the context's error instead.
func connectFailsFast(t *testing.T, srv *server.Server, opts natsconn.Options, logs *testkit.SyncBuffer) error {
	t.Helper()
	opts.URL, opts.ConnectTimeout = srv.ClientURL(), time.Minute
	ctx := testkit.Context(t, bound)
	start := time.Now()
	nc, err := natsconn.Connect(ctx, opts, testLogger(logs))
	require.Nil(t, nc)
	require.Error(t, err)
	require.NoError(t, ctx.Err(), "Connect returned by itself: %v", err)
	require.Less(t, time.Since(start), 5*time.Second, "not retried: %v", err)
	require.Contains(t, err.Error(), "NATS_URL "+srv.ClientURL()+": ")
	require.NotContains(t, logs.String(), "retrying")
	t.Logf("error: %v", err)
	return err
}

func connectOK(t *testing.T, srv *server.Server, opts natsconn.Options) *nats.Conn {
	t.Helper()
	opts.URL, opts.ConnectTimeout = srv.ClientURL(), time.Minute
	var logs testkit.SyncBuffer
	nc, err := natsconn.Connect(testkit.Context(t, bound), opts, testLogger(&logs))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	require.NoError(t, nc.Flush())
	return nc
}

func TestConnectTLS(t *testing.T) {
	pki := natstest.NewPKI(t, "good")
	other := natstest.NewPKI(t, "other")
	srv := testkit.StartJetStream(t, func(o *server.Options) { pki.ServeTLS(t, o, false) })

	t.Run("trusted CA connects", func(t *testing.T) {
		nc := connectOK(t, srv, natsconn.Options{TLSCA: pki.CA})
		state, err := nc.TLSConnectionState()
		require.NoError(t, err)
		require.True(t, state.HandshakeComplete)
	})
	for name, ca := range map[string]string{"no CA": "", "another CA": other.CA} {
		t.Run(name+" fails fast", func(t *testing.T) {
			var logs testkit.SyncBuffer
			err := connectFailsFast(t, srv, natsconn.Options{TLSCA: ca}, &logs)
			require.Contains(t, err.Error(), ": TLS failed (check NATS_TLS_CA")
			require.Contains(t, err.Error(), "tls: failed to verify certificate: x509: certificate signed by unknown authority")
		})
	}
	t.Run("a server without TLS fails fast", func(t *testing.T) {
		plain := testkit.StartJetStream(t)
		var logs testkit.SyncBuffer
		err := connectFailsFast(t, plain, natsconn.Options{TLSCA: pki.CA}, &logs)
		require.ErrorIs(t, err, nats.ErrSecureConnWanted)
		require.Contains(t, err.Error(), "TLS failed")
	})
}

func TestConnectMutualTLS(t *testing.T) {
	pki := natstest.NewPKI(t, "good")
	other := natstest.NewPKI(t, "other")
	srv := testkit.StartJetStream(t, func(o *server.Options) { pki.ServeTLS(t, o, true) })

	t.Run("client certificate connects", func(t *testing.T) {
		connectOK(t, srv, natsconn.Options{TLSCA: pki.CA, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey})
	})
	t.Run("no client certificate fails fast", func(t *testing.T) {
		var logs testkit.SyncBuffer
		err := connectFailsFast(t, srv, natsconn.Options{TLSCA: pki.CA}, &logs)
		require.Contains(t, err.Error(), ": TLS failed (check NATS_TLS_CA, NATS_TLS_CERT/NATS_TLS_KEY")
		// The server's alert, or the connection it closed before the
		// client read the alert: the timing decides which.
		require.Regexp(t, `remote error: tls: certificate required|closed by remote after TLS handshake`, err.Error())
	})
	t.Run("client certificate of another CA fails fast", func(t *testing.T) {
		var logs testkit.SyncBuffer
		err := connectFailsFast(t, srv, natsconn.Options{TLSCA: pki.CA, TLSCert: other.ClientCert, TLSKey: other.ClientKey}, &logs)
		require.Contains(t, err.Error(), ": TLS failed (check NATS_TLS_CA, NATS_TLS_CERT/NATS_TLS_KEY")
		require.Regexp(t, `remote error: tls: |closed by remote after TLS handshake`, err.Error())
	})
}

func TestConnectNkey(t *testing.T) {
	pki := natstest.NewPKI(t, "good")
	user := natstest.NewNkey(t)
	srv := testkit.StartJetStream(t, func(o *server.Options) {
		pki.ServeTLS(t, o, true)
		o.Nkeys = []*server.NkeyUser{{Nkey: user.Public}}
	})
	mtls := natsconn.Options{TLSCA: pki.CA, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey}

	t.Run("listed nkey connects", func(t *testing.T) {
		opts := mtls
		opts.NkeySeed = user.SeedFile
		connectOK(t, srv, opts)
	})
	t.Run("unlisted nkey fails fast", func(t *testing.T) {
		stranger := natstest.NewNkey(t)
		opts := mtls
		opts.NkeySeed = stranger.SeedFile
		var logs testkit.SyncBuffer
		err := connectFailsFast(t, srv, opts, &logs)
		require.ErrorIs(t, err, nats.ErrAuthorization)
		require.Contains(t, err.Error(), ": authorization failed (check NATS_NKEY_SEED): nats: Authorization Violation")
		for _, out := range []string{err.Error(), logs.String()} {
			require.NotContains(t, out, stranger.Seed(t))
			require.NotContains(t, out, user.Seed(t))
		}
	})
	t.Run("no nkey fails fast", func(t *testing.T) {
		var logs testkit.SyncBuffer
		err := connectFailsFast(t, srv, mtls, &logs)
		require.ErrorIs(t, err, nats.ErrAuthorization)
		require.Contains(t, err.Error(), "authorization failed (check NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CREDS or NATS_NKEY_SEED)")
	})
}

// writeFile writes content to a new file in a directory removed with t.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func TestValidateSecurityOptions(t *testing.T) {
	pki := natstest.NewPKI(t, "good")
	user := natstest.NewNkey(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	notPEM := writeFile(t, "not.pem", "SUAsecretlookingbutnotaseed\n")
	tests := []struct {
		name  string
		opts  natsconn.Options
		field string
		want  string
	}{
		{"cert without key", natsconn.Options{TLSCert: pki.ClientCert}, "TLSCert", "NATS_TLS_CERT and NATS_TLS_KEY must be set together"},
		{"key without cert", natsconn.Options{TLSKey: pki.ClientKey}, "TLSCert", "NATS_TLS_CERT and NATS_TLS_KEY must be set together"},
		{"unreadable CA", natsconn.Options{TLSCA: missing}, "TLSCA", "open " + missing + ": no such file or directory"},
		{"CA without certificate", natsconn.Options{TLSCA: notPEM}, "TLSCA", notPEM + ": no PEM certificate in it"},
		{"unreadable cert", natsconn.Options{TLSCert: missing, TLSKey: pki.ClientKey}, "TLSCert", "open " + missing},
		{"unreadable key", natsconn.Options{TLSCert: pki.ClientCert, TLSKey: missing}, "TLSKey", "open " + missing},
		{"key of another cert", natsconn.Options{TLSCert: pki.ClientCert, TLSKey: pki.ServerKey}, "TLSCert", "private key does not match public key"},
		{"unreadable seed", natsconn.Options{NkeySeed: missing}, "NkeySeed", "open " + missing},
		{"not a seed", natsconn.Options{NkeySeed: notPEM}, "NkeySeed", notPEM + ": "},
		{"nkey and token and creds", natsconn.Options{NkeySeed: user.SeedFile, Token: "t0ken", Creds: "/x.creds"}, "Token",
			"NATS_TOKEN, NATS_CREDS and NATS_NKEY_SEED are all set: authenticate one way only"},
		{"user and nkey", natsconn.Options{User: "u", Password: "pw9", NkeySeed: user.SeedFile}, "User",
			"NATS_USER/NATS_PASSWORD and NATS_NKEY_SEED are both set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.URL = "nats://127.0.0.1:4222"
			err := tt.opts.Validate()
			require.Error(t, err)
			var got []string
			rest := setting.Each(err, func(e *setting.Error) {
				if e.Field == tt.field && strings.Contains(e.Problem, tt.want) {
					got = append(got, e.Problem)
				}
				require.NotContains(t, e.Problem, "SUAsecret", "a file's contents are never quoted")
				require.NotContains(t, e.Problem, "t0ken")
				require.NotContains(t, e.Problem, "pw9")
			})
			require.Empty(t, rest)
			require.Len(t, got, 1, "want %s: %q in %v", tt.field, tt.want, err)
		})
	}

	ok := natsconn.Options{URL: "nats://127.0.0.1:4222", NkeySeed: user.SeedFile, TLSCA: pki.CA, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey}
	require.NoError(t, ok.Validate())
}

// Connect refuses options that cannot work before trying the server, and
// names the variables.
func TestConnectInvalidOptionsNameTheVariable(t *testing.T) {
	addr := closedPort(t)
	var logs testkit.SyncBuffer
	opts := natsconn.Options{URL: "nats://" + addr, TLSCert: "/nope/cert.pem", Token: "t0ken", NkeySeed: "/nope/seed", ConnectTimeout: time.Minute}
	nc, err := natsconn.Connect(testkit.Context(t, bound), opts, testLogger(&logs))
	require.Nil(t, nc)
	require.ErrorIs(t, err, natsconn.ErrInvalid)
	msg := err.Error()
	require.Contains(t, msg, "NATS_TLS_CERT: NATS_TLS_CERT and NATS_TLS_KEY must be set together")
	require.Contains(t, msg, "NATS_TOKEN: NATS_TOKEN and NATS_NKEY_SEED are both set")
	require.Contains(t, msg, "NATS_NKEY_SEED: open /nope/seed: no such file or directory")
	require.NotContains(t, msg, "t0ken")
	require.NotContains(t, msg, "not reachable", "no attempt was made")
	require.Empty(t, logs.String())
}
