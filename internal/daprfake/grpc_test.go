package daprfake_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cartworker/cartworker/internal/daprfake"
)

const store = daprfake.DefaultStoreName

// dial returns a raw Dapr gRPC client of f, closed at cleanup.
func dial(t *testing.T, f *daprfake.Fake) runtimev1pb.DaprClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+f.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return runtimev1pb.NewDaprClient(conn)
}

func newGRPCFake(t *testing.T, opts ...daprfake.Option) (*daprfake.Fake, runtimev1pb.DaprClient) {
	t.Helper()
	f := daprfake.New(opts...)
	t.Cleanup(f.Close)
	return f, dial(t, f)
}

// reason returns the status's ErrorInfo reason.
func reason(t *testing.T, err error) string {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			require.Equal(t, "dapr.io", ei.GetDomain())
			return ei.GetReason()
		}
	}
	return ""
}

func item(key, value, etag string) *commonv1pb.StateItem {
	it := &commonv1pb.StateItem{Key: key, Value: []byte(value)}
	if etag != "" {
		it.Etag = &commonv1pb.Etag{Value: etag}
		it.Options = &commonv1pb.StateOptions{Concurrency: commonv1pb.StateOptions_CONCURRENCY_FIRST_WRITE}
	}
	return it
}

func TestGRPCSaveGetDelete(t *testing.T) {
	f, c := newGRPCFake(t)
	ctx := context.Background()

	got, err := c.GetState(ctx, &runtimev1pb.GetStateRequest{StoreName: store, Key: "k"})
	require.NoError(t, err, "a missing key is no error")
	require.Empty(t, got.GetData())
	require.Empty(t, got.GetEtag())

	_, err = c.SaveState(ctx, &runtimev1pb.SaveStateRequest{StoreName: store, States: []*commonv1pb.StateItem{item("k", `{"a":1}`, "")}})
	require.NoError(t, err)
	got, err = c.GetState(ctx, &runtimev1pb.GetStateRequest{StoreName: store, Key: "k"})
	require.NoError(t, err)
	require.Equal(t, `{"a":1}`, string(got.GetData()))
	require.Equal(t, "1", got.GetEtag())

	_, err = c.SaveState(ctx, &runtimev1pb.SaveStateRequest{StoreName: store, States: []*commonv1pb.StateItem{item("k", `{"a":2}`, "1")}})
	require.NoError(t, err)
	doc, _ := f.Get("k")
	require.Equal(t, `{"a":2}`, string(doc), "one store behind both APIs")

	_, err = c.DeleteState(ctx, &runtimev1pb.DeleteStateRequest{StoreName: store, Key: "k", Etag: &commonv1pb.Etag{Value: "2"}})
	require.NoError(t, err)
	_, ok := f.Get("k")
	require.False(t, ok)
	_, err = c.DeleteState(ctx, &runtimev1pb.DeleteStateRequest{StoreName: store, Key: "k"})
	require.NoError(t, err, "delete missing")
	require.Equal(t, 2, f.Requests(daprfake.OpGet))
	require.Equal(t, 2, f.Requests(daprfake.OpSave))
	require.Equal(t, 2, f.Requests(daprfake.OpDelete))
}

