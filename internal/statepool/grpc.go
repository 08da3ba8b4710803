package statepool

import (
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/status"
)

// metadataAPIToken is the gRPC metadata key daprd reads the token from;
// gRPC metadata keys are lower case.
const metadataAPIToken = "dapr-api-token"

// metadataTTL is the state item metadata key of a per-item TTL, in seconds,
// as in the HTTP API.
const metadataTTL = "ttlInSeconds"

// reconnectBackoff bounds how long the channel waits between attempts to
// reach a sidecar that is down. gRPC's default grows to two minutes, during
// which every call fails at once without trying: a daprd restarted after a
// few seconds would go unused for as long. The sidecar is local, so
// retrying every second at worst costs nothing.
var reconnectBackoff = backoff.Config{
	BaseDelay:  100 * time.Millisecond,
	Multiplier: 1.6,
	Jitter:     0.2,
	MaxDelay:   time.Second,
}

// flowWindow is the HTTP/2 flow-control window of the channel and of each
// call. Setting it turns off gRPC's bandwidth-delay estimation, which
// pings the server as data arrives to learn whether to grow the window past
// the default 64 KiB; to a sidecar on the loopback that buys nothing, and
// the pings cost both sides (12 of the 347 allocations of a get and save
// in BenchmarkClientRoundTrip/grpc). 1 MiB holds the largest cart.
const flowWindow = 1 << 20

// maxRecvMsg is the largest answer the channel takes. daprd sends no more
// than its max-body-size, 4 MiB unless its operator raised it.
const maxRecvMsg = 64 << 20

// grpcBackend calls daprd's gRPC API over the Client's one channel.
type grpcBackend struct {
	conn   *grpc.ClientConn
	api    runtimev1pb.DaprClient
	store  string
	closed atomic.Bool
}

var _ backend = (*grpcBackend)(nil)

// newGRPCBackend creates the channel; it dials lazily, on the first call,
// so New succeeds with daprd not yet up, as with HTTP. cfg has its
// defaults applied and has passed Validate.
func newGRPCBackend(cfg Config) (*grpcBackend, error) {
	target, err := parseGRPCEndpoint(cfg.GRPCEndpoint)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: tcpKeepAlive}
	onDial := cfg.Hooks.OnDial
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		conn, err := dialer.DialContext(ctx, "tcp", addr)
		if err == nil && onDial != nil {
			onDial()
		}
		return conn, err
	}
	creds := insecure.NewCredentials()
	if target.tls {
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	buffers := &grpcBuffers{}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(dial),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: reconnectBackoff, MinConnectTimeout: cfg.DialTimeout}),
		grpc.WithIdleTimeout(cfg.IdleConnTimeout),
		grpc.WithUserAgent("cartworker"),
		grpc.WithInitialWindowSize(flowWindow),
		grpc.WithInitialConnWindowSize(flowWindow),
		// A bulk read answers with several carts at once: take as much as
		// daprd may send (its max-body-size), not gRPC's 4 MiB default.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsg), grpc.ForceCodecV2(protoCodec{pool: buffers})),
		grpc.WithUnaryInterceptor(newTracing(cfg.TracerProvider, target.addr).unaryInterceptor),
		experimental.WithBufferPool(buffers),
	}
	if cfg.APIToken != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tokenCreds{metadataAPIToken: cfg.APIToken}))
	}
	// passthrough hands the address to the dialer as written, which
	// resolves it like the HTTP transport does.
	conn, err := grpc.NewClient("passthrough:///"+target.addr, opts...)
	if err != nil {
		return nil, err
	}
	return &grpcBackend{conn: conn, api: runtimev1pb.NewDaprClient(conn), store: cfg.StoreName}, nil
}

func (g *grpcBackend) close() {
	if g.closed.CompareAndSwap(false, true) {
		_ = g.conn.Close()
	}
}

// tokenCreds sends the API token as dapr-api-token metadata on every call.
// The map is built once and only read by gRPC.
type tokenCreds map[string]string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return t, nil
}

// RequireTransportSecurity is false: daprd's gRPC API on the loopback or the
// pod network is plaintext, as with HTTP.
func (tokenCreds) RequireTransportSecurity() bool { return false }

// saveMessages and deleteMessages are one call's request messages,
// allocated together rather than one by one.
type (
	saveMessages struct {
		req    runtimev1pb.SaveStateRequest
		item   commonv1pb.StateItem
		states [1]*commonv1pb.StateItem
		etag   commonv1pb.Etag
		opts   commonv1pb.StateOptions
	}
	deleteMessages struct {
		req  runtimev1pb.DeleteStateRequest
		etag commonv1pb.Etag
		opts commonv1pb.StateOptions
	}
)

