package statepool_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/internal/statetest"
)

func TestStoreContract(t *testing.T) {
	for name, cfg := range map[string]statepool.Config{
		"pooled":      {Mode: statepool.ModePooled},
		"per-request": {Mode: statepool.ModePerRequest},
		"grpc":        {Protocol: statepool.ProtocolGRPC},
	} {
		t.Run(name, func(t *testing.T) {
			statetest.RunStoreContract(t, func(t *testing.T) (statetest.Store, *daprfake.Fake) {
				f := newFake(t)
				return newClient(t, f, cfg), f
			})
		})
	}
}

// protocols runs test over HTTP (pooled) and gRPC.
func protocols(t *testing.T, test func(t *testing.T, p statepool.Protocol)) {
	for _, p := range []statepool.Protocol{statepool.ProtocolHTTP, statepool.ProtocolGRPC} {
		t.Run(string(p), func(t *testing.T) { test(t, p) })
	}
}

func TestNewRejects(t *testing.T) {
	c, err := statepool.New(statepool.Config{MaxConns: -1})
	require.ErrorIs(t, err, statepool.ErrInvalidConfig)
	require.Nil(t, c)
}

func TestArgumentErrors(t *testing.T) { protocols(t, testArgumentErrors) }

func testArgumentErrors(t *testing.T, p statepool.Protocol) {
	f := newFake(t)
	c := newClient(t, f, statepool.Config{Protocol: p})
	ctx := context.Background()

	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"get empty key", func() error { _, err := c.Get(ctx, ""); return err }, statepool.ErrEmptyKey},
		{"save empty key", func() error { return c.Save(ctx, "", []byte(`{}`), statepool.SaveOptions{}) }, statepool.ErrEmptyKey},
		{"delete empty key", func() error { return c.Delete(ctx, "", "") }, statepool.ErrEmptyKey},
		{"save nil value", func() error { return c.Save(ctx, "k", nil, statepool.SaveOptions{}) }, statepool.ErrInvalidValue},
		{"save bad json", func() error { return c.Save(ctx, "k", []byte(`{"a":`), statepool.SaveOptions{}) }, statepool.ErrInvalidValue},
		{
			"save smuggled item",
			func() error { return c.Save(ctx, "k", []byte(`1},{"key":"other","value":2`), statepool.SaveOptions{}) },
			statepool.ErrInvalidValue,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.ErrorIs(t, tt.call(), tt.want)
		})
	}
	require.Zero(t, f.Requests(daprfake.OpSave)+f.Requests(daprfake.OpGet)+f.Requests(daprfake.OpDelete),
		"argument errors must not reach Dapr")
}

func TestKeysArePathEscaped(t *testing.T) { protocols(t, testKeysArePathEscaped) }

func testKeysArePathEscaped(t *testing.T, p statepool.Protocol) {
	f := newFake(t)
	c := newClient(t, f, statepool.Config{Protocol: p})
	ctx := context.Background()

	for _, key := range []string{"a/b", "a b", "q?x=1", "h#frag", "pct%41", "ünï"} {
		t.Run(key, func(t *testing.T) {
			require.NoError(t, c.Save(ctx, key, []byte(`{"k":1}`), statepool.SaveOptions{}))
			e, err := c.Get(ctx, key)
			require.NoError(t, err)
			require.JSONEq(t, `{"k":1}`, string(e.Value))
			require.NoError(t, c.Delete(ctx, key, e.ETag))
			_, ok := f.Get(key)
			require.False(t, ok)
		})
	}
}

func TestTTLRoundsUpToWholeSeconds(t *testing.T) { protocols(t, testTTLRoundsUpToWholeSeconds) }

func testTTLRoundsUpToWholeSeconds(t *testing.T, p statepool.Protocol) {
	f := newFake(t)
	c := newClient(t, f, statepool.Config{Protocol: p})

	tests := []struct {
		ttl  time.Duration
		want time.Duration
	}{
		{time.Nanosecond, time.Second},
		{1500 * time.Millisecond, 2 * time.Second},
		{time.Hour, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.ttl.String(), func(t *testing.T) {
			require.NoError(t, c.Save(context.Background(), "k", []byte(`{}`), statepool.SaveOptions{TTL: tt.ttl}))
			got, _ := f.TTL("k")
			require.Equal(t, tt.want, got)
		})
	}
}

