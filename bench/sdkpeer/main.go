// Command sdkpeer is the benchmark's "peer": the scenario's state calls
// (see loadkit.Direct) sent to daprd through the official Dapr Go SDK over
// gRPC, so that the worker's pooled HTTP client can be compared with it on
// the same work, at the same concurrency, against the same daprd and Redis.
//
// It lives in its own module so that cartworker never depends on
// github.com/dapr/go-sdk; it shares the scenario driver and the run format
// with bench/loadgen through bench/loadkit (a replace directive points at the
// main module). scripts/bench.sh builds and runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cartworker/cartworker/bench/loadkit"
	"github.com/cartworker/cartworker/internal/statepool"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	interrupted := ctx.Err() != nil
	stop()
	if interrupted {
		fmt.Fprintln(os.Stderr, "sdkpeer: interrupted")
		os.Exit(130)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "sdkpeer:", err)
		os.Exit(1)
	}
}

// sdkStore is the single-key calls of the worker's state-store contract
// over the go-sdk client; statepool.OneByOne makes it a cartcache.Store.
type sdkStore struct {
	c     dapr.Client
	store string
	calls atomic.Int64
}

var _ statepool.Single = (*sdkStore)(nil)

// Get implements statepool.Single: a missing key is statepool.ErrNotFound.
func (o *sdkStore) Get(ctx context.Context, key string) (statepool.Entry, error) {
	o.calls.Add(1)
	item, err := o.c.GetState(ctx, o.store, key, nil)
	if err != nil {
		return statepool.Entry{}, err
	}
	// A missing key comes back as an empty item.
	if item == nil || (len(item.Value) == 0 && item.Etag == "") {
		return statepool.Entry{}, statepool.ErrNotFound
	}
	return statepool.Entry{Value: item.Value, ETag: item.Etag}, nil
}

// Save implements statepool.Single, guarded by the ETag when opts has one.
func (o *sdkStore) Save(ctx context.Context, key string, value []byte, opts statepool.SaveOptions) error {
	o.calls.Add(1)
	var meta map[string]string
	if opts.TTL > 0 {
		// Dapr counts whole seconds: round up, as the worker's client does.
		secs := int64((opts.TTL + time.Second - 1) / time.Second)
		meta = map[string]string{"ttlInSeconds": strconv.FormatInt(secs, 10)}
	}
	if opts.ETag != "" {
		return o.c.SaveStateWithETag(ctx, o.store, key, value, opts.ETag, meta, dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite))
	}
	return o.c.SaveState(ctx, o.store, key, value, meta)
}

// Delete implements statepool.Single, guarded by etag when it is not "";
// a key already gone is no error.
func (o *sdkStore) Delete(ctx context.Context, key, etag string) error {
	o.calls.Add(1)
	if etag == "" {
		return o.c.DeleteState(ctx, o.store, key, nil)
	}
	err := o.c.DeleteStateWithETag(ctx, o.store, key, &dapr.ETag{Value: etag}, nil,
		&dapr.StateOptions{Concurrency: dapr.StateConcurrencyFirstWrite})
	if status.Code(errors.Unwrap(err)) == codes.NotFound {
		return nil
	}
	return err
}

// dialSDK connects the go-sdk client to addr and counts the TCP
// connections it opens.
func dialSDK(ctx context.Context, addr string) (dapr.Client, *atomic.Int64, error) {
	// The SDK logs its start-up on stdout; keep it quiet.
	dapr.SetLogger(nil)
	dials := &atomic.Int64{}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := dapr.NewClientWithAddressContext(cctx, addr, grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
		conn, err := dialer.DialContext(ctx, "tcp", a)
		if err == nil {
			dials.Add(1)
		}
		return conn, err
	}))
	if err != nil {
		return nil, nil, fmt.Errorf("go-sdk client for %s: %w", addr, err)
	}
	return c, dials, nil
}

// run drives the scenario through the go-sdk and writes the run.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("sdkpeer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("grpc", "127.0.0.1:50001", "daprd gRPC API address")
	store := fs.String("store", "cartstore", "Dapr state store")
	docsPath := fs.String("docs", "", "cart documents from 'loadgen capture' (default: synthetic)")
	users := fs.Int("users", 1, "concurrent users")
	scenario := fs.String("scenario", loadkit.ScenarioClosed, "paced or closed-loop")
	warmup := fs.Duration("warmup", 2*time.Second, "warm-up, not counted")
	duration := fs.Duration("duration", 8*time.Second, "measured window")
	think := fs.Duration("think", 100*time.Millisecond, "think time in the paced scenario")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on each command")
	round := fs.Int("round", 1, "round number, recorded in the run")
	saturation := fs.Bool("saturation", false, "mark the run as the saturation point")
	out := fs.String("out", "", "write the run as JSON here (required)")
	watch := loadkit.PIDs{}
	fs.Var(watch, "watch", "name=pid of a process whose CPU time to measure (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("-out is required")
	}
	th := *think
	switch *scenario {
	case loadkit.ScenarioClosed:
		th = 0
	case loadkit.ScenarioPaced:
	default:
		return fmt.Errorf("-scenario %q: want paced or closed-loop", *scenario)
	}
	cfg := loadkit.DriveConfig{
		Users: *users, Warmup: *warmup, Duration: *duration, Think: th, Timeout: *timeout,
		CartPrefix: fmt.Sprintf("sdk-%x", time.Now().UnixNano()&0xffffffff),
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	docs := loadkit.SyntheticDocs()
	if *docsPath != "" {
		var err error
		if docs, err = loadkit.ReadDocs(*docsPath); err != nil {
			return err
		}
	}

	c, dials, err := dialSDK(ctx, *addr)
	if err != nil {
		return err
	}
	defer c.Close()
	st := &sdkStore{c: c, store: *store}

	r := &loadkit.Run{
		Mode: loadkit.ModeGoSDK, Scenario: *scenario, Users: *users, Round: *round, Saturation: *saturation,
		ThinkMS: float64(th) / float64(time.Millisecond), WarmupS: warmup.Seconds(), DurationS: duration.Seconds(),
		Client: "github.com/dapr/go-sdk " + sdkVersion() + " (gRPC, one client)",
	}
	sampler := loadkit.StartSampler(0, time.Second, watch)
	r.StartedAt = time.Now().UTC()
	rec, _, end := loadkit.Drive(ctx, &loadkit.Direct{Store: statepool.OneByOne{Single: st}, Docs: docs}, cfg)
	sampler.Stop(r)
	rec.Fill(r, end)
	d, calls := dials.Load(), st.calls.Load()
	r.Dials, r.StateCalls, r.DialsTotal = &d, &calls, &d
	if err := r.WriteFile(*out); err != nil {
		return err
	}
	fmt.Fprintln(stderr, r.Summary())
	return ctx.Err()
}

// sdkVersion is the go-sdk version compiled in.
func sdkVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/dapr/go-sdk" {
				return m.Version
			}
		}
	}
	return "(unknown version)"
}
