package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// errCartNotFound is what Dapr's 204 No Content means for a cart.
var errCartNotFound = errors.New("cart not found")

func runGet(ctx context.Context, c *cli, args []string) error {
	f := c.newFlagSet("get", "-cart id [flags]",
		"Reads a cart from the Dapr state store (GET <dapr>/v1.0/state/<store>/<cart>) and\n"+
			"prints it as indented JSON. Any state key works, e.g. c-1:tombstone.")
	var cartID string
	f.fs.StringVar(&cartID, "cart", "", "cart `id` (required)")
	do := f.daprFlags()
	timeout := f.timeoutFlag("how long to wait for Dapr")
	f.require("cart")
	if help, err := f.parse(args); help || err != nil {
		return err
	}
	d, err := newDaprClient(do, *timeout)
	if err != nil {
		return f.usageErr(err)
	}
	defer d.close()
	doc, err := d.get(ctx, cartID)
	if err != nil {
		return err
	}
	return writeDocument(c.stdout, doc)
}

// writeDocument prints a stored document indented, or as it is if it is not
// JSON: the point of get is to show what is there.
func writeDocument(w io.Writer, doc []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, doc, "", "  "); err != nil {
		buf.Reset()
		buf.Write(doc)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// daprClient reads Dapr's state API. It is deliberately plain: one request
// per command needs no pool, breaker or retry.
type daprClient struct {
	http     *http.Client
	endpoint string
	store    string
	token    string
}

func newDaprClient(o *daprOptions, timeout time.Duration) (*daprClient, error) {
	u, err := url.Parse(o.endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("-dapr %q: want http://host:port", o.endpoint)
	}
	tr := &http.Transport{
		// The sidecar is local: a proxy meant for egress must not capture it.
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: timeout}).DialContext,
		ResponseHeaderTimeout: timeout,
		IdleConnTimeout:       30 * time.Second,
	}
	return &daprClient{
		http:     &http.Client{Transport: tr, Timeout: timeout},
		endpoint: strings.TrimRight(o.endpoint, "/"),
		store:    o.store,
		token:    o.token,
	}, nil
}

// close releases idle connections, so nothing outlives the command.
func (d *daprClient) close() { d.http.CloseIdleConnections() }

// stateURL is where key lives; it holds no secret and can be printed.
func (d *daprClient) stateURL(key string) string {
	return d.endpoint + "/v1.0/state/" + url.PathEscape(d.store) + "/" + url.PathEscape(key)
}

// get returns the document at key, or errCartNotFound.
func (d *daprClient) get(ctx context.Context, key string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.stateURL(key), nil)
	if err != nil {
		return nil, fmt.Errorf("dapr: %w", err)
	}
	if d.token != "" {
		req.Header.Set("dapr-api-token", d.token)
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("dapr: get %s: %w", key, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("dapr: get %s: read body: %w", key, err)
	}
	switch {
	case resp.StatusCode == http.StatusNoContent, resp.StatusCode == http.StatusNotFound,
		resp.StatusCode == http.StatusOK && len(body) == 0:
		return nil, fmt.Errorf("%w: %s (store %s)", errCartNotFound, key, d.store)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("dapr: get %s: %s: %s", key, resp.Status, excerpt(body, 256))
	}
	return body, nil
}

// excerpt shortens an error body for a one-line message.
func excerpt(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}
