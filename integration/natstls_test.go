//go:build integration

package integration

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"

	"github.com/cartworker/cartworker/cartworkertest"
	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/natsconn/natstest"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// natsTLSConf is the server's configuration: TLS with a client certificate
// required (verify), and one nkey user, %s.
const natsTLSConf = `listen: 0.0.0.0:4222
jetstream { store_dir: /data }
tls {
  cert_file: /etc/nats/tls/server.pem
  key_file: /etc/nats/tls/server-key.pem
  ca_file: /etc/nats/tls/ca.pem
  verify: true
  timeout: 2
}
authorization { users: [ { nkey: %s } ] }
`

// TestNATSTLSWorker runs the worker binary against the NATS image serving
// mutual TLS with certificates made here, and accepting one nkey user.
// With the CA, the client certificate and the nkey seed the worker applies
// a command end to end; with a certificate it cannot trust, without a
// client certificate, or with an nkey the server does not know, it exits
// within 15s with an error naming NATS_URL and the cause, and never shows
// the seed.
func TestNATSTLSWorker(t *testing.T) {
	ctx := testkit.Context(t, 4*time.Minute)
	pki := natstest.NewPKI(t, "natstls")
	user := natstest.NewNkey(t)
	conf := filepath.Join(t.TempDir(), "nats.conf")
	require.NoError(t, os.WriteFile(conf, fmt.Appendf(nil, natsTLSConf, user.Public), 0o644))

	// A stack of its own whose NATS is run from that configuration; the
	// stack's own connection (which Run waits on) and the test's use the
	// client certificate and the nkey.
	nkey, err := nats.NkeyOptionFromSeed(user.SeedFile)
	require.NoError(t, err)
	file := func(host, ctr string) testcontainers.ContainerFile {
		return testcontainers.ContainerFile{HostFilePath: host, ContainerFilePath: ctr, FileMode: 0o644}
	}
	natsTLS := newTestStack(t,
		cartworkertest.WithNATS(
			testcontainers.WithCmd("-c", "/etc/nats/nats.conf"),
			testcontainers.WithFiles(
				file(conf, "/etc/nats/nats.conf"),
				file(pki.CA, "/etc/nats/tls/ca.pem"),
				file(pki.ServerCert, "/etc/nats/tls/server.pem"),
				file(pki.ServerKey, "/etc/nats/tls/server-key.pem"),
			)),
		cartworkertest.WithNATSOptions(nats.Secure(pki.ClientTLS(t)), nkey))
	secure := map[string]string{
		"NATS_TLS_CA":    pki.CA,
		"NATS_TLS_CERT":  pki.ClientCert,
		"NATS_TLS_KEY":   pki.ClientKey,
		"NATS_NKEY_SEED": user.SeedFile,
	}
	with := func(changes map[string]string) map[string]string {
		env := natsTLS.WorkerEnv()
		env["WORKER_HTTP_ADDR"] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		maps.Copy(env, secure)
		maps.Copy(env, changes) // "" unsets: runUntilExit and startProcess skip empty values
		return env
	}

	t.Run("mutual TLS and nkey", func(t *testing.T) {
		b := connectBus(ctx, t, natsTLS.NATSURL(), nats.Secure(pki.ClientTLS(t)), nkey)
		w := startProcess(t, natsTLS, "natstls", secure)
		b.waitConsumer(ctx, t)

		cart := newCartIDs("tls", 1)[0]
		cacheIDs := cacheCarts(ctx, t, b, []string{cart})
		ev, err := b.pub.PublishAndWait(ctx, publisher.AddItemCommand(cart,
			command.Item{ItemCode: "TLS", Quantity: 2, UnitPrice: money.FromInt(120), TaxCode: "01"}))
		require.NoError(t, err)
		require.Equal(t, command.OutcomeApplied, ev.Outcome)
		d := readCart(ctx, t, natsTLS, cart)
		require.Len(t, d.LineItems, 1)
		require.Equal(t, money.FromInt(264), d.Sales.TotalAmountWithTax)
		require.Equal(t, []string{cacheIDs[cart], ev.CommandID}, d.AppliedCommandIDs)

		w.signal(t, syscall.SIGTERM)
		code, _ := w.waitExit(t, 30*time.Second)
		require.Zero(t, code)
		logs := w.logs.String()
		require.Contains(t, logs, "config.nats_tls_ca="+pki.CA, "the configuration is logged with file paths")
		require.Contains(t, logs, "config.nats_nkey_seed="+user.SeedFile)
		require.NotContains(t, logs, user.Seed(t))
	})

	other := natstest.NewPKI(t, "untrusted")
	stranger := natstest.NewNkey(t)
	for _, tt := range []struct {
		name    string
		changes map[string]string
		want    []string
	}{
		{"untrusted server certificate", map[string]string{"NATS_TLS_CA": other.CA},
			[]string{": TLS failed (check NATS_TLS_CA", "tls: failed to verify certificate: x509: certificate signed by unknown authority"}},
		{"no CA: the system's roots do not trust it", map[string]string{"NATS_TLS_CA": ""},
			[]string{": TLS failed", "x509: certificate signed by unknown authority"}},
		{"no client certificate", map[string]string{"NATS_TLS_CERT": "", "NATS_TLS_KEY": ""},
			[]string{": TLS failed (check NATS_TLS_CA, NATS_TLS_CERT/NATS_TLS_KEY"}},
		{"client certificate of another CA", map[string]string{"NATS_TLS_CERT": other.ClientCert, "NATS_TLS_KEY": other.ClientKey},
			[]string{": TLS failed (check NATS_TLS_CA, NATS_TLS_CERT/NATS_TLS_KEY"}},
		{"unknown nkey", map[string]string{"NATS_NKEY_SEED": stranger.SeedFile},
			[]string{": authorization failed (check NATS_NKEY_SEED): nats: Authorization Violation"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out := runUntilExit(t, with(tt.changes), clearWithin)
			require.Contains(t, out, "cartworker: connect to NATS: NATS_URL "+natsTLS.NATSURL()+": ")
			for _, w := range tt.want {
				require.Contains(t, out, w)
			}
			require.NotContains(t, out, "retrying", "a refused certificate or key is not retried")
			require.NotContains(t, out, user.Seed(t))
			require.NotContains(t, out, stranger.Seed(t))
		})
	}
}
