package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/cartworker/cartworker/internal/statepool"
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
	defer d.Close()
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

// daprClient reads Dapr's state API through the worker's own state client.
// One command makes one call, so the pool never holds more than one
// connection; Close releases it.
type daprClient struct {
	*statepool.Client
	store string
}

// newDaprClient returns a client for the -dapr, -dapr-token and -store
// flags; timeout bounds the dial, the wait for Dapr's answer and the whole
// call.
func newDaprClient(o *daprOptions, timeout time.Duration) (*daprClient, error) {
	u, err := url.Parse(o.endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("-dapr %q: want http://host:port", o.endpoint)
	}
	c, err := statepool.New(statepool.Config{
		Protocol:              statepool.ProtocolHTTP,
		Endpoint:              o.endpoint,
		StoreName:             o.store,
		APIToken:              o.token,
		DialTimeout:           timeout,
		ResponseHeaderTimeout: timeout,
		RequestTimeout:        timeout,
	})
	if err != nil {
		return nil, err
	}
	return &daprClient{Client: c, store: o.store}, nil
}

// get returns the document at key, or errCartNotFound.
func (d *daprClient) get(ctx context.Context, key string) ([]byte, error) {
	e, err := d.Get(ctx, key)
	if errors.Is(err, statepool.ErrNotFound) || (err == nil && len(e.Value) == 0) {
		return nil, fmt.Errorf("%w: %s (store %s)", errCartNotFound, key, d.store)
	}
	return e.Value, err
}
