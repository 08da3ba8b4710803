package daprfake

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// GRPCAddr returns host:port of the fake's gRPC API, to use as
// statepool.Config.GRPCEndpoint. The first call starts the server; a fake
// used over HTTP alone never runs one. After Close it returns "".
func (f *Fake) GRPCAddr() string {
	f.grpcOnce.Do(f.startGRPC)
	select {
	case <-f.done:
		return ""
	default:
		return f.grpcAddr
	}
}

func (f *Fake) startGRPC() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("daprfake: listen for gRPC: " + err.Error())
	}
	srv := grpc.NewServer()
	runtimev1pb.RegisterDaprServer(srv, &grpcAPI{f: f})
	f.grpcSrv = srv
	f.grpcAddr = ln.Addr().String()
	go func() { _ = srv.Serve(&countingListener{Listener: ln, f: f}) }()
}

// GRPCCode is the gRPC status code daprd 1.18's gRPC API answers where its
// HTTP API answers status with errorCode, as FailNextWith injects it. Most
// follow the status; a store that is not configured is
// FailedPrecondition, as daprd says it.
func GRPCCode(status int, errorCode string) codes.Code {
	switch errorCode {
	case "ERR_STATE_STORES_NOT_CONFIGURED", "ERR_STATE_STORE_NOT_CONFIGURED", "DAPR_STATE_NOT_CONFIGURED":
		return codes.FailedPrecondition
	}
	switch status {
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusConflict:
		return codes.Aborted // ETag mismatch
	case http.StatusTooManyRequests, http.StatusRequestEntityTooLarge:
		// daprd's gRPC server refuses a message over its max-body-size
		// with ResourceExhausted, where its HTTP server answers 413.
		return codes.ResourceExhausted
	case http.StatusInternalServerError:
		return codes.Internal
	case http.StatusNotImplemented:
		return codes.Unimplemented
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	case http.StatusGatewayTimeout:
		return codes.DeadlineExceeded
	}
	return codes.Unknown
}

// grpcReason is the ErrorInfo reason daprd's gRPC API gives for errorCode:
// its store errors have names of their own there.
func grpcReason(errorCode string) string {
	switch errorCode {
	case "ERR_STATE_STORE_NOT_FOUND":
		return "DAPR_STATE_NOT_FOUND"
	case "ERR_STATE_STORES_NOT_CONFIGURED", "ERR_STATE_STORE_NOT_CONFIGURED":
		return "DAPR_STATE_NOT_CONFIGURED"
	}
	return errorCode
}

// grpcErr is flt as daprd's gRPC API would answer it: the status, with an
// ErrorInfo detail in domain dapr.io carrying the reason.
func (flt *fault) grpcErr() error {
	st := status.New(GRPCCode(flt.status, flt.code), flt.msg)
	info := &errdetails.ErrorInfo{Reason: grpcReason(flt.code), Domain: "dapr.io"}
	if flt == errUnauthorized {
		// daprd's token check answers with the HTTP status text, and the
		// cause in the metadata.
		text := http.StatusText(http.StatusUnauthorized)
		st = status.New(codes.Unauthenticated, text)
		info.Reason = text
		info.Metadata = map[string]string{
			"http.code":          strconv.Itoa(http.StatusUnauthorized),
			"http.error_message": "authentication error: api token mismatch",
		}
	}
	if withInfo, err := st.WithDetails(info); err == nil {
		st = withInfo
	}
	return st.Err()
}

// grpcAPI serves the calls of daprd's gRPC API the worker makes; the rest
// answer Unimplemented.
type grpcAPI struct {
	runtimev1pb.UnimplementedDaprServer
	f *Fake
}

// admit is Fake.admit for a gRPC call.
func (a *grpcAPI) admit(ctx context.Context, op, store string) error {
	var token, traceparent string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("dapr-api-token"); len(v) > 0 {
			token = v[0]
		}
		if v := md.Get("traceparent"); len(v) > 0 {
			traceparent = v[0]
		}
	}
	switch flt := a.f.admit(ctx, op, token, traceparent, store); flt {
	case nil:
		return nil
	case errGone:
		return status.FromContextError(ctx.Err()).Err()
	default:
		return flt.grpcErr()
	}
}

