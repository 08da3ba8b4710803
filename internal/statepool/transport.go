package statepool

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// tcpKeepAlive is the TCP keep-alive probe period for connections to Dapr;
// it only matters for connections idle in the pool.
const tcpKeepAlive = 30 * time.Second

// limitRetry is how often a dial blocked on MaxConns sheds idle connections.
const limitRetry = 10 * time.Millisecond

// Hooks observe the client for metrics. Nil funcs are skipped. Hooks run on
// the calling goroutine and must be fast and safe for concurrent use.
type Hooks struct {
	// OnDial fires after every successful TCP dial to Dapr. It backs
	// cartworker_state_connections_opened_total: with pooling working it
	// stays flat while requests climb.
	OnDial func()

	// OnRequest fires once per state call sent to Dapr with op "get",
	// "save" or "delete" and code set to the HTTP status ("200", "409",
	// ...), or "timeout" or "error" when no complete response arrived.
	// Calls rejected before sending (empty key, invalid JSON) do not fire.
	OnRequest func(op, code string)
}

// Doer sends an HTTP request. *http.Client satisfies it.
type Doer interface {
	Do(req *http.Request) (*http.Response, error)
}

var _ Doer = (*http.Client)(nil)

// NewHTTPClient builds the pooled client for cfg. Build it once per process
// and share it: a client per call defeats the pool. Fields that fail
// Validate fall back to their defaults rather than failing here.
//
// The client has no overall Timeout because Client applies
// Config.RequestTimeout per call through the request context.
func NewHTTPClient(cfg Config, hooks Hooks) *http.Client {
	cfg = cfg.withDefaults()
	return newHTTPClient(cfg, hooks, dialTCP(cfg.DialTimeout))
}

// newHTTPClient takes the raw dial so tests can watch connections close.
func newHTTPClient(cfg Config, hooks Hooks, dial dialFunc) *http.Client {
	d := newLimitDialer(cfg.MaxConns, cfg.DialTimeout, hooks.OnDial, dial)
	tr := newTransport(cfg, d.DialContext)
	tr.MaxIdleConns = cfg.MaxConns
	tr.MaxIdleConnsPerHost = cfg.MaxConnsPerHost
	tr.MaxConnsPerHost = cfg.MaxConnsPerHost
	tr.IdleConnTimeout = cfg.IdleConnTimeout
	// Idle connections hold limiter slots; when the limit is hit for a host
	// that has no idle connection of its own, shedding the idle ones is the
	// only way a slot frees up short of IdleConnTimeout.
	d.closeIdle = tr.CloseIdleConnections
	return &http.Client{Transport: tr}
}

// NewPerRequestDoer returns the ModePerRequest Doer: every Do builds a new
// Transport with keep-alives disabled and closes it once the response body
// is closed. It reproduces upstream's connection-per-call behaviour for
// benchmarks only. MaxConns is not enforced; upstream had no such cap.
func NewPerRequestDoer(cfg Config, hooks Hooks) Doer {
	return &perRequestDoer{cfg: cfg.withDefaults(), onDial: hooks.OnDial}
}

// NewDoer returns the Doer for cfg.Mode and a func that releases its idle
// connections on shutdown.
func NewDoer(cfg Config, hooks Hooks) (Doer, func()) {
	if cfg.Mode == ModePerRequest {
		return NewPerRequestDoer(cfg, hooks), func() {}
	}
	c := NewHTTPClient(cfg, hooks)
	return c, c.CloseIdleConnections
}

// newTransport holds the settings both modes share.
func newTransport(cfg Config, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	return &http.Transport{
		// The sidecar is local; an HTTP(S)_PROXY meant for egress must not
		// capture it.
		Proxy:                 nil,
		DialContext:           dial,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		TLSHandshakeTimeout:   cfg.DialTimeout,
		// Dapr's HTTP API is HTTP/1.1; compression on a loopback link costs
		// CPU and saves nothing.
		ForceAttemptHTTP2:  false,
		DisableCompression: true,
	}
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func dialTCP(timeout time.Duration) dialFunc {
	d := &net.Dialer{Timeout: timeout, KeepAlive: tcpKeepAlive}
	return d.DialContext
}

// limitDialer counts dials and caps concurrently open connections. A slot is
// taken before dialing and given back when the connection is closed, which
// http.Transport does for every connection it retires.
type limitDialer struct {
	sem       chan struct{}
	wait      time.Duration
	onDial    func()
	dial      dialFunc
	closeIdle func()
}

func newLimitDialer(maxConns int, wait time.Duration, onDial func(), dial dialFunc) *limitDialer {
	return &limitDialer{
		sem:    make(chan struct{}, maxConns),
		wait:   wait,
		onDial: onDial,
		dial:   dial,
	}
}

// DialContext implements http.Transport.DialContext.
func (d *limitDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.wait)
	defer cancel()

	if err := d.acquire(ctx); err != nil {
		return nil, err
	}
	conn, err := d.dial(ctx, network, addr)
	if err != nil {
		d.release()
		return nil, err
	}
	if d.onDial != nil {
		d.onDial()
	}
	return &limitedConn{Conn: conn, release: d.release}, nil
}

func (d *limitDialer) acquire(ctx context.Context) error {
	select {
	case d.sem <- struct{}{}:
		return nil
	default:
	}
	// Every slot is held. Connections idle in the pool hold slots too and
	// are only returned after IdleConnTimeout, so keep shedding them while
	// waiting: a busy connection that finishes goes idle, not closed. A
	// single sidecar host never gets here, because MaxConnsPerHost <=
	// MaxConns lets the transport reuse its own idle connections first.
	tick := time.NewTicker(limitRetry)
	defer tick.Stop()
	for {
		if d.closeIdle != nil {
			d.closeIdle()
		}
		select {
		case d.sem <- struct{}{}:
			return nil
		case <-tick.C:
		case <-ctx.Done():
			return &net.OpError{
				Op:  "dial",
				Net: "tcp",
				Err: fmt.Errorf("statepool: all %d connections busy: %w", cap(d.sem), ctx.Err()),
			}
		}
	}
}

func (d *limitDialer) release() { <-d.sem }

// limitedConn gives its limiter slot back exactly once, however often Close
// is called.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// perRequestDoer is the ModePerRequest Doer.
type perRequestDoer struct {
	cfg    Config
	onDial func()
}

func (p *perRequestDoer) Do(req *http.Request) (*http.Response, error) {
	dial := dialTCP(p.cfg.DialTimeout)
	tr := newTransport(p.cfg, func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err == nil && p.onDial != nil {
			p.onDial()
		}
		return conn, err
	})
	tr.DisableKeepAlives = true
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		tr.CloseIdleConnections()
		return nil, err
	}
	resp.Body = &closeHookBody{ReadCloser: resp.Body, hook: tr.CloseIdleConnections}
	return resp, nil
}

// closeHookBody runs hook after the body is closed, so the throwaway
// transport is torn down only once the caller is done reading.
type closeHookBody struct {
	io.ReadCloser
	hook func()
}

func (b *closeHookBody) Close() error {
	err := b.ReadCloser.Close()
	b.hook()
	return err
}
