// Package natsconn opens cartworker's connections to NATS, for the worker
// and for cartctl alike: the same credentials, the same start-up retries,
// the same errors.
//
// Errors name the settings by their environment variables (NATS_URL,
// NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, NATS_NKEY_SEED,
// NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY), which both programs read, and
// never show a credential: URLs go through RedactURL, and files are named
// by their paths, never shown.
package natsconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// retryWait is the pause between connection attempts within
// Options.ConnectTimeout, and between reconnects once connected.
const retryWait = time.Second

// Defaults for Options, for programs that bind them to settings.
const (
	// DefaultURL is a server on this host, where a sidecar or a local
	// nats-server listens.
	DefaultURL = nats.DefaultURL
	// DefaultConnectTimeout leaves a NATS starting next to the worker time
	// to come up, and still reports a wrong NATS_URL well within 15 s.
	DefaultConnectTimeout = 10 * time.Second
)

// Options are the settings of a connection. The zero value but for URL
// connects without credentials, in one attempt.
type Options struct {
	// URL is the server URL, or several separated by commas (NATS_URL). It
	// may carry credentials; they never appear in errors or logs.
	URL string

	// User and Password authenticate with a user name and password
	// (NATS_USER, NATS_PASSWORD). Password is used only with User.
	User     string
	Password string

	// Token authenticates with a token (NATS_TOKEN).
	Token string

	// Creds is the path of a .creds file holding a user JWT and its nkey
	// seed (NATS_CREDS).
	Creds string

	// NkeySeed is the path of a file holding a user nkey seed, "SU…"
	// (NATS_NKEY_SEED). The seed is read when the server asks for a
	// signature and never kept in memory.
	NkeySeed string

	// TLSCA is the path of a PEM bundle of the certificate authorities
	// trusted to sign the server's certificate (NATS_TLS_CA), instead of
	// the system's. Setting it makes the connection use TLS.
	TLSCA string

	// TLSCert and TLSKey are the paths of a PEM client certificate and its
	// private key, for a server that verifies its clients (mutual TLS)
	// (NATS_TLS_CERT, NATS_TLS_KEY). Both or neither. Setting them makes
	// the connection use TLS.
	TLSCert string
	TLSKey  string

	// ConnectTimeout is how long Connect keeps retrying, once a second,
	// while no server is reachable (refused, timed out), so that NATS may
	// start next to the program. Zero or less: one attempt.
	ConnectTimeout time.Duration

	// Name is the connection's name in the server's monitoring, such as
	// "cartworker" or "cartctl".
	Name string
}

// Connect opens a connection to opts.URL and returns once it is made.
//
// The first connection is made here rather than by nats.RetryOnFailedConnect,
// which would hide every start-up failure behind "connection closed" or a
// JetStream timeout a minute later: a refused or timed-out connection is
// retried every second for opts.ConnectTimeout, and then reported with its
// cause; an authorization failure (wrong credentials), a refused or
// untrusted certificate, or a credentials-file problem is reported at once,
// since retrying cannot fix it. ctx ends the attempts early. Once connected,
// the connection reconnects for ever. The TLS and nkey files are read again
// at every connect and reconnect, so that they can be renewed in place.
//
// Options that fail Validate return an error wrapping ErrInvalid before any
// attempt, naming the variables at fault. Other errors begin
// "NATS_URL <url>: ", with credentials redacted. log gets the retries, the
// connection, and later disconnects and reconnects; nil discards them.
func Connect(ctx context.Context, opts Options, log *slog.Logger) (*nats.Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, byVariable(err))
	}
	redacted := RedactURL(opts.URL)
	where := "NATS_URL " + redacted
	dialer := &recordingDialer{d: net.Dialer{Timeout: nats.DefaultTimeout}}
	natsOpts, err := options(opts, log)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	natsOpts = append(natsOpts, nats.SetCustomDialer(dialer))
	deadline := time.Now().Add(opts.ConnectTimeout)
	for attempt := 1; ; attempt++ {
		nc, err := connectOnce(ctx, opts.URL, natsOpts)
		if err == nil {
			log.Info("connected to NATS", "url", connectedURL(nc), "attempts", attempt)
			return nc, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: connecting: %w", where, ctx.Err())
		}
		if errors.Is(err, nats.ErrNoServers) {
			// nats.go reports a refused connection as no servers at all;
			// the dial's own error says what happened.
			if last := dialer.lastErr(); last != nil {
				err = fmt.Errorf("%w: %w", err, last)
			}
		}
		if authFailed(err) {
			return nil, fmt.Errorf("%s: authorization failed (check %s): %w", where, opts.authHint(), err)
		}
		if cause, ok := configError(err); ok {
			return nil, fmt.Errorf("%s: %s: %w", where, cause, err)
		}
		if opts.ConnectTimeout <= 0 {
			return nil, fmt.Errorf("%s: not reachable: %w", where, err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("%s: not reachable after %s: %w", where, opts.ConnectTimeout, err)
		}
		log.Warn("NATS not reachable yet, retrying", "nats_url", redacted, "attempt", attempt, "err", err)
		// The last attempt comes at the deadline, not a second before it.
		t := time.NewTimer(min(retryWait, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%s: connecting: %w", where, ctx.Err())
		case <-t.C:
		}
	}
}

// connectOnce is one nats.Connect that returns as soon as ctx ends; a
// connection made after that is closed.
func connectOnce(ctx context.Context, url string, opts []nats.Option) (*nats.Conn, error) {
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(url, opts...)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		return r.nc, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// authFailed reports whether the server refused the credentials. nats.go
// returns these as the server's -ERR text, which errors.Is matches only for
// "authorization violation", hence the text check.
func authFailed(err error) bool {
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) {
		return true
	}
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "authorization violation") || strings.Contains(s, "authentication")
}