func (a *grpcAPI) GetState(ctx context.Context, in *runtimev1pb.GetStateRequest) (*runtimev1pb.GetStateResponse, error) {
	if err := a.admit(ctx, OpGet, in.GetStoreName()); err != nil {
		return nil, err
	}
	a.f.mu.Lock()
	it, ok := a.f.lookup(in.GetKey())
	a.f.mu.Unlock()
	if !ok {
		// daprd answers a missing key with no data and no ETag.
		return &runtimev1pb.GetStateResponse{}, nil
	}
	return &runtimev1pb.GetStateResponse{
		Data: append([]byte(nil), it.doc...),
		Etag: strconv.FormatUint(it.etag, 10),
	}, nil
}

func (a *grpcAPI) GetBulkState(ctx context.Context, in *runtimev1pb.GetBulkStateRequest) (*runtimev1pb.GetBulkStateResponse, error) {
	if err := a.admit(ctx, OpGetBulk, in.GetStoreName()); err != nil {
		return nil, err
	}
	out := &runtimev1pb.GetBulkStateResponse{Items: make([]*runtimev1pb.BulkStateItem, len(in.GetKeys()))}
	a.f.mu.Lock()
	for i, k := range in.GetKeys() {
		item := &runtimev1pb.BulkStateItem{Key: k}
		// A missing key has no data and no ETag, as daprd answers it.
		if it, ok := a.f.lookup(k); ok {
			item.Data, item.Etag = append([]byte(nil), it.doc...), strconv.FormatUint(it.etag, 10)
		}
		out.Items[i] = item
	}
	a.f.mu.Unlock()
	return out, nil
}

func (a *grpcAPI) SaveState(ctx context.Context, in *runtimev1pb.SaveStateRequest) (*emptypb.Empty, error) {
	if err := a.admit(ctx, OpSave, in.GetStoreName()); err != nil {
		return nil, err
	}
	writes := make([]write, 0, len(in.GetStates()))
	for _, s := range in.GetStates() {
		if s.GetKey() == "" {
			return nil, (&fault{http.StatusBadRequest, "ERR_STATE_SAVE", "state key cannot be empty"}).grpcErr()
		}
		lastWrite := s.GetOptions().GetConcurrency() == commonv1pb.StateOptions_CONCURRENCY_LAST_WRITE
		// The value is stored as the bytes sent, as daprd does without a
		// contentType.
		doc := append([]byte(nil), s.GetValue()...)
		wr, flt := newWrite(s.GetKey(), doc, s.GetEtag().GetValue(), lastWrite, s.GetMetadata())
		if flt != nil {
			return nil, flt.grpcErr()
		}
		writes = append(writes, wr)
	}
	if flt := a.f.apply(writes); flt != nil {
		return nil, flt.grpcErr()
	}
	return &emptypb.Empty{}, nil
}

func (a *grpcAPI) DeleteState(ctx context.Context, in *runtimev1pb.DeleteStateRequest) (*emptypb.Empty, error) {
	if err := a.admit(ctx, OpDelete, in.GetStoreName()); err != nil {
		return nil, err
	}
	etag := in.GetEtag().GetValue()
	if in.GetOptions().GetConcurrency() == commonv1pb.StateOptions_CONCURRENCY_LAST_WRITE {
		etag = ""
	}
	if flt := a.f.remove(in.GetKey(), etag); flt != nil {
		return nil, flt.grpcErr()
	}
	return &emptypb.Empty{}, nil
}

// GetMetadata lists the one state store, as daprd's does.
func (a *grpcAPI) GetMetadata(ctx context.Context, _ *runtimev1pb.GetMetadataRequest) (*runtimev1pb.GetMetadataResponse, error) {
	if err := a.admit(ctx, OpMetadata, ""); err != nil {
		return nil, err
	}
	a.f.mu.Lock()
	store := a.f.store
	a.f.mu.Unlock()
	return &runtimev1pb.GetMetadataResponse{
		Id: "daprfake",
		RegisteredComponents: []*runtimev1pb.RegisteredComponents{
			{Name: store, Type: "state.in-memory", Version: "v1"},
		},
	}, nil
}

// countingListener counts the gRPC server's connections with the HTTP
// server's.
type countingListener struct {
	net.Listener
	f *Fake
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.f.connOpened()
	return &countedConn{Conn: c, f: l.f}, nil
}

type countedConn struct {
	net.Conn
	f    *Fake
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.f.connClosed)
	return err
}
