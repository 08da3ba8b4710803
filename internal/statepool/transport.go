package statepool

import (
	"context"
	"io"
	"net"
	"net/http"
	"time"
)

// tcpKeepAlive is the TCP keep-alive probe period for connections to Dapr;
// it only matters for connections idle in the pool.
const tcpKeepAlive = 30 * time.Second

// doer sends an HTTP request: the pooled *http.Client, or perRequestDoer.
type doer interface {
	Do(req *http.Request) (*http.Response, error)
}

var (
	_ doer = (*http.Client)(nil)
	_ doer = (*perRequestDoer)(nil)
)

// newDoer returns the doer for cfg.Mode, which must be set (withDefaults),
// and the func that releases its idle connections.
//
// The pooled client has no overall Timeout because Client applies
// Config.RequestTimeout per call through the request context. Its one host
// is the sidecar, so the transport's per-host limits bound every
// connection it opens.
func newDoer(cfg Config) (doer, func()) {
	dial := countDials(dialTCP(cfg.DialTimeout), cfg.Hooks.OnDial)
	if cfg.Mode == ModePerRequest {
		return &perRequestDoer{cfg: cfg, dial: dial}, func() {}
	}
	tr := newTransport(cfg, dial)
	tr.MaxIdleConns = cfg.MaxConns
	tr.MaxIdleConnsPerHost = cfg.MaxConns
	tr.MaxConnsPerHost = cfg.MaxConns
	tr.IdleConnTimeout = cfg.IdleConnTimeout
	return &http.Client{Transport: tr}, tr.CloseIdleConnections
}

// newTransport holds the settings both modes share.
func newTransport(cfg Config, dial dialFunc) *http.Transport {
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

// countDials calls onDial, when set, after every successful dial.
func countDials(dial dialFunc, onDial func()) dialFunc {
	if onDial == nil {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err == nil {
			onDial()
		}
		return conn, err
	}
}

// perRequestDoer is the ModePerRequest doer: every Do builds a new
// Transport with keep-alives disabled and closes it once the response body
// is closed. It reproduces upstream's connection-per-call behaviour for
// benchmarks only; MaxConns is not enforced, as upstream had no such cap.
type perRequestDoer struct {
	cfg  Config
	dial dialFunc
}

func (p *perRequestDoer) Do(req *http.Request) (*http.Response, error) {
	tr := newTransport(p.cfg, p.dial)
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
