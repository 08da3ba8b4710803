// Package natstest makes what a secured NATS needs, for tests: a
// certificate authority with a server and a client certificate, and user
// nkeys, all written as files to a test's temporary directory. It is
// imported only from _test.go files.
package natstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"
)

// PKI is a certificate authority and the certificates it signed, as PEM
// files. The server certificate is valid for 127.0.0.1, ::1 and localhost.
type PKI struct {
	// CA is the authority's certificate, what a client sets NATS_TLS_CA to.
	CA string
	// ServerCert and ServerKey are the server's certificate and key.
	ServerCert, ServerKey string
	// ClientCert and ClientKey are a client's certificate and key, for a
	// server that verifies its clients.
	ClientCert, ClientKey string
}

// NewPKI makes a certificate authority named name, a server certificate and
// a client certificate, in a directory removed with the test.
func NewPKI(t testing.TB, name string) *PKI {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name + " test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)

	p := &PKI{CA: filepath.Join(dir, "ca.pem")}
	writePEM(t, p.CA, "CERTIFICATE", caDER)
	leaf := func(role string, usage x509.ExtKeyUsage, tmpl *x509.Certificate) (certFile, keyFile string) {
		key := newKey(t)
		tmpl.SerialNumber = serial(t)
		tmpl.Subject = pkix.Name{CommonName: name + " test " + role}
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		require.NoError(t, err)
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		require.NoError(t, err)
		certFile, keyFile = filepath.Join(dir, role+".pem"), filepath.Join(dir, role+"-key.pem")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "PRIVATE KEY", keyDER)
		return certFile, keyFile
	}
	p.ServerCert, p.ServerKey = leaf("server", x509.ExtKeyUsageServerAuth, &x509.Certificate{
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	})
	p.ClientCert, p.ClientKey = leaf("client", x509.ExtKeyUsageClientAuth, &x509.Certificate{})
	return p
}

// ServeTLS makes o, the options of an embedded nats-server, serve TLS with
// p's server certificate; with verify it also requires a client
// certificate signed by p's authority (mutual TLS).
func (p *PKI) ServeTLS(t testing.TB, o *server.Options, verify bool) {
	t.Helper()
	cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: p.ServerCert, KeyFile: p.ServerKey, CaFile: p.CA, Verify: verify, Timeout: 2,
	})
	require.NoError(t, err)
	o.TLS, o.TLSVerify, o.TLSTimeout, o.TLSConfig = true, verify, 2, cfg
}

// ClientTLS is a client configuration that trusts p's authority and
// presents p's client certificate, for tests that connect with nats.go
// directly.
func (p *PKI) ClientTLS(t testing.TB) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(p.CA)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pem))
	cert, err := tls.LoadX509KeyPair(p.ClientCert, p.ClientKey)
	require.NoError(t, err)
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// Nkey is a user nkey: its public key, which a server lists, and the file
// holding its seed, which a client reads (NATS_NKEY_SEED).
type Nkey struct {
	Public   string
	SeedFile string
}

// NewNkey makes a user nkey and writes its seed to a file only its owner
// may read, in a directory removed with the test.
func NewNkey(t testing.TB) Nkey {
	t.Helper()
	kp, err := nkeys.CreateUser()
	require.NoError(t, err)
	pub, err := kp.PublicKey()
	require.NoError(t, err)
	seed, err := kp.Seed()
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "user.nk")
	require.NoError(t, os.WriteFile(file, append(seed, '\n'), 0o600))
	return Nkey{Public: pub, SeedFile: file}
}

// Seed returns the seed in k's file, for tests that check it is never
// shown.
func (k Nkey) Seed(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(k.SeedFile)
	require.NoError(t, err)
	return string(b[:len(b)-1])
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return k
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	require.NoError(t, err)
	return n
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
}
