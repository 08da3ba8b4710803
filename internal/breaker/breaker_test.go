package breaker_test

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/internal/statetest"
)

// never keeps a tripped breaker open for the whole test.
const never = time.Hour

type transitions struct {
	mu  sync.Mutex
	got []string
}

func (tr *transitions) record(from, to breaker.State) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.got = append(tr.got, from.String()+"->"+to.String())
}

func (tr *transitions) list() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.got...)
}

// newBreaker wraps a statepool client (pooled HTTP unless cfg says
// otherwise) talking to a new fake.
func newBreaker(t *testing.T, cfg statepool.Config, st breaker.Settings) (*breaker.Breaker, *daprfake.Fake) {
	t.Helper()
	f := daprfake.New()
	t.Cleanup(f.Close)
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
	b, err := breaker.New(c, st)
	require.NoError(t, err)
	return b, f
}

func TestStoreContract(t *testing.T) {
	for _, p := range []statepool.Protocol{statepool.ProtocolHTTP, statepool.ProtocolGRPC} {
		t.Run(string(p), func(t *testing.T) {
			statetest.RunStoreContract(t, func(t *testing.T) (statetest.Store, *daprfake.Fake) {
				return newBreaker(t, statepool.Config{Protocol: p}, breaker.Settings{})
			})
		})
	}
}

// bothProtocols runs test against a client over HTTP and over gRPC.
func bothProtocols(t *testing.T, test func(t *testing.T, p statepool.Protocol)) {
	for _, p := range []statepool.Protocol{statepool.ProtocolHTTP, statepool.ProtocolGRPC} {
		t.Run(string(p), func(t *testing.T) { test(t, p) })
	}
}

func TestNewRejects(t *testing.T) {
	_, err := breaker.New(nil, breaker.Settings{})
	require.Error(t, err)

	b, _ := newBreaker(t, statepool.Config{}, breaker.Settings{})
	_, err = breaker.New(b, breaker.Settings{Timeout: -time.Second})
	require.ErrorContains(t, err, "Timeout")
}

func TestTripsAfterConsecutiveServerErrors(t *testing.T) {
	var tr transitions
	b, f := newBreaker(t, statepool.Config{}, breaker.Settings{
		ConsecutiveFailures: 3, Timeout: never, OnStateChange: tr.record,
	})
	ctx := context.Background()
	f.FailWith(http.StatusInternalServerError)

	for i := range 3 {
		require.Equal(t, breaker.StateClosed, b.State(), "call %d", i)
		err := b.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{})
		var se *statepool.StatusError
		require.ErrorAs(t, err, &se, "the store's error must reach the caller")
	}
	require.Equal(t, breaker.StateOpen, b.State())
	require.Equal(t, []string{"closed->open"}, tr.list())

	// Every operation shares the one breaker and is rejected without a call.
	sent := f.Requests(daprfake.OpSave)
	_, err := b.Get(ctx, "k")
	require.ErrorIs(t, err, breaker.ErrOpen)
	require.ErrorIs(t, err, gobreaker.ErrOpenState)
	require.ErrorIs(t, b.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{}), breaker.ErrOpen)
	require.ErrorIs(t, b.Delete(ctx, "k", ""), breaker.ErrOpen)
	require.Equal(t, sent, f.Requests(daprfake.OpSave))
	require.Zero(t, f.Requests(daprfake.OpGet)+f.Requests(daprfake.OpDelete))
}

func TestMixedOperationsShareFailureStreak(t *testing.T) {
	bothProtocols(t, testMixedOperationsShareFailureStreak)
}

func testMixedOperationsShareFailureStreak(t *testing.T, p statepool.Protocol) {
	b, f := newBreaker(t, statepool.Config{Protocol: p}, breaker.Settings{ConsecutiveFailures: 3, Timeout: never})
	ctx := context.Background()
	f.FailWith(http.StatusServiceUnavailable)

	_, err := b.Get(ctx, "k")
	require.Error(t, err)
	require.Error(t, b.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{}))
	require.Error(t, b.Delete(ctx, "k", ""))
	require.Equal(t, breaker.StateOpen, b.State())
}

func TestStaysClosedOnNormalOutcomes(t *testing.T) { bothProtocols(t, testStaysClosedOnNormalOutcomes) }