func TestAPIToken(t *testing.T) {
	const token = "s3cret-token"
	f := newFake(t, daprfake.WithAPIToken(token))
	ctx := context.Background()

	with := newClient(t, f, statepool.Config{APIToken: token})
	require.NoError(t, with.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{}))
	_, err := with.Get(ctx, "k")
	require.NoError(t, err)
	require.NoError(t, with.Delete(ctx, "k", ""))

	without := newClient(t, f, statepool.Config{})
	_, err = without.Get(ctx, "k")
	var se *statepool.StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusUnauthorized, se.StatusCode)
	require.Equal(t, statepool.OpGet, se.Op)
	require.NotContains(t, err.Error(), token)
}

func TestStatusError(t *testing.T) {
	f := newFake(t)
	c := newClient(t, f, statepool.Config{})
	f.FailWith(http.StatusServiceUnavailable)

	err := c.Save(context.Background(), "c-1", []byte(`{}`), statepool.SaveOptions{})
	var se *statepool.StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, statepool.OpSave, se.Op)
	require.Equal(t, "c-1", se.Key)
	require.Equal(t, http.StatusServiceUnavailable, se.StatusCode)
	require.Contains(t, se.Body, "ERR_FAKE_INJECTED")
	require.Equal(t, `statepool: save "c-1": unexpected status 503: `+se.Body, err.Error())
}

// TestStatusErrorBodyTruncated also checks that a long error body is drained
// so the connection survives.
func TestStatusErrorBodyTruncated(t *testing.T) {
	var opened atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(strings.Repeat("x", 10_000)))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	c, err := statepool.New(statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: srv.URL})
	require.NoError(t, err)
	t.Cleanup(c.Close)

	for range 3 {
		_, err := c.Get(context.Background(), "k")
		var se *statepool.StatusError
		require.ErrorAs(t, err, &se)
		require.Len(t, se.Body, 256)
	}
	require.EqualValues(t, 1, opened.Load())
}

func TestOnRequestCodes(t *testing.T) {
	f := newFake(t)
	var rec recorder
	c := newClient(t, f, statepool.Config{Hooks: rec.hooks()})
	ctx := context.Background()

	_, err := c.Get(ctx, "k")
	require.ErrorIs(t, err, statepool.ErrNotFound)
	require.NoError(t, c.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{}))
	e, err := c.Get(ctx, "k")
	require.NoError(t, err)
	require.ErrorIs(t, c.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{ETag: "999"}), statepool.ErrETagMismatch)
	require.ErrorIs(t, c.Delete(ctx, "k", "999"), statepool.ErrETagMismatch)
	require.NoError(t, c.Delete(ctx, "k", e.ETag))
	f.FailNext(1, http.StatusInternalServerError)
	_, err = c.Get(ctx, "k")
	require.Error(t, err)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = c.Get(cancelled, "k")
	require.ErrorIs(t, err, context.Canceled)

	require.Equal(t, []string{
		"get 204", "save 204", "get 200", "save 409", "delete 409", "delete 204", "get 500", "get error",
	}, rec.requests())
}

// OnRequest's duration feeds cartworker_state_request_duration_seconds: it
// spans the call, on both transports.
func TestOnRequestDuration(t *testing.T) {
	for _, proto := range []statepool.Protocol{statepool.ProtocolHTTP, statepool.ProtocolGRPC} {
		t.Run(string(proto), func(t *testing.T) {
			f := newFake(t)
			var rec recorder
			c := newClient(t, f, statepool.Config{Hooks: rec.hooks(), Protocol: proto})
			f.SetDelay(30 * time.Millisecond)
			require.NoError(t, c.Save(context.Background(), "k", []byte(`{}`), statepool.SaveOptions{}))
			took := rec.durations()
			require.Len(t, took, 1)
			require.GreaterOrEqual(t, took[0], 30*time.Millisecond)
			require.Less(t, took[0], 5*time.Second)
		})
	}
}