func TestGRPCConcurrencyRules(t *testing.T) {
	lastWrite := &commonv1pb.StateOptions{Concurrency: commonv1pb.StateOptions_CONCURRENCY_LAST_WRITE}
	tests := []struct {
		name   string
		save   []*commonv1pb.StateItem
		delete *runtimev1pb.DeleteStateRequest
		code   codes.Code
		reason string
	}{
		{name: "stale etag", save: []*commonv1pb.StateItem{item("k", "1", "1")}, code: codes.Aborted, reason: "ERR_STATE_SAVE"},
		{name: "current etag", save: []*commonv1pb.StateItem{item("k", "1", "2")}, code: codes.OK},
		{name: "etag on missing key", save: []*commonv1pb.StateItem{item("new", "1", "2")}, code: codes.Aborted, reason: "ERR_STATE_SAVE"},
		{name: "last-write ignores etag", save: []*commonv1pb.StateItem{{Key: "k", Value: []byte("1"), Etag: &commonv1pb.Etag{Value: "1"}, Options: lastWrite}}, code: codes.OK},
		{name: "malformed etag", save: []*commonv1pb.StateItem{item("k", "1", "abc")}, code: codes.InvalidArgument, reason: "ERR_STATE_SAVE"},
		{name: "empty key", save: []*commonv1pb.StateItem{item("", "1", "")}, code: codes.InvalidArgument, reason: "ERR_STATE_SAVE"},
		{name: "bad ttl", save: []*commonv1pb.StateItem{{Key: "k", Value: []byte("1"), Metadata: map[string]string{"ttlInSeconds": "x"}}}, code: codes.InvalidArgument, reason: "ERR_STATE_SAVE"},
		{name: "batch writes each item on its own, as daprd does", save: []*commonv1pb.StateItem{item("other", "1", ""), item("k", "1", "1")}, code: codes.Aborted, reason: "ERR_STATE_SAVE"},
		{name: "delete stale", delete: &runtimev1pb.DeleteStateRequest{Key: "k", Etag: &commonv1pb.Etag{Value: "1"}}, code: codes.Aborted, reason: "ERR_STATE_DELETE"},
		{name: "delete missing with etag", delete: &runtimev1pb.DeleteStateRequest{Key: "nope", Etag: &commonv1pb.Etag{Value: "1"}}, code: codes.Aborted, reason: "ERR_STATE_DELETE"},
		{name: "delete malformed etag", delete: &runtimev1pb.DeleteStateRequest{Key: "k", Etag: &commonv1pb.Etag{Value: "x"}}, code: codes.InvalidArgument, reason: "ERR_STATE_DELETE"},
		{name: "delete last-write", delete: &runtimev1pb.DeleteStateRequest{Key: "k", Etag: &commonv1pb.Etag{Value: "1"}, Options: lastWrite}, code: codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, c := newGRPCFake(t)
			f.Put("k", []byte(`0`))
			f.Put("k", []byte(`0`)) // etag 2
			var err error
			if tt.delete != nil {
				tt.delete.StoreName = store
				_, err = c.DeleteState(context.Background(), tt.delete)
			} else {
				_, err = c.SaveState(context.Background(), &runtimev1pb.SaveStateRequest{StoreName: store, States: tt.save})
			}
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			if err != nil {
				require.Equal(t, tt.reason, reason(t, err))
			}
			if tt.code == codes.Aborted {
				// daprd writes a bulk save's items one by one: the item
				// with the current ETag lands even though another's fails.
				_, ok := f.Get("other")
				require.Equal(t, len(tt.save) > 1, ok)
			}
		})
	}
}

func TestGRPCTTL(t *testing.T) {
	f, c := newGRPCFake(t)
	_, err := c.SaveState(context.Background(), &runtimev1pb.SaveStateRequest{StoreName: store, States: []*commonv1pb.StateItem{
		{Key: "k", Value: []byte("1"), Metadata: map[string]string{"ttlInSeconds": "60"}},
	}})
	require.NoError(t, err)
	ttl, ok := f.TTL("k")
	require.True(t, ok)
	require.Equal(t, time.Minute, ttl)
}

// TestGRPCAPIToken: daprd's token check answers Unauthenticated with the
// HTTP status text, on every call, metadata included.
func TestGRPCAPIToken(t *testing.T) {
	f, c := newGRPCFake(t, daprfake.WithAPIToken("tok"))
	get := func(ctx context.Context) error {
		_, err := c.GetState(ctx, &runtimev1pb.GetStateRequest{StoreName: store, Key: "k"})
		return err
	}
	ctx := context.Background()

	err := get(ctx)
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	require.Equal(t, "Unauthorized", status.Convert(err).Message())
	require.Equal(t, "Unauthorized", reason(t, err))
	require.Equal(t, codes.Unauthenticated, status.Code(get(metadata.AppendToOutgoingContext(ctx, "dapr-api-token", "wrong"))))
	_, err = c.GetMetadata(ctx, &runtimev1pb.GetMetadataRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))

	authed := metadata.AppendToOutgoingContext(ctx, "dapr-api-token", "tok")
	require.NoError(t, get(authed))
	f.SetToken("")
	require.NoError(t, get(ctx))
}

func TestGRPCUnknownStore(t *testing.T) {
	_, c := newGRPCFake(t, daprfake.WithStoreName("other"))
	_, err := c.GetState(context.Background(), &runtimev1pb.GetStateRequest{StoreName: store, Key: "k"})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Equal(t, "DAPR_STATE_NOT_FOUND", reason(t, err))
	require.Equal(t, "state store cartstore is not found", status.Convert(err).Message())
}

