package statepool_test

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/internal/testkit"
)

var grpcCfg = statepool.Config{Protocol: statepool.ProtocolGRPC}

func TestGRPCAPIToken(t *testing.T) {
	const token = "s3cret-token"
	f := newFake(t, daprfake.WithAPIToken(token))
	ctx := context.Background()

	withCfg := grpcCfg
	withCfg.APIToken = token
	with := newClient(t, f, withCfg)
	require.NoError(t, with.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{}))
	_, err := with.Get(ctx, "k")
	require.NoError(t, err)
	require.NoError(t, with.Delete(ctx, "k", ""))
	require.NoError(t, with.Check(ctx))

	for name, tok := range map[string]string{"none": "", "wrong": "wrong-token"} {
		t.Run(name, func(t *testing.T) {
			cfg := grpcCfg
			cfg.APIToken = tok
			c := newClient(t, f, cfg)
			_, err := c.Get(ctx, "k")
			require.ErrorIs(t, err, statepool.ErrUnauthorized)
			var ge *statepool.GRPCError
			require.ErrorAs(t, err, &ge)
			require.Equal(t, codes.Unauthenticated, ge.Code)
			require.Equal(t, statepool.OpGet, ge.Op)
			require.Equal(t, codes.Unauthenticated, status.Code(err), "status.Code reads a GRPCError")
			require.NotContains(t, err.Error(), token)
			require.False(t, breaker.IsFailure(err), "a refused token is no sign of ill health")
			require.ErrorIs(t, c.Check(ctx), statepool.ErrUnauthorized)
		})
	}
}

// TestGRPCErrorClasses is TestDaprErrorClasses over gRPC: the fake answers
// each fault with the status daprd's gRPC API would use.
func TestGRPCErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		status    int
		errorCode string
		code      codes.Code
		reason    string
		want      error
		failure   bool // counts against the breaker
	}{
		{http.StatusUnauthorized, "ERR_UNAUTHORIZED", codes.Unauthenticated, "ERR_UNAUTHORIZED", statepool.ErrUnauthorized, false},
		{http.StatusForbidden, "ERR_PERMISSION_DENIED", codes.PermissionDenied, "ERR_PERMISSION_DENIED", statepool.ErrUnauthorized, false},
		{http.StatusBadRequest, "ERR_STATE_STORE_NOT_FOUND", codes.InvalidArgument, "DAPR_STATE_NOT_FOUND", statepool.ErrStoreNotFound, false},
		{http.StatusInternalServerError, "ERR_STATE_STORES_NOT_CONFIGURED", codes.FailedPrecondition, "DAPR_STATE_NOT_CONFIGURED", statepool.ErrStoreNotFound, false},
		{http.StatusBadRequest, "ERR_MALFORMED_REQUEST", codes.InvalidArgument, "ERR_MALFORMED_REQUEST", statepool.ErrBadRequest, false},
		{http.StatusInternalServerError, "ERR_STATE_SAVE", codes.Internal, "ERR_STATE_SAVE", nil, true},
		{http.StatusServiceUnavailable, "ERR_FAKE", codes.Unavailable, "ERR_FAKE", nil, true},
		{http.StatusGatewayTimeout, "ERR_FAKE", codes.DeadlineExceeded, "ERR_FAKE", nil, true},
		{http.StatusTooManyRequests, "ERR_FAKE", codes.ResourceExhausted, "ERR_FAKE", statepool.ErrResourceExhausted, false},
		{http.StatusRequestEntityTooLarge, "ERR_FAKE", codes.ResourceExhausted, "ERR_FAKE", statepool.ErrResourceExhausted, false},
		{http.StatusNotFound, "ERR_FAKE", codes.NotFound, "ERR_FAKE", nil, false},
		{599, "ERR_FAKE", codes.Unknown, "ERR_FAKE", nil, true},
	} {
		t.Run(strconv.Itoa(tc.status)+" "+tc.errorCode, func(t *testing.T) {
			f := newFake(t)
			var rec recorder
			cfg := grpcCfg
			cfg.Hooks = rec.hooks()
			c := newClient(t, f, cfg)
			f.FailNextWith(3, tc.status, tc.errorCode)
			_, getErr := c.Get(context.Background(), "k")
			saveErr := c.Save(context.Background(), "k", []byte(`{}`), statepool.SaveOptions{})
			delErr := c.Delete(context.Background(), "k", "")
			for i, err := range []error{getErr, saveErr, delErr} {
				var ge *statepool.GRPCError
				require.ErrorAs(t, err, &ge)
				require.Equal(t, tc.code, ge.Code)
				require.Equal(t, tc.reason, ge.ErrorCode)
				require.Equal(t, "injected failure", ge.Message)
				want := tc.want
				if i == 1 && tc.code == codes.ResourceExhausted {
					// A save's size refusal is final: see
					// TestSizeRefusalsByOperation.
					want = statepool.ErrTooLarge
				}
				requireClass(t, err, want)
				require.Equal(t, tc.failure, breaker.IsFailure(err), "%v", err)
			}
			code := tc.code.String()
			require.Equal(t, []string{"get " + code, "save " + code, "delete " + code}, rec.requests())
		})
	}
}

