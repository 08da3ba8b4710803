package main

import (
	"bytes"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/natsconn/natstest"
)

// cartctl reaches a NATS that wants mutual TLS and an nkey with the
// worker's settings, from the environment or from the mirrored flags, and
// fails at once, saying why, without them.
func TestNATSTLSAndNkey(t *testing.T) {
	pki := natstest.NewPKI(t, "cartctl")
	user := natstest.NewNkey(t)
	e := newEnvWith(t, func(o *server.Options) {
		pki.ServeTLS(t, o, true)
		o.Nkeys = []*server.NkeyUser{{Nkey: user.Public}}
	}, []nats.Option{nats.Secure(pki.ClientTLS(t)), mustNkey(t, user.SeedFile)})

	e.vars["NATS_TLS_CA"] = pki.CA
	e.vars["NATS_TLS_CERT"] = pki.ClientCert
	e.vars["NATS_TLS_KEY"] = pki.ClientKey
	e.vars["NATS_NKEY_SEED"] = user.SeedFile
	r := e.run(t, "delete", "-cart", "c-1", "-id", "del-env", "-wait=false")
	require.NoError(t, r.err, r.stderr)
	require.Contains(t, r.stdout, `"command_id": "del-env"`)

	// The flags alone, and the flags winning over a wrong environment.
	for _, k := range []string{"NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY", "NATS_NKEY_SEED"} {
		delete(e.vars, k)
	}
	flags := []string{"-nats-tls-ca", pki.CA, "-nats-tls-cert", pki.ClientCert, "-nats-tls-key", pki.ClientKey, "-nats-nkey-seed", user.SeedFile}
	r = e.run(t, append([]string{"delete", "-cart", "c-1", "-id", "del-flags", "-wait=false"}, flags...)...)
	require.NoError(t, r.err, r.stderr)
	e.vars["NATS_NKEY_SEED"] = natstest.NewNkey(t).SeedFile
	r = e.run(t, append([]string{"dlq", "list"}, flags...)...)
	require.NoError(t, r.err, r.stderr)
	require.Contains(t, r.stderr, "CART_DLQ is empty")
	require.Equal(t, uint64(2), e.streamState(t, command.StreamCommands).Msgs)

	// Without the client certificate, and with an nkey the server does not
	// list: one attempt, an error naming NATS_URL and the cause, and no
	// secret.
	r = e.run(t, "dlq", "list", "-nats-tls-ca", pki.CA, "-nats-nkey-seed", user.SeedFile)
	require.Error(t, r.err)
	require.Contains(t, r.err.Error(), "NATS_URL "+e.srv.ClientURL()+": TLS failed")
	require.Equal(t, 1, exitCode(r.err, &bytes.Buffer{}))
	r = e.run(t, "dlq", "list", "-nats-tls-ca", pki.CA, "-nats-tls-cert", pki.ClientCert, "-nats-tls-key", pki.ClientKey)
	require.Error(t, r.err)
	require.Contains(t, r.err.Error(), "NATS_URL "+e.srv.ClientURL()+": authorization failed (check NATS_NKEY_SEED)")
	for _, out := range []string{r.err.Error(), r.stdout, r.stderr} {
		require.NotContains(t, out, user.Seed(t))
	}

	// Two ways to authenticate at once is a usage error naming both.
	e.vars["NATS_TOKEN"] = "t0ken"
	r = e.run(t, "watch", "-count", "1", "-nats-tls-ca", pki.CA)
	var uerr *usageError
	require.ErrorAs(t, r.err, &uerr)
	require.Contains(t, r.err.Error(), "NATS_TOKEN and NATS_NKEY_SEED are both set")
	require.NotContains(t, r.err.Error(), "t0ken")
}

func mustNkey(t *testing.T, seedFile string) nats.Option {
	t.Helper()
	o, err := nats.NkeyOptionFromSeed(seedFile)
	require.NoError(t, err)
	return o
}
