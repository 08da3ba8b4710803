package main

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/cartworker/cartworker/bench/loadkit"
	"github.com/cartworker/cartworker/internal/statepool"
)

// poolClient is the worker's own pooled state client, built with the
// worker's defaults, counting its dials and calls: the ceiling measures the
// state work of the scenario through the same HTTP client, with nothing
// else around it.
type poolClient struct {
	*statepool.Client
	dials atomic.Int64
	calls atomic.Int64
}

func newPoolClient(endpoint, store, token string) (*poolClient, error) {
	p := &poolClient{}
	c, err := statepool.New(statepool.Config{
		Protocol: statepool.ProtocolHTTP,
		Endpoint: endpoint, StoreName: store, APIToken: token, Mode: statepool.ModePooled,
		Hooks: statepool.Hooks{
			OnDial:    func() { p.dials.Add(1) },
			OnRequest: func(string, string, time.Duration) { p.calls.Add(1) },
		},
	})
	if err != nil {
		return nil, err
	}
	p.Client = c
	return p, nil
}

// loadDocs reads the captured documents, or falls back to synthetic ones.
func loadDocs(path string, stderr io.Writer) (*loadkit.Docs, error) {
	if path == "" {
		fmt.Fprintln(stderr, "loadgen: no -docs file; using synthetic cart documents")
		return loadkit.SyntheticDocs(), nil
	}
	return loadkit.ReadDocs(path)
}

func runCeiling(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ceiling", stderr)
	var d driveFlags
	d.register(fs)
	dapr := fs.String("dapr", "http://127.0.0.1:3500", "daprd HTTP endpoint")
	store := fs.String("store", statepool.DefaultStoreName, "Dapr state store")
	docsPath := fs.String("docs", "", "cart documents from 'loadgen capture' (default: synthetic)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := d.config()
	if err != nil {
		return err
	}
	docs, err := loadDocs(*docsPath, stderr)
	if err != nil {
		return err
	}
	client, err := newPoolClient(*dapr, *store, "")
	if err != nil {
		return err
	}
	defer client.Close()

	run := d.newRun(loadkit.ModeCeiling, cfg)
	run.Client = "internal/statepool pooled HTTP/1.1 client, worker defaults"
	sampler := loadkit.StartSampler(0, time.Second, d.watch)
	run.StartedAt = time.Now().UTC()
	rec, _, end := loadkit.Drive(ctx, &loadkit.Direct{Store: client, Docs: docs}, cfg)
	sampler.Stop(run)
	rec.Fill(run, end)
	run.Dials = int64p(client.dials.Load())
	run.StateCalls = int64p(client.calls.Load())
	run.DialsTotal = int64p(client.dials.Load())
	if err := d.write(run, stdout, stderr); err != nil {
		return err
	}
	return ctx.Err()
}