func (g *grpcBackend) get(ctx context.Context, k call) (Entry, error) {
	var resp *runtimev1pb.GetStateResponse
	err := g.send(ctx, k, nil, func(ctx context.Context) (err error) {
		resp, err = g.api.GetState(ctx, &runtimev1pb.GetStateRequest{StoreName: g.store, Key: k.key})
		return err
	})
	if err != nil {
		return Entry{}, err
	}
	// daprd answers a missing key with OK, no data and no ETag.
	if len(resp.GetData()) == 0 {
		return Entry{}, ErrNotFound
	}
	return Entry{Value: resp.GetData(), ETag: resp.GetEtag()}, nil
}

// save sends the value as raw bytes, without a contentType: daprd stores
// them as they are, where the HTTP API decodes the JSON and encodes it
// again. Either reads back as the same JSON document.
func (g *grpcBackend) save(ctx context.Context, k call, value []byte, opts SaveOptions) error {
	m := new(saveMessages)
	m.fill(k.key, value, opts)
	m.states[0] = &m.item
	m.req.StoreName = g.store
	m.req.States = m.states[:]
	return g.send(ctx, k, ErrETagMismatch, func(ctx context.Context) error {
		_, err := g.api.SaveState(ctx, &m.req)
		return err
	})
}

// fill sets the item for a save of value at key with opts.
func (m *saveMessages) fill(key string, value []byte, opts SaveOptions) {
	m.item.Key = key
	m.item.Value = value
	if opts.ETag != "" {
		m.etag.Value = opts.ETag
		m.item.Etag = &m.etag
		m.opts.Concurrency = commonv1pb.StateOptions_CONCURRENCY_FIRST_WRITE
		m.item.Options = &m.opts
	}
	if opts.TTL > 0 {
		secs := int64((opts.TTL + time.Second - 1) / time.Second)
		m.item.Metadata = map[string]string{metadataTTL: strconv.FormatInt(secs, 10)}
	}
}

// saveBulk is save's SaveState with every item in it.
func (g *grpcBackend) saveBulk(ctx context.Context, k call, items []SaveItem) error {
	// One allocation for every item's messages.
	ms := make([]saveMessages, len(items))
	states := make([]*commonv1pb.StateItem, len(items))
	for i, it := range items {
		ms[i].fill(it.Key, it.Value, it.Opts)
		states[i] = &ms[i].item
	}
	req := &runtimev1pb.SaveStateRequest{StoreName: g.store, States: states}
	return g.send(ctx, k, ErrETagMismatch, func(ctx context.Context) error {
		_, err := g.api.SaveState(ctx, req)
		return err
	})
}

func (g *grpcBackend) delete(ctx context.Context, k call, etag string) error {
	m := new(deleteMessages)
	m.req.StoreName = g.store
	m.req.Key = k.key
	if etag != "" {
		m.etag.Value = etag
		m.opts.Concurrency = commonv1pb.StateOptions_CONCURRENCY_FIRST_WRITE
		m.req.Etag, m.req.Options = &m.etag, &m.opts
	}
	return g.send(ctx, k, ErrETagMismatch, func(ctx context.Context) error {
		_, err := g.api.DeleteState(ctx, &m.req)
		return err
	})
}

func (g *grpcBackend) getBulk(ctx context.Context, k call, keys []string) ([]BulkEntry, error) {
	var resp *runtimev1pb.GetBulkStateResponse
	err := g.send(ctx, k, nil, func(ctx context.Context) (err error) {
		resp, err = g.api.GetBulkState(ctx, &runtimev1pb.GetBulkStateRequest{StoreName: g.store, Keys: keys})
		return err
	})
	if err != nil {
		return nil, err
	}
	items := resp.GetItems()
	return matchBulk(keys, len(items), func(i int) (string, []byte, string, string) {
		it := items[i]
		return it.GetKey(), it.GetData(), it.GetEtag(), it.GetError()
	})
}

// components asks the GetMetadata RPC, which daprd guards with the API
// token like the state calls.
func (g *grpcBackend) components(ctx context.Context, k call) ([]component, error) {
	var md *runtimev1pb.GetMetadataResponse
	err := g.send(ctx, k, nil, func(ctx context.Context) (err error) {
		md, err = g.api.GetMetadata(ctx, &runtimev1pb.GetMetadataRequest{})
		return err
	})
	if err != nil {
		return nil, err
	}
	listed := md.GetRegisteredComponents()
	comps := make([]component, len(listed))
	for i, rc := range listed {
		comps[i] = component{Name: rc.GetName(), Type: rc.GetType()}
	}
	return comps, nil
}

// send makes call k as the one RPC rpc sends: not at all once the channel
// is closed (ErrClosed), otherwise bounded by the call's timeout and
// reported. mismatch is what Aborted means for the call, as for rpcErr.
func (g *grpcBackend) send(ctx context.Context, k call, mismatch error, rpc func(context.Context) error) error {
	if g.closed.Load() {
		return k.wrap(ErrClosed)
	}
	ctx, cancel := k.bound(ctx)
	defer cancel()
	if err := rpc(ctx); err != nil {
		return g.rpcErr(ctx, k, err, mismatch)
	}
	k.report(codes.OK.String())
	return nil
}