func TestGRPCErrorMessage(t *testing.T) {
	f := newFake(t)
	c := newClient(t, f, grpcCfg)
	f.FailNextWith(1, http.StatusInternalServerError, "ERR_STATE_SAVE")
	err := c.Save(context.Background(), "c-1", []byte(`{}`), statepool.SaveOptions{})
	require.EqualError(t, err, `statepool: save "c-1": grpc status Internal ERR_STATE_SAVE: injected failure`)
}

func TestGRPCOnRequestCodes(t *testing.T) {
	f := newFake(t)
	var rec recorder
	cfg := grpcCfg
	cfg.Hooks = rec.hooks()
	c := newClient(t, f, cfg)
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
	require.NoError(t, c.Check(ctx))

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = c.Get(cancelled, "k")
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, breaker.IsFailure(err))

	require.Equal(t, []string{
		"get OK", "save OK", "get OK", "save Aborted", "delete Aborted", "delete OK", "get Internal", "check OK", "get Canceled",
	}, rec.requests())
}

func TestGRPCRequestTimeout(t *testing.T) {
	f := newFake(t)
	f.SetDelay(10 * time.Second)
	var rec recorder
	cfg := grpcCfg
	cfg.RequestTimeout = 50 * time.Millisecond
	cfg.Hooks = rec.hooks()
	c := newClient(t, f, cfg)

	start := time.Now()
	_, err := c.Get(context.Background(), "k")
	require.Less(t, time.Since(start), 2*time.Second, "timeout must bound the call")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.True(t, breaker.IsFailure(err), "timeouts must trip the breaker: %v", err)
	require.Equal(t, `statepool: get "k": context deadline exceeded`, err.Error())
	require.Equal(t, []string{"get DeadlineExceeded"}, rec.requests())
}

func TestGRPCConnectionRefusedIsUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())

	var rec recorder
	c, err := statepool.New(statepool.Config{Protocol: statepool.ProtocolGRPC, GRPCEndpoint: addr, Hooks: rec.hooks()})
	require.NoError(t, err, "New does not dial")
	t.Cleanup(c.Close)

	_, err = c.Get(context.Background(), "k")
	require.ErrorIs(t, err, statepool.ErrUnreachable, "nothing reached daprd: its absence is at fault")
	require.True(t, breaker.IsFailure(err), "%v", err)
	require.Contains(t, err.Error(), "connection refused")
	require.Zero(t, rec.dials.Load())
	require.Equal(t, []string{"get Unavailable"}, rec.requests())
	require.ErrorIs(t, c.Check(context.Background()), statepool.ErrUnreachable)
}

// TestGRPCNotAGRPCServerIsUnreachable: an endpoint that answers, but not
// with gRPC (DAPR_GRPC_ENDPOINT set to daprd's HTTP port), is no daprd
// either.
func TestGRPCNotAGRPCServerIsUnreachable(t *testing.T) {
	f := newFake(t)
	c, err := statepool.New(statepool.Config{Protocol: statepool.ProtocolGRPC, GRPCEndpoint: f.URL()})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	_, err = c.Get(context.Background(), "k")
	require.ErrorIs(t, err, statepool.ErrUnreachable)
	require.Contains(t, err.Error(), "server preface")
	require.ErrorIs(t, c.Check(context.Background()), statepool.ErrUnreachable)
}

// TestGRPCServerUnavailableIsNotUnreachable: daprd answering Unavailable is
// ill health, which the breaker counts, not an absent sidecar.
func TestGRPCServerUnavailableIsNotUnreachable(t *testing.T) {
	f := newFake(t)
	c := newClient(t, f, grpcCfg)
	f.FailNext(1, http.StatusServiceUnavailable)
	_, err := c.Get(context.Background(), "k")
	require.NotErrorIs(t, err, statepool.ErrUnreachable)
	require.True(t, breaker.IsFailure(err))
}