func TestGRPCMetadata(t *testing.T) {
	f, c := newGRPCFake(t, daprfake.WithStoreName("carts"))
	f.FailWith(http.StatusInternalServerError) // state calls only
	md, err := c.GetMetadata(context.Background(), &runtimev1pb.GetMetadataRequest{})
	require.NoError(t, err)
	require.Len(t, md.GetRegisteredComponents(), 1)
	require.Equal(t, "carts", md.GetRegisteredComponents()[0].GetName())
	require.Equal(t, "state.in-memory", md.GetRegisteredComponents()[0].GetType())
	require.Equal(t, 1, f.Requests(daprfake.OpMetadata))
}

func TestGRPCFaultInjection(t *testing.T) {
	f, c := newGRPCFake(t)
	get := func() error {
		_, err := c.GetState(context.Background(), &runtimev1pb.GetStateRequest{StoreName: store, Key: "k"})
		return err
	}
	f.FailNext(2, http.StatusServiceUnavailable)
	require.Equal(t, codes.Unavailable, status.Code(get()))
	require.Equal(t, codes.Unavailable, status.Code(get()))
	require.NoError(t, get())

	for _, tc := range []struct {
		status    int
		errorCode string
		code      codes.Code
		reason    string
	}{
		{http.StatusInternalServerError, "ERR_STATE_GET", codes.Internal, "ERR_STATE_GET"},
		{http.StatusGatewayTimeout, "X", codes.DeadlineExceeded, "X"},
		{http.StatusConflict, "ERR_STATE_SAVE", codes.Aborted, "ERR_STATE_SAVE"},
		{http.StatusBadRequest, "ERR_STATE_STORE_NOT_FOUND", codes.InvalidArgument, "DAPR_STATE_NOT_FOUND"},
		{http.StatusInternalServerError, "ERR_STATE_STORES_NOT_CONFIGURED", codes.FailedPrecondition, "DAPR_STATE_NOT_CONFIGURED"},
		{http.StatusForbidden, "ERR_PERMISSION_DENIED", codes.PermissionDenied, "ERR_PERMISSION_DENIED"},
	} {
		f.FailNextWith(1, tc.status, tc.errorCode)
		err := get()
		require.Equal(t, tc.code, status.Code(err), "%d %s", tc.status, tc.errorCode)
		require.Equal(t, tc.reason, reason(t, err))
		require.Equal(t, tc.code, daprfake.GRPCCode(tc.status, tc.errorCode))
	}
}

func TestGRPCDelayHonoursDeadline(t *testing.T) {
	f, c := newGRPCFake(t)
	f.SetDelay(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.GetState(ctx, &runtimev1pb.GetStateRequest{StoreName: store, Key: "k"})
	require.Equal(t, codes.DeadlineExceeded, status.Code(err))
}

func TestGRPCCloseStopsServer(t *testing.T) {
	f := daprfake.New()
	c := dial(t, f)
	_, err := c.GetState(context.Background(), &runtimev1pb.GetStateRequest{StoreName: store, Key: "k"})
	require.NoError(t, err)
	opened, _ := f.Conns()
	require.Equal(t, 1, opened, "gRPC connections are counted")
	require.Equal(t, 1, f.OpenConns())

	f.SetDelay(time.Hour)
	errc := make(chan error, 1)
	go func() {
		_, err := c.GetState(context.Background(), &runtimev1pb.GetStateRequest{StoreName: store, Key: "k"})
		errc <- err
	}()
	require.Eventually(t, func() bool { return f.Requests(daprfake.OpGet) == 2 }, 5*time.Second, time.Millisecond)
	f.Close()
	select {
	case err := <-errc:
		require.Error(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Close left a delayed call hanging")
	}
	require.Eventually(t, func() bool { return f.OpenConns() == 0 }, 5*time.Second, 5*time.Millisecond)
	require.Empty(t, f.GRPCAddr(), "no server after Close")
	f.Close()
}

func TestGRPCNotStartedUnlessAsked(t *testing.T) {
	f := daprfake.New()
	f.Close()
	require.Empty(t, f.GRPCAddr())
}
