package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/cartworker/cartworker/bench/loadkit"
	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/statepool"
)

// runCapture builds one cart through the worker exactly as the scenario
// does and saves what the worker stored after each command: the cart with
// 0..20 lines and the tombstone of its delete. The ceiling and the go-sdk
// peer store these, so that their documents are the scenario's, byte for
// byte in size.
func runCapture(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("capture", stderr)
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "NATS URL of a running worker")
	prefix := fs.String("prefix", command.DefaultPrefix, "subject prefix (CART_SUBJECT_PREFIX)")
	dapr := fs.String("dapr", "http://127.0.0.1:3500", "daprd HTTP endpoint the worker uses")
	store := fs.String("store", statepool.DefaultStoreName, "Dapr state store")
	out := fs.String("out", "", "write the documents here (default: stdout)")
	timeout := fs.Duration("timeout", 60*time.Second, "bound on the whole capture")
	synthetic := fs.Bool("synthetic", false, "write loadkit's synthetic documents instead, without a worker")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *synthetic {
		return writeDocs(loadkit.SyntheticDocs(), *out, stdout)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	pub, closePub, err := connectPublisher(ctx, *natsURL, *prefix, 10*time.Second)
	if err != nil {
		return err
	}
	defer closePub()
	client, err := newPoolClient(*dapr, *store, "")
	if err != nil {
		return err
	}
	defer client.Close()

	w := &workerScenario{pub: pub}
	cart := "lg-capture-" + randomID()
	docs := &loadkit.Docs{Source: "captured through the worker (cart " + cart + ")"}
	get := func(key string) (json.RawMessage, error) {
		e, err := client.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("read back %s: %w", key, err)
		}
		return json.RawMessage(e.Value), nil
	}
	for line := 0; line <= loadkit.Lines; line++ {
		typ := loadkit.TypeAddItem
		if line == 0 {
			typ = loadkit.TypeCache
		}
		if err := w.Do(ctx, typ, cart, line); err != nil {
			return fmt.Errorf("capture %s line %d: %w", typ, line, err)
		}
		doc, err := get(cart)
		if err != nil {
			return err
		}
		docs.Carts = append(docs.Carts, doc)
	}
	if err := w.Do(ctx, loadkit.TypeDelete, cart, 0); err != nil {
		return fmt.Errorf("capture delete: %w", err)
	}
	if docs.Tombstone, err = get(cart + ":tombstone"); err != nil {
		return err
	}
	if err := docs.Validate(); err != nil {
		return err
	}
	first, last := docs.Sizes()
	fmt.Fprintf(stderr, "loadgen: captured %d carts (%d..%d bytes) and a %d-byte tombstone\n",
		len(docs.Carts), first, last, len(docs.Tombstone))
	return writeDocs(docs, *out, stdout)
}

func writeDocs(docs *loadkit.Docs, out string, stdout io.Writer) error {
	if out == "" {
		b, err := json.Marshal(docs)
		if err != nil {
			return err
		}
		_, err = stdout.Write(append(b, '\n'))
		return err
	}
	return loadkit.WriteDocs(out, docs)
}
