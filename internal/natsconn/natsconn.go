// Package natsconn opens cartworker's connections to NATS, for the worker
// and for cartctl alike: the same credentials, the same start-up retries,
// the same errors.
//
// Errors name the settings by their environment variables (NATS_URL,
// NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CREDS), which both programs
// read, and never show a credential: URLs go through RedactURL.
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

	"github.com/cartworker/cartworker/internal/setting"
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

// Validate reports the options that cannot work, each as a *setting.Error
// naming its field.
func (o Options) Validate() error {
	var errs []error
	for _, u := range strings.Split(o.URL, ",") {
		if pu, err := url.Parse(strings.TrimSpace(u)); err != nil || pu.Host == "" {
			errs = append(errs, setting.Errorf("URL", "%q is not a URL like nats://host:4222", RedactURL(u)))
		}
	}
	if (o.User == "") != (o.Password == "") {
		errs = append(errs, setting.Errorf("User", "NATS_USER and NATS_PASSWORD must be set together"))
	}
	return errors.Join(errs...)
}

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
// cause; an authorization failure or a TLS or credentials-file problem is
// reported at once, since retrying cannot fix it. ctx ends the attempts
// early. Once connected, the connection reconnects for ever.
//
// Errors begin "NATS_URL <url>: ", with credentials redacted. log gets the
// retries, the connection, and later disconnects and reconnects; nil
// discards them.
func Connect(ctx context.Context, opts Options, log *slog.Logger) (*nats.Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	redacted := RedactURL(opts.URL)
	where := "NATS_URL " + redacted
	dialer := &recordingDialer{d: net.Dialer{Timeout: nats.DefaultTimeout}}
	natsOpts := append(options(opts, log), nats.SetCustomDialer(dialer))
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
			return nil, fmt.Errorf("%s: authorization failed (check NATS_USER/NATS_PASSWORD, NATS_TOKEN or NATS_CREDS): %w", where, err)
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
// rather than from the network, so that waiting cannot fix them, and what
// to check.
func configError(err error) (string, bool) {
	var pathErr *fs.PathError
	var certErr *tls.CertificateVerificationError
	var unknownAuthority x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	switch {
	case errors.As(err, &pathErr):
		return "cannot read NATS_CREDS", true
	case errors.Is(err, nats.ErrSecureConnRequired), errors.Is(err, nats.ErrSecureConnWanted),
		errors.As(err, &certErr), errors.As(err, &unknownAuthority), errors.As(err, &hostErr):
		return "TLS setup failed (check the URL's scheme and the server's certificate)", true
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

func options(o Options, log *slog.Logger) []nats.Option {
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
	return opts
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