func TestTimeouts(t *testing.T) {
	tests := []struct {
		name string
		cfg  statepool.Config
	}{
		{"ResponseHeaderTimeout", statepool.Config{ResponseHeaderTimeout: 50 * time.Millisecond}},
		{"RequestTimeout", statepool.Config{RequestTimeout: 50 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			f.SetDelay(10 * time.Second)
			var rec recorder
			cfg := tt.cfg
			cfg.Hooks = rec.hooks()
			c := newClient(t, f, cfg)

			start := time.Now()
			_, err := c.Get(context.Background(), "k")
			elapsed := time.Since(start)

			require.Error(t, err)
			require.Less(t, elapsed, 2*time.Second, "timeout must bound the call")
			require.True(t, breaker.IsFailure(err), "timeouts must trip the breaker: %v", err)
			var ne net.Error
			isTimeout := errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
			require.True(t, isTimeout, "want a timeout, got %v", err)
			require.True(t, strings.HasPrefix(err.Error(), `statepool: get "k": `), err.Error())
			require.Equal(t, []string{"get timeout"}, rec.requests())
		})
	}
}

func TestConnectionRefusedIsFailure(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())

	var rec recorder
	c, err := statepool.New(statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: "http://" + addr, Hooks: rec.hooks()})
	require.NoError(t, err)
	t.Cleanup(c.Close)

	_, err = c.Get(context.Background(), "k")
	require.Error(t, err)
	require.True(t, breaker.IsFailure(err), "%v", err)
	require.ErrorIs(t, err, statepool.ErrUnreachable, "nothing reached daprd: its absence is at fault")
	require.Zero(t, rec.dials.Load())
	require.Equal(t, []string{"get error"}, rec.requests())
	require.ErrorIs(t, c.Check(context.Background()), statepool.ErrUnreachable)
}

// TestDaprErrorClasses checks how Dapr's answers are told apart: the
// worker's own misconfiguration (token, store) against a request daprd
// refuses for what is in it, against daprd's ill health.
func TestDaprErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		status    int
		errorCode string
		want      error
		failure   bool // counts against the breaker
	}{
		{http.StatusUnauthorized, "ERR_UNAUTHORIZED", statepool.ErrUnauthorized, false},
		{http.StatusForbidden, "ERR_PERMISSION_DENIED", statepool.ErrUnauthorized, false},
		{http.StatusBadRequest, "ERR_STATE_STORE_NOT_FOUND", statepool.ErrStoreNotFound, false},
		{http.StatusInternalServerError, "ERR_STATE_STORES_NOT_CONFIGURED", statepool.ErrStoreNotFound, true},
		{http.StatusBadRequest, "ERR_MALFORMED_REQUEST", statepool.ErrBadRequest, false},
		{http.StatusInternalServerError, "ERR_STATE_SAVE", nil, true},
		// A request over daprd's max-body-size: final on a save (see
		// TestSizeRefusalsByOperation), a split signal elsewhere.
		{http.StatusRequestEntityTooLarge, "ERR_FAKE", statepool.ErrResourceExhausted, false},
	} {
		t.Run(strconv.Itoa(tc.status)+" "+tc.errorCode, func(t *testing.T) {
			f := newFake(t)
			c := newClient(t, f, statepool.Config{})
			f.FailNextWith(2, tc.status, tc.errorCode)
			_, getErr := c.Get(context.Background(), "k")
			delErr := c.Delete(context.Background(), "k", "")
			for _, err := range []error{getErr, delErr} {
				var se *statepool.StatusError
				require.ErrorAs(t, err, &se)
				require.Equal(t, tc.errorCode, se.ErrorCode)
				requireClass(t, err, tc.want)
				require.Equal(t, tc.failure, breaker.IsFailure(err))
			}
			want := tc.want
			if tc.status == http.StatusRequestEntityTooLarge {
				want = statepool.ErrTooLarge
			}
			f.FailNextWith(1, tc.status, tc.errorCode)
			err := c.Save(context.Background(), "k", []byte(`{}`), statepool.SaveOptions{})
			var se *statepool.StatusError
			require.ErrorAs(t, err, &se)
			requireClass(t, err, want)
			require.Equal(t, tc.failure, breaker.IsFailure(err))
		})
	}
}

