package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cartworker/cartworker/internal/config"
)

// natsCloseTimeout bounds the final flush of acks and outcome events.
const natsCloseTimeout = 5 * time.Second

// natsConnectRetryWait is the pause between start-up connection attempts.
const natsConnectRetryWait = time.Second

// closeNATS makes sure the server has read every ack, Nak and outcome event
// before the connection closes, because the process exits right after Run
// returns. nc.Drain would return before its flush has happened, and Close
// alone only writes the buffer to the socket; a PING round trip proves the
// server has processed everything sent before it. With NATS unreachable
// there is nothing left to save, so it only closes.
func closeNATS(nc *nats.Conn, log *slog.Logger) {
	if nc.IsConnected() {
		if err := nc.FlushTimeout(natsCloseTimeout); err != nil {
			log.Warn("last acks may not have reached NATS; they will be redelivered", "err", err)
		}
	}
	nc.Close()
}

// connectNATS makes the worker's one connection to NATS. The first
// connection is made here rather than by nats.RetryOnFailedConnect, which
// would hide every start-up failure behind "connection closed" or a
// JetStream timeout a minute later: a refused or timed-out connection is
// retried every second for cfg.NATSConnectTimeout (NATS may be starting
// next to the worker), and then reported with its cause; an authorization
// failure or a TLS or credentials-file problem is reported at once, since
// retrying cannot fix it. Once connected, the connection reconnects for
// ever. Errors name NATS_URL with its credentials redacted.
func connectNATS(ctx context.Context, cfg config.Config, log *slog.Logger) (*nats.Conn, error) {
	where := "NATS_URL " + cfg.NATSURLRedacted()
	dialer := &recordingDialer{d: net.Dialer{Timeout: nats.DefaultTimeout}}
	opts := append(natsOptions(cfg, log), nats.SetCustomDialer(dialer))
	deadline := time.Now().Add(cfg.NATSConnectTimeout)
	for attempt := 1; ; attempt++ {
		nc, err := connectOnce(ctx, cfg.NATSURL, opts)
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
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("%s: not reachable after %s: %w", where, cfg.NATSConnectTimeout, err)
		}
		log.Warn("NATS not reachable yet, retrying", "nats_url", cfg.NATSURLRedacted(), "attempt", attempt, "err", err)
		// The last attempt comes at the deadline, not a second before it.
		t := time.NewTimer(min(natsConnectRetryWait, left))
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

// authFailed reports whether the server refused the worker's credentials.
// nats.go returns these as the server's -ERR text, which errors.Is matches
// only for "authorization violation", hence the text check.
func authFailed(err error) bool {
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) {
		return true
	}
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "authorization violation") || strings.Contains(s, "authentication")
}

// configError reports failures that come from the worker's own settings
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
	return config.Config{NATSURL: nc.ConnectedUrlRedacted()}.NATSURLRedacted()
}

func natsOptions(cfg config.Config, log *slog.Logger) []nats.Option {
	opts := []nats.Option{
		nats.Name("cartworker"),
		// After the first connection, which connectNATS makes, the worker
		// rides out any outage of NATS.
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			// Our own Close at shutdown lands here too, without an error;
			// that is not news.
			if err == nil && c.IsClosed() {
				return
			}
			log.Warn("NATS disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("NATS reconnected", "url", connectedURL(c))
		}),
	}
	if cfg.NATSUser != "" {
		opts = append(opts, nats.UserInfo(cfg.NATSUser, cfg.NATSPassword))
	}
	if cfg.NATSToken != "" {
		opts = append(opts, nats.Token(cfg.NATSToken))
	}
	if cfg.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	}
	return opts
}
