package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statetest"
)

// The SDK store keeps the contract every state store of the worker keeps,
// against the fake's gRPC API as against daprd's.
func TestSDKStoreContract(t *testing.T) {
	statetest.RunStoreContract(t, func(t *testing.T) (statetest.Store, *daprfake.Fake) {
		if strings.HasSuffix(t.Name(), "/BulkArgumentsChecked") {
			// Those checks are statepool.Client's, before it calls daprd;
			// the peer's store is one call per key, and cartcache never
			// sends an empty key, a value that is no JSON or too many keys.
			t.Skip("argument checks are the worker's client's")
		}
		return newFakeStore(t)
	})
}

// newFakeStore is the peer's store against a daprfake's gRPC API, as
// against its daprd's.
func newFakeStore(t *testing.T) (cartcache.Store, *daprfake.Fake) {
	t.Helper()
	fake := daprfake.New()
	t.Cleanup(fake.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, closeStore, err := newSDKStore(ctx, fake.GRPCAddr(), daprfake.DefaultStoreName)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeStore)
	return store, fake
}

func TestTTLMetadataRoundsUp(t *testing.T) {
	if m := ttlMetadata(0); m != nil {
		t.Errorf("no TTL: %v", m)
	}
	if m := ttlMetadata(1500 * time.Millisecond); m["ttlInSeconds"] != "2" {
		t.Errorf("1.5s: %v", m)
	}
}
