package statepool_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
)

// Client is one implementation of cartcache's Store; statepool cannot
// import cartcache (cartcache builds on statepool's types), so the check
// lives in its tests.
var _ cartcache.Store = (*statepool.Client)(nil)

// recorder collects hook calls.
type recorder struct {
	dials atomic.Int64

	mu    sync.Mutex
	calls []string // "op code"
	took  []time.Duration
}

func (r *recorder) hooks() statepool.Hooks {
	return statepool.Hooks{
		OnDial: func() { r.dials.Add(1) },
		OnRequest: func(op, code string, d time.Duration) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.calls = append(r.calls, op+" "+code)
			r.took = append(r.took, d)
		},
	}
}

func (r *recorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// durations returns how long each reported call took, in order.
func (r *recorder) durations() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.took...)
}

func newFake(t testing.TB, opts ...daprfake.Option) *daprfake.Fake {
	t.Helper()
	f := daprfake.New(opts...)
	t.Cleanup(f.Close)
	return f
}

// newClient builds a Client against f in cfg.Mode over cfg.Protocol,
// closing its pool on cleanup.
func newClient(t testing.TB, f *daprfake.Fake, cfg statepool.Config) *statepool.Client {
	t.Helper()
	cfg.Endpoint = f.URL()
	if cfg.Protocol == "" {
		cfg.Protocol = statepool.ProtocolHTTP // the tests name gRPC when they mean it
	}
	if cfg.Protocol == statepool.ProtocolGRPC {
		cfg.GRPCEndpoint = f.GRPCAddr()
	}
	c, err := statepool.New(cfg)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// eventually polls cond until it holds or the deadline passes; server-side
// connection bookkeeping trails the client by a scheduling hop.
func eventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	require.Eventually(t, cond, 5*time.Second, 5*time.Millisecond, msg)
}