// rpcErr turns a failed call's error into the client's errors and reports
// the call. mismatch, when set, is what Aborted means for the operation:
// daprd answers an ETag mismatch with it.
func (g *grpcBackend) rpcErr(ctx context.Context, k call, err error, mismatch error) error {
	st, _ := status.FromError(err)
	code := st.Code()
	k.report(code.String())
	// The call's own deadline or its caller's cancellation: report it as
	// the context's error, as the HTTP backend does, so that errors.Is and
	// the breaker see a timeout or a cancellation.
	if code == codes.DeadlineExceeded || code == codes.Canceled {
		awaitDeadline(ctx, code)
		if ctxErr := ctx.Err(); ctxErr != nil {
			return k.wrap(ctxErr)
		}
	}
	if code == codes.Aborted && mismatch != nil {
		return mismatch
	}
	reason := errorInfoReason(st)
	return &GRPCError{
		Op:        k.op,
		Key:       k.key,
		Code:      code,
		Message:   st.Message(),
		ErrorCode: reason,
		// Unavailable without a ready connection comes from the client's
		// side: the channel could not connect (refused, timed out, or
		// something that is no gRPC server answered), or lost its
		// connection. daprd answering Unavailable itself leaves the
		// connection ready, and names its error in an ErrorInfo, which a
		// status made by the client never has: the channel's state alone
		// can lag the call, since gRPC lets calls through the new
		// connection a moment before it reports the state Ready.
		unreachable: code == codes.Unavailable && reason == "" && g.conn.GetState() != connectivity.Ready,
	}
}

// deadlineSlack is how close to the call's deadline a DeadlineExceeded
// status counts as that deadline passing.
const deadlineSlack = 50 * time.Millisecond

// awaitDeadline waits for ctx's deadline when the server has just answered
// DeadlineExceeded for it. gRPC sends the deadline along with the call, and
// the server's timer can fire a moment before the client's, so the status
// may arrive while ctx has not yet ended; the caller, the breaker above
// all, must then still see its own deadline passed, not a server fault.
func awaitDeadline(ctx context.Context, code codes.Code) {
	if code != codes.DeadlineExceeded || ctx.Err() != nil {
		return
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) < deadlineSlack {
		<-ctx.Done()
	}
}

// errorInfoReason returns the reason of the status's ErrorInfo detail, where
// daprd puts its error code (ERR_STATE_SAVE, DAPR_STATE_NOT_FOUND, ...).
func errorInfoReason(st *status.Status) string {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei.GetReason()
		}
	}
	return ""
}

// GRPCError is returned when daprd's gRPC API answers a call with a status
// the operation does not expect and that has no sentinel of its own, or
// when the channel cannot reach daprd. It is the gRPC twin of StatusError.
type GRPCError struct {
	// Op is the operation: OpGet, OpSave, OpDelete, OpGetBulk, OpSaveBulk
	// or OpCheck.
	Op string
	// Key is the state key the call was for.
	Key string
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the status message.
	Message string
	// ErrorCode is the reason of the status's ErrorInfo detail, Dapr's
	// error code: ERR_STATE_SAVE, DAPR_STATE_NOT_FOUND, ...; "" when the
	// status carried none.
	ErrorCode string

	// unreachable: the channel had no connection to daprd, so the
	// Unavailable status came from the client's side.
	unreachable bool
}

// Unwrap returns the class of the failure, so errors.Is matches
// ErrUnreachable, ErrStoreNotFound, ErrUnauthorized, ErrBadRequest, or for
// ResourceExhausted ErrTooLarge on a save and ErrResourceExhausted on any
// other call; nil for other codes.
func (e *GRPCError) Unwrap() error {
	switch {
	case e.unreachable:
		return ErrUnreachable
	case storeNotFoundCodes[e.ErrorCode]:
		return ErrStoreNotFound
	case e.Code == codes.Unauthenticated || e.Code == codes.PermissionDenied:
		return ErrUnauthorized
	case e.Code == codes.InvalidArgument:
		return ErrBadRequest
	case e.Code == codes.ResourceExhausted:
		return sizeRefusal(e.Op)
	}
	return nil
}

// GRPCStatus lets status.FromError and status.Code read the code.
func (e *GRPCError) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// Error implements error.
func (e *GRPCError) Error() string {
	var b strings.Builder
	b.WriteString("statepool: ")
	b.WriteString(e.Op)
	b.WriteByte(' ')
	b.WriteString(strconv.Quote(e.Key))
	if e.unreachable {
		b.WriteString(": daprd not reachable")
	}
	b.WriteString(": grpc status ")
	b.WriteString(e.Code.String())
	if e.ErrorCode != "" {
		b.WriteString(" ")
		b.WriteString(e.ErrorCode)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}