// configError reports failures that come from the program's own settings
// or the server's certificate rather than from the network, so that waiting
// cannot fix them, and what to check. A TLS handshake cut short by the
// network (a reset, a timeout) is not one of them and is retried.
func configError(err error) (string, bool) {
	var pathErr *fs.PathError
	var certErr *tls.CertificateVerificationError
	var unknownAuthority x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalidCert x509.CertificateInvalidError
	var recordErr tls.RecordHeaderError
	var opErr *net.OpError
	switch {
	case errors.As(err, &pathErr):
		return "cannot read a file of NATS_CREDS, NATS_NKEY_SEED or NATS_TLS_*", true
	case errors.Is(err, nats.ErrSecureConnRequired), errors.Is(err, nats.ErrSecureConnWanted),
		errors.As(err, &certErr), errors.As(err, &unknownAuthority), errors.As(err, &hostErr),
		errors.As(err, &invalidCert), errors.As(err, &recordErr),
		// A TLS alert from the server: it refused our certificate, or the
		// lack of one, or the handshake's terms.
		errors.As(err, &opErr) && opErr.Op == "remote error",
		// The same refusal when the connection closed before the alert
		// was read. The server speaks first in plain text and only then
		// starts TLS, so no TLS-terminating proxy sits in between whose
		// backend could be down: it was the server that hung up.
		errors.Is(err, nats.ErrTLS) && strings.Contains(err.Error(), "closed by remote after TLS handshake"):
		return "TLS failed (check NATS_TLS_CA, NATS_TLS_CERT/NATS_TLS_KEY, the URL's scheme and the server's certificate)", true
	}
	return "", false
}

// recordingDialer dials like nats.go's default dialer and remembers the
// last dial error, which nats.go itself drops for a refused connection.
type recordingDialer struct {
	d net.Dialer

	mu   sync.Mutex
	last error
}

// Dial implements nats.CustomDialer.
func (r *recordingDialer) Dial(network, address string) (net.Conn, error) {
	c, err := r.d.Dial(network, address)
	r.mu.Lock()
	r.last = err
	r.mu.Unlock()
	return c, err
}

func (r *recordingDialer) lastErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// connectedURL is the URL of the server nc is connected to, fit for logs:
// nats.go's ConnectedUrlRedacted keeps a token given as the URL's user.
func connectedURL(nc *nats.Conn) string {
	return RedactURL(nc.ConnectedUrlRedacted())
}

// options are the nats.go options of o. They fail only on the nkey seed,
// which nats.go reads here to learn its public key.
func options(o Options, log *slog.Logger) ([]nats.Option, error) {
	opts := []nats.Option{
		// After the first connection, which Connect makes, ride out any
		// outage of NATS.
		nats.MaxReconnects(-1),
		nats.ReconnectWait(retryWait),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			// Our own Close lands here too, without an error; that is not
			// news.
			if err == nil && c.IsClosed() {
				return
			}
			log.Warn("NATS disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("NATS reconnected", "url", connectedURL(c))
		}),
	}
	if o.Name != "" {
		opts = append(opts, nats.Name(o.Name))
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
	}
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.NkeySeed != "" {
		nk, err := nats.NkeyOptionFromSeed(o.NkeySeed)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY_SEED %s: %w", o.NkeySeed, err)
		}
		opts = append(opts, nk)
	}
	// These read their files at every connect, so a renewed certificate is
	// picked up by the next reconnect.
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	return opts, nil
}

// RedactURL returns a URL, or a comma-separated list of them, fit for logs
// and error messages: a password becomes xxxxx, and so does a user given
// without one, because NATS reads nats://secret@host as a token. A part
// that does not parse is kept as it is unless it holds an '@', which may
// precede a secret; then it becomes "<unparsable URL>".
func RedactURL(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			if strings.Contains(p, "@") {
				parts[i] = "<unparsable URL>"
			}
			continue
		}
		if u.User == nil {
			continue
		}
		if _, hasPassword := u.User.Password(); !hasPassword {
			u.User = url.User("xxxxx")
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}