// TestGRPCReconnects: a sidecar that goes away and comes back on the same
// address is used again within about a second, not after gRPC's default
// backoff of up to two minutes.
func TestGRPCReconnects(t *testing.T) {
	f := newFake(t)
	p := testkit.StartProxy(t, f.GRPCAddr())
	p.Up(t)
	var rec recorder
	c, err := statepool.New(statepool.Config{Protocol: statepool.ProtocolGRPC, GRPCEndpoint: p.Addr(), Hooks: rec.hooks()})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	ctx := context.Background()

	require.NoError(t, c.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{}))
	require.EqualValues(t, 1, rec.dials.Load())

	p.Down()
	for range 3 {
		_, err := c.Get(ctx, "k")
		require.Error(t, err)
		require.True(t, breaker.IsFailure(err), "%v", err)
	}
	_, err = c.Get(ctx, "k")
	require.ErrorIs(t, err, statepool.ErrUnreachable)

	p.Up(t)
	start := time.Now()
	require.Eventually(t, func() bool {
		_, err := c.Get(ctx, "k")
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
	require.Less(t, time.Since(start), 3*time.Second)
	require.EqualValues(t, 2, rec.dials.Load(), "one reconnection")
}

func TestGRPCCheck(t *testing.T) {
	f := newFake(t, daprfake.WithAPIToken("right"))
	cfg := grpcCfg
	cfg.APIToken = "right"
	require.NoError(t, newClient(t, f, cfg).Check(context.Background()))

	cfg.StoreName = "nosuchstore"
	err := newClient(t, f, cfg).Check(context.Background())
	require.ErrorIs(t, err, statepool.ErrStoreNotFound)
	require.Contains(t, err.Error(), `"nosuchstore": daprd has cartstore`)
	require.Equal(t, 2, f.Requests(daprfake.OpMetadata))
}

// TestGRPCStoreNotFound: the state calls themselves name a store daprd does
// not have.
func TestGRPCStoreNotFound(t *testing.T) {
	f := newFake(t)
	cfg := grpcCfg
	cfg.StoreName = "nosuchstore"
	c := newClient(t, f, cfg)
	_, err := c.Get(context.Background(), "k")
	require.ErrorIs(t, err, statepool.ErrStoreNotFound)
	require.False(t, breaker.IsFailure(err))
	var ge *statepool.GRPCError
	require.ErrorAs(t, err, &ge)
	require.Equal(t, codes.InvalidArgument, ge.Code)
	require.Equal(t, "DAPR_STATE_NOT_FOUND", ge.ErrorCode)
}

// TestGRPCOneConnection: every call of every goroutine shares the one
// channel's connection.
func TestGRPCOneConnection(t *testing.T) {
	const workers = 200
	f := newFake(t)
	f.SetDelay(2 * time.Millisecond) // keep calls in flight together
	f.Put("k", []byte(`{"n":1}`))
	var rec recorder
	cfg := grpcCfg
	cfg.Hooks = rec.hooks()
	c := newClient(t, f, cfg)

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			e, err := c.Get(context.Background(), "k")
			if err == nil {
				err = c.Save(context.Background(), "k", e.Value, statepool.SaveOptions{})
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	opened, maxOpen := f.Conns()
	require.Equal(t, 1, opened)
	require.Equal(t, 1, maxOpen)
	require.EqualValues(t, 1, rec.dials.Load())
	require.Equal(t, workers, f.Requests(daprfake.OpGet))
}

func TestGRPCClose(t *testing.T) {
	f := newFake(t)
	var rec recorder
	cfg := grpcCfg
	cfg.Hooks = rec.hooks()
	c := newClient(t, f, cfg)
	ctx := context.Background()

	require.NoError(t, c.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{}))
	eventually(t, func() bool { return f.OpenConns() == 1 }, "the channel keeps its connection")
	c.Close()
	eventually(t, func() bool { return f.OpenConns() == 0 }, "Close must close the connection")
	c.Close() // twice is fine

	_, err := c.Get(ctx, "k")
	require.ErrorIs(t, err, statepool.ErrClosed)
	require.ErrorIs(t, c.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{}), statepool.ErrClosed)
	require.ErrorIs(t, c.Delete(ctx, "k", ""), statepool.ErrClosed)
	require.ErrorIs(t, c.Check(ctx), statepool.ErrClosed)
	require.Equal(t, []string{"save OK"}, rec.requests(), "calls after Close are not sent")
}

// TestGRPCStoresBytesAsSent: over gRPC daprd stores the document's bytes as
// they are; the HTTP API re-encodes them. Both read back as the same JSON.
func TestGRPCStoresBytesAsSent(t *testing.T) {
	f := newFake(t)
	g := newClient(t, f, grpcCfg)
	h := newClient(t, f, statepool.Config{})
	ctx := context.Background()
	doc := `{"b":1, "a":[1.50,2]}`

	require.NoError(t, g.Save(ctx, "k", []byte(doc), statepool.SaveOptions{}))
	stored, _ := f.Get("k")
	require.Equal(t, doc, string(stored))
	e, err := h.Get(ctx, "k")
	require.NoError(t, err)
	require.JSONEq(t, doc, string(e.Value))
	ge, err := g.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, e.ETag, ge.ETag, "one store behind both APIs")
	require.NoError(t, h.Save(ctx, "k", ge.Value, statepool.SaveOptions{ETag: ge.ETag}))
	require.ErrorIs(t, g.Save(ctx, "k", ge.Value, statepool.SaveOptions{ETag: ge.ETag}), statepool.ErrETagMismatch)
}

func TestGRPCInvalidEndpointRefused(t *testing.T) {
	_, err := statepool.New(statepool.Config{Protocol: statepool.ProtocolGRPC, GRPCEndpoint: "unix:///tmp/dapr.sock"})
	require.ErrorIs(t, err, statepool.ErrInvalidConfig)
	require.True(t, strings.Contains(err.Error(), "GRPCEndpoint:"), err.Error())
}