func testStaysClosedOnNormalOutcomes(t *testing.T, p statepool.Protocol) {
	ctx := context.Background()
	tests := []struct {
		name string
		prep func(f *daprfake.Fake)
		call func(b *breaker.Breaker) error
	}{
		{"204 missing key", nil, func(b *breaker.Breaker) error {
			_, err := b.Get(ctx, "missing")
			return err
		}},
		{"409 stale save", func(f *daprfake.Fake) { f.Put("k", []byte(`{}`)) }, func(b *breaker.Breaker) error {
			return b.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{ETag: "999"})
		}},
		{"409 stale delete", func(f *daprfake.Fake) { f.Put("k", []byte(`{}`)) }, func(b *breaker.Breaker) error {
			return b.Delete(ctx, "k", "999")
		}},
		{"404", func(f *daprfake.Fake) { f.FailWith(http.StatusNotFound) }, func(b *breaker.Breaker) error {
			_, err := b.Get(ctx, "k")
			return err
		}},
		{"400", func(f *daprfake.Fake) { f.FailWith(http.StatusBadRequest) }, func(b *breaker.Breaker) error {
			return b.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, f := newBreaker(t, statepool.Config{Protocol: p}, breaker.Settings{ConsecutiveFailures: 2, Timeout: never})
			if tt.prep != nil {
				tt.prep(f)
			}
			for range 50 {
				require.Error(t, tt.call(b))
			}
			require.Equal(t, breaker.StateClosed, b.State())
		})
	}
}

func TestSuccessResetsStreak(t *testing.T) { bothProtocols(t, testSuccessResetsStreak) }

func testSuccessResetsStreak(t *testing.T, p statepool.Protocol) {
	b, f := newBreaker(t, statepool.Config{Protocol: p}, breaker.Settings{ConsecutiveFailures: 3, Timeout: never})
	ctx := context.Background()

	for range 5 {
		f.FailNext(2, http.StatusInternalServerError)
		for range 2 {
			_, err := b.Get(ctx, "k")
			require.Error(t, err)
		}
		_, err := b.Get(ctx, "k")
		require.ErrorIs(t, err, statepool.ErrNotFound)
	}
	require.Equal(t, breaker.StateClosed, b.State())
}

func TestCallerGivingUpIsNotCounted(t *testing.T) { bothProtocols(t, testCallerGivingUpIsNotCounted) }

func testCallerGivingUpIsNotCounted(t *testing.T, p statepool.Protocol) {
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"already cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}},
		{"cancelled mid-call", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(20*time.Millisecond, cancel)
			return ctx, cancel
		}},
		{"caller deadline mid-call", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, f := newBreaker(t, statepool.Config{Protocol: p}, breaker.Settings{ConsecutiveFailures: 1, Timeout: never})
			f.SetDelay(10 * time.Second)
			for range 3 {
				ctx, cancel := tt.ctx()
				_, err := b.Get(ctx, "k")
				cancel()
				require.Error(t, err)
				require.NotErrorIs(t, err, breaker.ErrOpen)
				require.Equal(t, breaker.StateClosed, b.State())
			}
		})
	}
}

func TestRequestTimeoutIsCounted(t *testing.T) { bothProtocols(t, testRequestTimeoutIsCounted) }

func testRequestTimeoutIsCounted(t *testing.T, p statepool.Protocol) {
	b, f := newBreaker(t, statepool.Config{Protocol: p, RequestTimeout: 20 * time.Millisecond},
		breaker.Settings{ConsecutiveFailures: 2, Timeout: never})
	f.SetDelay(10 * time.Second)

	for range 2 {
		_, err := b.Get(context.Background(), "k")
		require.ErrorIs(t, err, context.DeadlineExceeded)
	}
	require.Equal(t, breaker.StateOpen, b.State())
}