// requireClass checks that err is of class want, and of no other class
// but those want is itself (ErrTooLarge is an ErrBadRequest); want nil
// means of none.
func requireClass(t *testing.T, err, want error) {
	t.Helper()
	for _, class := range []error{statepool.ErrUnauthorized, statepool.ErrStoreNotFound, statepool.ErrBadRequest,
		statepool.ErrUnreachable, statepool.ErrResourceExhausted, statepool.ErrTooLarge} {
		require.Equal(t, want != nil && errors.Is(want, class), errors.Is(err, class), "%v is %v", err, class)
	}
}

// TestSizeRefusalsByOperation checks daprd's refusals of a call as too
// large, 413 over HTTP and ResourceExhausted over gRPC, by operation: a
// save's is final, ErrTooLarge and so ErrBadRequest, which the worker
// refuses at once (state_rejected) rather than retrying the same
// documents until they are dead-lettered as transient failures; a read's
// stays ErrResourceExhausted, the signal UpdateCarts splits a bulk read
// on.
func TestSizeRefusalsByOperation(t *testing.T) {
	for _, proto := range []statepool.Protocol{statepool.ProtocolHTTP, statepool.ProtocolGRPC} {
		t.Run(string(proto), func(t *testing.T) {
			ctx := context.Background()
			f := newFake(t)
			c := newClient(t, f, statepool.Config{Protocol: proto})
			doc := []byte(`{"line_items":[]}`)
			for _, call := range []struct {
				name string
				do   func() error
				want error
			}{
				{"save", func() error { return c.Save(ctx, "k", doc, statepool.SaveOptions{}) }, statepool.ErrTooLarge},
				{"save_bulk", func() error {
					return c.SaveBulk(ctx, []statepool.SaveItem{{Key: "a", Value: doc}, {Key: "b", Value: doc}})
				}, statepool.ErrTooLarge},
				{"get", func() error { _, err := c.Get(ctx, "k"); return err }, statepool.ErrResourceExhausted},
				{"get_bulk", func() error { _, err := c.GetBulk(ctx, []string{"a", "b"}); return err }, statepool.ErrResourceExhausted},
			} {
				f.FailNextWith(1, http.StatusRequestEntityTooLarge, "ERR_FAKE")
				err := call.do()
				require.Error(t, err, call.name)
				requireClass(t, err, call.want)
				require.False(t, breaker.IsFailure(err), "%s: %v: the request's fault, not daprd's health", call.name, err)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	f := newFake(t, daprfake.WithAPIToken("right"))
	c := newClient(t, f, statepool.Config{APIToken: "right"})
	require.NoError(t, c.Check(context.Background()))

	wrong := newClient(t, f, statepool.Config{APIToken: "wrong"})
	require.ErrorIs(t, wrong.Check(context.Background()), statepool.ErrUnauthorized)

	other := newClient(t, f, statepool.Config{APIToken: "right", StoreName: "nosuchstore"})
	err := other.Check(context.Background())
	require.ErrorIs(t, err, statepool.ErrStoreNotFound)
	require.Contains(t, err.Error(), `"nosuchstore": daprd has cartstore`)
}

// TestCheckNotFoundIsStatusError: Check shares Get's request, but a 204 or
// 404 from the metadata API is no missing key: it means the endpoint is not
// daprd, and the status must say so.
func TestCheckNotFoundIsStatusError(t *testing.T) {
	for _, status := range []int{http.StatusNotFound, http.StatusNoContent} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(status)
			}))
			t.Cleanup(srv.Close)
			var rec recorder
			c, err := statepool.New(statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: srv.URL, Hooks: rec.hooks()})
			require.NoError(t, err)
			t.Cleanup(c.Close)

			err = c.Check(context.Background())
			var se *statepool.StatusError
			require.ErrorAs(t, err, &se)
			require.Equal(t, status, se.StatusCode)
			require.Equal(t, statepool.OpCheck, se.Op)
			require.NotErrorIs(t, err, statepool.ErrNotFound)
			require.Equal(t, []string{"check " + strconv.Itoa(status)}, rec.requests())
		})
	}
}

