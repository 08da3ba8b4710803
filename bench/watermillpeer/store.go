package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/statepool"
)

// The state transports.
const (
	protocolGRPC = "grpc"
	protocolHTTP = "http"
)

// newStore returns the state store over the chosen transport: the
// worker's pooled HTTP client as the worker builds it by default, or one
// Dapr Go SDK client over gRPC.
func newStore(ctx context.Context, cfg config) (cartcache.Store, func(), error) {
	if cfg.protocol == protocolHTTP {
		c, err := statepool.New(statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: cfg.daprHTTP, StoreName: cfg.store, Mode: statepool.ModePooled})
		if err != nil {
			return nil, nil, err
		}
		return c, c.Close, nil
	}
	// The SDK logs its start-up on stdout; keep it quiet.
	dapr.SetLogger(nil)
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := dapr.NewClientWithAddressContext(cctx, cfg.daprGRPC)
	if err != nil {
		return nil, nil, fmt.Errorf("go-sdk client for %s: %w", cfg.daprGRPC, err)
	}
	return statepool.OneByOne{Single: &sdkStore{c: c, store: cfg.store}}, c.Close, nil
}

// sdkStore is the single-key calls of the worker's state-store contract
// over the go-sdk client (statepool.OneByOne makes it a cartcache.Store),
// with daprd's gRPC answers mapped to statepool's errors so that the ETag
// loop of cartcache re-reads on a conflict.
type sdkStore struct {
	c     dapr.Client
	store string
}

var _ statepool.Single = (*sdkStore)(nil)

func (o *sdkStore) Get(ctx context.Context, key string) (statepool.Entry, error) {
	item, err := o.c.GetState(ctx, o.store, key, nil)
	if err != nil {
		return statepool.Entry{}, sdkError(err)
	}
	// A missing key comes back as an empty item.
	if item == nil || (len(item.Value) == 0 && item.Etag == "") {
		return statepool.Entry{}, statepool.ErrNotFound
	}
	return statepool.Entry{Value: item.Value, ETag: item.Etag}, nil
}

func (o *sdkStore) Save(ctx context.Context, key string, value []byte, opts statepool.SaveOptions) error {
	var meta map[string]string
	if opts.TTL > 0 {
		// Dapr counts whole seconds: round up, as the worker's client does.
		secs := int64((opts.TTL + time.Second - 1) / time.Second)
		meta = map[string]string{"ttlInSeconds": strconv.FormatInt(secs, 10)}
	}
	var err error
	if opts.ETag != "" {
		err = o.c.SaveStateWithETag(ctx, o.store, key, value, opts.ETag, meta, dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite))
	} else {
		err = o.c.SaveState(ctx, o.store, key, value, meta)
	}
	return sdkError(err)
}

func (o *sdkStore) Delete(ctx context.Context, key, etag string) error {
	if etag == "" {
		return sdkError(o.c.DeleteState(ctx, o.store, key, nil))
	}
	err := o.c.DeleteStateWithETag(ctx, o.store, key, &dapr.ETag{Value: etag}, nil,
		&dapr.StateOptions{Concurrency: dapr.StateConcurrencyFirstWrite})
	if status.Code(err) == codes.NotFound {
		return nil
	}
	return sdkError(err)
}

// sdkError maps daprd's gRPC codes: Aborted is an ETag mismatch,
// InvalidArgument a request daprd refuses (as HTTP 400).
func sdkError(err error) error {
	if err == nil {
		return nil
	}
	switch status.Code(err) {
	case codes.Aborted:
		return fmt.Errorf("%w: %w", statepool.ErrETagMismatch, err)
	case codes.InvalidArgument:
		return fmt.Errorf("%w: %w", statepool.ErrBadRequest, err)
	}
	return err
}