func TestHalfOpenRecovery(t *testing.T) {
	var tr transitions
	b, f := newBreaker(t, statepool.Config{}, breaker.Settings{
		ConsecutiveFailures: 2, Timeout: 50 * time.Millisecond, OnStateChange: tr.record,
	})
	ctx := context.Background()
	waitHalfOpen := func() {
		require.Eventually(t, func() bool { return b.State() == breaker.StateHalfOpen },
			5*time.Second, 5*time.Millisecond)
	}

	f.FailWith(http.StatusServiceUnavailable)
	for range 2 {
		_, err := b.Get(ctx, "k")
		require.Error(t, err)
	}
	require.Equal(t, breaker.StateOpen, b.State())

	// A failed probe reopens.
	waitHalfOpen()
	_, err := b.Get(ctx, "k")
	require.Error(t, err)
	require.Equal(t, breaker.StateOpen, b.State())

	// A successful probe closes.
	f.Heal()
	waitHalfOpen()
	_, err = b.Get(ctx, "k")
	require.ErrorIs(t, err, statepool.ErrNotFound, "a 204 probe is a success")
	require.Equal(t, breaker.StateClosed, b.State())

	require.Equal(t, []string{
		"closed->open", "open->half-open", "half-open->open", "open->half-open", "half-open->closed",
	}, tr.list())
}

func TestHalfOpenAdmitsMaxRequestsProbes(t *testing.T) {
	b, f := newBreaker(t, statepool.Config{}, breaker.Settings{
		ConsecutiveFailures: 1, Timeout: 20 * time.Millisecond, MaxRequests: 1,
	})
	ctx := context.Background()
	f.FailNext(1, http.StatusInternalServerError)
	_, err := b.Get(ctx, "k")
	require.Error(t, err)
	require.Eventually(t, func() bool { return b.State() == breaker.StateHalfOpen },
		5*time.Second, 5*time.Millisecond)

	f.SetDelay(200 * time.Millisecond)
	probe := make(chan error, 1)
	go func() {
		_, err := b.Get(ctx, "k")
		probe <- err
	}()
	require.Eventually(t, func() bool { return f.Requests(daprfake.OpGet) == 2 },
		5*time.Second, time.Millisecond, "probe must reach the store")

	_, err = b.Get(ctx, "k")
	require.ErrorIs(t, err, breaker.ErrOpen)
	require.ErrorIs(t, err, gobreaker.ErrTooManyRequests)

	require.ErrorIs(t, <-probe, statepool.ErrNotFound)
	require.Equal(t, breaker.StateClosed, b.State())
}

func TestCancelledProbeFreesSlot(t *testing.T) {
	b, f := newBreaker(t, statepool.Config{}, breaker.Settings{
		ConsecutiveFailures: 1, Timeout: 20 * time.Millisecond,
	})
	f.FailNext(1, http.StatusInternalServerError)
	_, err := b.Get(context.Background(), "k")
	require.Error(t, err)
	require.Eventually(t, func() bool { return b.State() == breaker.StateHalfOpen },
		5*time.Second, 5*time.Millisecond)

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = b.Get(cancelled, "k")
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, breaker.StateHalfOpen, b.State(), "a cancelled probe decides nothing")

	_, err = b.Get(context.Background(), "k")
	require.ErrorIs(t, err, statepool.ErrNotFound, "the slot must be free for the next probe")
	require.Equal(t, breaker.StateClosed, b.State())
}

func TestFailureThatLeavesBreakerOpenWrapsErrOpen(t *testing.T) {
	b, fake := newBreaker(t, statepool.Config{}, breaker.Settings{ConsecutiveFailures: 2, Timeout: 50 * time.Millisecond})
	fake.FailWith(http.StatusInternalServerError)
	ctx := context.Background()

	_, err := b.Get(ctx, "k")
	require.Error(t, err)
	require.NotErrorIs(t, err, breaker.ErrOpen, "the breaker is still closed after one failure")

	_, err = b.Get(ctx, "k")
	require.ErrorIs(t, err, breaker.ErrOpen, "the failure that trips the breaker is an outage")
	var se *statepool.StatusError
	require.ErrorAs(t, err, &se, "and still carries the store's error")

	require.Eventually(t, func() bool { return b.State() == breaker.StateHalfOpen }, 5*time.Second, 5*time.Millisecond)
	_, err = b.Get(ctx, "k")
	require.ErrorIs(t, err, breaker.ErrOpen, "a failed half-open probe is an outage too")
	require.Equal(t, breaker.StateOpen, b.State())
}

// funcStore is a Store whose every operation runs do with the key.
type funcStore struct {
	do func(key string) error
}

func (s funcStore) Get(_ context.Context, key string) (statepool.Entry, error) {
	return statepool.Entry{}, s.do(key)
}