func TestCloseReleasesIdleConnections(t *testing.T) {
	f := newFake(t)
	c := newClient(t, f, statepool.Config{})
	ctx := context.Background()

	require.NoError(t, c.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{}))
	eventually(t, func() bool { return f.OpenConns() == 1 }, "the pool keeps its connection")
	c.Close()
	eventually(t, func() bool { return f.OpenConns() == 0 }, "Close must close idle connections")
	c.Close() // twice is fine

	_, err := c.Get(ctx, "k")
	require.NoError(t, err, "a call after Close dials again")
}

func TestPooledCapsConnections(t *testing.T) {
	const (
		workers = 200
		perHost = 8
	)
	f := newFake(t)
	f.SetDelay(2 * time.Millisecond) // keep requests in flight together
	f.Put("k", []byte(`{"n":1}`))
	var rec recorder
	c := newClient(t, f, statepool.Config{MaxConns: perHost, Hooks: rec.hooks()})

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Get(context.Background(), "k")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	eventually(t, func() bool {
		opened, _ := f.Conns()
		return int64(opened) == rec.dials.Load()
	}, "OnDial must count every connection the server accepted")
	opened, maxOpen := f.Conns()
	require.LessOrEqual(t, opened, perHost)
	require.LessOrEqual(t, maxOpen, perHost)
	require.Equal(t, workers, f.Requests(daprfake.OpGet))
}

func TestPerRequestOpensConnectionPerCall(t *testing.T) {
	const calls = 20
	f := newFake(t)
	var rec recorder
	c := newClient(t, f, statepool.Config{Mode: statepool.ModePerRequest, Hooks: rec.hooks()})

	for range calls {
		require.NoError(t, c.Save(context.Background(), "k", []byte(`{}`), statepool.SaveOptions{}))
	}
	eventually(t, func() bool {
		opened, _ := f.Conns()
		return opened == calls && rec.dials.Load() == calls
	}, "per-request mode must dial once per call")
	eventually(t, func() bool { return f.OpenConns() == 0 }, "per-request connections must be closed")
}

// TestSequentialCallsReuseOneConnection proves bodies are drained on every
// outcome; an undrained body would cost a new connection.
func TestSequentialCallsReuseOneConnection(t *testing.T) {
	f := newFake(t)
	var rec recorder
	c := newClient(t, f, statepool.Config{Hooks: rec.hooks()})
	ctx := context.Background()

	for range 10 {
		_, err := c.Get(ctx, "k") // 204
		require.ErrorIs(t, err, statepool.ErrNotFound)
		require.NoError(t, c.Save(ctx, "k", []byte(`{"a":[1,2,3]}`), statepool.SaveOptions{}))
		e, err := c.Get(ctx, "k") // 200 with body
		require.NoError(t, err)
		require.ErrorIs(t, c.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{ETag: "0"}), statepool.ErrETagMismatch)
		f.FailNext(1, http.StatusInternalServerError)
		var se *statepool.StatusError
		require.ErrorAs(t, c.Delete(ctx, "k", e.ETag), &se)
		require.NoError(t, c.Delete(ctx, "k", e.ETag))
	}
	opened, _ := f.Conns()
	require.Equal(t, 1, opened)
	require.EqualValues(t, 1, rec.dials.Load())
}

// The per-request mode reproduces upstream's calls: one per key, each on a
// connection of its own, even for the bulk calls.
func TestPerRequestBulkIsOneCallPerKey(t *testing.T) {
	f := newFake(t)
	c := newClient(t, f, statepool.Config{Mode: statepool.ModePerRequest})
	ctx := context.Background()
	require.NoError(t, c.SaveBulk(ctx, []statepool.SaveItem{{Key: "a", Value: []byte(`{}`)}, {Key: "b", Value: []byte(`{}`)}}))
	got, err := c.GetBulk(ctx, []string{"a", "b", "c"})
	require.NoError(t, err)
	require.ErrorIs(t, got[2].Err, statepool.ErrNotFound)
	require.Equal(t, 0, f.Requests(daprfake.OpGetBulk))
	require.Equal(t, 3, f.Requests(daprfake.OpGet))
	require.Equal(t, 2, f.Requests(daprfake.OpSave))
	opened, _ := f.Conns()
	require.Equal(t, 5, opened, "a connection per call")
}
