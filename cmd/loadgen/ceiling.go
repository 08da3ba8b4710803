package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/cartworker/cartworker/bench/loadkit"
	"github.com/cartworker/cartworker/internal/statepool"
)

// poolOps is loadkit.StateOps over the worker's own pooled state client,
// built with the worker's defaults: the ceiling measures the state work of
// the scenario through the same HTTP client, with nothing else around it.
type poolOps struct {
	c     *statepool.Client
	dials atomic.Int64
	calls atomic.Int64
}

func newPoolOps(endpoint, store, token string) (*poolOps, func(), error) {
	p := &poolOps{}
	cfg := statepool.Config{Endpoint: endpoint, StoreName: store, APIToken: token, Mode: statepool.ModePooled}
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	hooks := statepool.Hooks{
		OnDial:    func() { p.dials.Add(1) },
		OnRequest: func(string, string) { p.calls.Add(1) },
	}
	doer, closeDoer := statepool.NewDoer(cfg, hooks)
	c, err := statepool.New(doer, cfg, hooks)
	if err != nil {
		closeDoer()
		return nil, nil, err
	}
	p.c = c
	return p, closeDoer, nil
}

func (p *poolOps) Get(ctx context.Context, key string) (string, bool, error) {
	e, err := p.c.Get(ctx, key)
	if errors.Is(err, statepool.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return e.ETag, true, nil
}

func (p *poolOps) Save(ctx context.Context, key string, value []byte, etag string, ttlSeconds int) error {
	return p.c.Save(ctx, key, value, statepool.SaveOptions{ETag: etag, TTL: time.Duration(ttlSeconds) * time.Second})
}

func (p *poolOps) Delete(ctx context.Context, key, etag string) error {
	return p.c.Delete(ctx, key, etag)
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
	ops, closeOps, err := newPoolOps(*dapr, *store, "")
	if err != nil {
		return err
	}
	defer closeOps()

	run := d.newRun(loadkit.ModeCeiling, cfg)
	run.Client = "internal/statepool pooled HTTP/1.1 client, worker defaults"
	sampler := loadkit.StartSampler(0, time.Second, d.watch)
	run.StartedAt = time.Now().UTC()
	rec, _, end := loadkit.Drive(ctx, &loadkit.Direct{Ops: ops, Docs: docs}, cfg)
	sampler.Stop(run)
	rec.Fill(run, end)
	run.Dials = int64p(ops.dials.Load())
	run.StateCalls = int64p(ops.calls.Load())
	run.DialsTotal = int64p(ops.dials.Load())
	if err := d.write(run, stdout, stderr); err != nil {
		return err
	}
	return ctx.Err()
}