func (s funcStore) Save(_ context.Context, key string, _ []byte, _ statepool.SaveOptions) error {
	return s.do(key)
}

func (s funcStore) Delete(_ context.Context, key, _ string) error { return s.do(key) }

func (s funcStore) GetBulk(_ context.Context, keys []string) ([]statepool.BulkEntry, error) {
	return nil, s.do(keys[0])
}

func (s funcStore) SaveBulk(_ context.Context, items []statepool.SaveItem) error {
	return s.do(items[0].Key)
}

// inAnotherGoroutine arms a one-shot SetAfterExecute hook on b: after the
// next call returns from gobreaker, and before its error is classified, f
// runs to completion in a goroutine of its own, as a concurrent call might.
// f must report with assert: require cannot stop the test from there.
func inAnotherGoroutine(b *breaker.Breaker, f func()) {
	armed := true
	breaker.SetAfterExecute(b, func() {
		if !armed {
			return
		}
		armed = false
		done := make(chan struct{})
		go func() {
			defer close(done)
			f()
		}()
		<-done
	})
}

// Whether a failed call is reported as ErrOpen must be decided by what the
// call itself did, not by the breaker's state once it returned: by then
// other calls may have moved the breaker on.
func TestOpeningFailureIsDecidedByTheCallItself(t *testing.T) {
	ctx := context.Background()
	errDown := errors.New("store down")

	t.Run("a call that trips the breaker is ErrOpen though another closes it at once", func(t *testing.T) {
		var calls atomic.Int32
		store := funcStore{do: func(string) error {
			if calls.Add(1) == 1 {
				return errDown
			}
			return nil
		}}
		// A 1ns timeout lets the very next call probe the store.
		b, err := breaker.New(store, breaker.Settings{ConsecutiveFailures: 1, Timeout: time.Nanosecond})
		require.NoError(t, err)
		inAnotherGoroutine(b, func() {
			for b.State() != breaker.StateHalfOpen {
				runtime.Gosched()
			}
			_, err := b.Get(ctx, "probe")
			assert.NoError(t, err, "the probe succeeds")
			assert.Equal(t, breaker.StateClosed, b.State(), "the probe closed the breaker")
		})

		err = b.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{})
		require.ErrorIs(t, err, breaker.ErrOpen, "this call tripped the breaker")
		require.ErrorIs(t, err, errDown, "the store's error must reach the caller")
		require.Equal(t, breaker.StateClosed, b.State())
	})

	t.Run("a failure that did not trip the breaker is not ErrOpen though another trips it at once", func(t *testing.T) {
		store := funcStore{do: func(string) error { return errDown }}
		b, err := breaker.New(store, breaker.Settings{ConsecutiveFailures: 2, Timeout: never})
		require.NoError(t, err)
		inAnotherGoroutine(b, func() {
			assert.ErrorIs(t, b.Save(ctx, "other", []byte(`{}`), statepool.SaveOptions{}), breaker.ErrOpen,
				"the second failure in a row trips the breaker")
			assert.Equal(t, breaker.StateOpen, b.State())
		})

		err = b.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{})
		require.ErrorIs(t, err, errDown)
		require.NotErrorIs(t, err, breaker.ErrOpen, "the breaker was closed when this call ended and it did not open it")
		require.Equal(t, breaker.StateOpen, b.State())
	})

	t.Run("a failure in flight when another call trips the breaker is ErrOpen", func(t *testing.T) {
		inFlight, release := make(chan struct{}), make(chan struct{})
		store := funcStore{do: func(key string) error {
			if key == "slow" {
				close(inFlight)
				<-release
			}
			return errDown
		}}
		b, err := breaker.New(store, breaker.Settings{ConsecutiveFailures: 1, Timeout: never})
		require.NoError(t, err)

		slow := make(chan error, 1)
		go func() { slow <- b.Save(ctx, "slow", []byte(`{}`), statepool.SaveOptions{}) }()
		<-inFlight
		require.ErrorIs(t, b.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{}), breaker.ErrOpen)
		close(release)
		err = <-slow
		require.ErrorIs(t, err, breaker.ErrOpen, "the outage was declared while this call waited on the store")
		require.ErrorIs(t, err, errDown)
	})
}
