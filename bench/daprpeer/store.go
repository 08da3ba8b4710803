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

// newSDKStore is the peer's state store: the Dapr Go SDK's client to its
// own daprd's gRPC API at addr, as a cartcache.Store that makes one call
// per key (statepool.OneByOne), so that cartcache runs the worker's
// read-modify-write with ETag over the SDK's GetState and SaveState.
func newSDKStore(ctx context.Context, addr, store string) (cartcache.Store, func(), error) {
	// The SDK logs its start-up on stdout; keep it quiet.
	dapr.SetLogger(nil)
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := dapr.NewClientWithAddressContext(cctx, addr)
	if err != nil {
		return nil, nil, fmt.Errorf("go-sdk client for %s: %w", addr, err)
	}
	return statepool.OneByOne{Single: sdkState{c: c, store: store}}, c.Close, nil
}

// sdkState is statepool.Single over the SDK client: daprd's answers become
// statepool's errors, which is what cartcache tells apart.
type sdkState struct {
	c     dapr.Client
	store string
}

var _ statepool.Single = sdkState{}

// Get reads key; daprd answers a missing key with an empty item.
func (s sdkState) Get(ctx context.Context, key string) (statepool.Entry, error) {
	item, err := s.c.GetState(ctx, s.store, key, nil)
	switch {
	case err != nil:
		return statepool.Entry{}, mapCode(err)
	case item == nil || (item.Etag == "" && len(item.Value) == 0):
		return statepool.Entry{}, statepool.ErrNotFound
	}
	return statepool.Entry{Value: item.Value, ETag: item.Etag}, nil
}

// Save writes key, guarded by opts.ETag with first-write concurrency when
// there is one, as the worker saves.
func (s sdkState) Save(ctx context.Context, key string, value []byte, opts statepool.SaveOptions) error {
	meta := ttlMetadata(opts.TTL)
	if opts.ETag == "" {
		return mapCode(s.c.SaveState(ctx, s.store, key, value, meta))
	}
	return mapCode(s.c.SaveStateWithETag(ctx, s.store, key, value, opts.ETag, meta,
		dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite)))
}

// Delete removes key, guarded by etag when there is one; a key already
// gone is no error, as with the worker's client.
func (s sdkState) Delete(ctx context.Context, key, etag string) error {
	var err error
	if etag == "" {
		err = s.c.DeleteState(ctx, s.store, key, nil)
	} else {
		err = s.c.DeleteStateWithETag(ctx, s.store, key, &dapr.ETag{Value: etag}, nil,
			&dapr.StateOptions{Concurrency: dapr.StateConcurrencyFirstWrite})
	}
	if status.Code(err) == codes.NotFound {
		return nil
	}
	return mapCode(err)
}

// ttlMetadata is the ttlInSeconds metadata of ttl, nil for none. Dapr
// counts whole seconds: rounded up, so an item never outlives less than
// asked.
func ttlMetadata(ttl time.Duration) map[string]string {
	if ttl <= 0 {
		return nil
	}
	return map[string]string{"ttlInSeconds": strconv.FormatInt(int64((ttl+time.Second-1)/time.Second), 10)}
}

// mapCode turns daprd's gRPC codes into statepool's errors: Aborted is an
// ETag mismatch, InvalidArgument a request daprd refuses.
func mapCode(err error) error {
	switch status.Code(err) {
	case codes.OK:
		return nil
	case codes.Aborted:
		return fmt.Errorf("%w: %w", statepool.ErrETagMismatch, err)
	case codes.InvalidArgument:
		return fmt.Errorf("%w: %w", statepool.ErrBadRequest, err)
	}
	return err
}
