//go:build integration

package integration

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/cartworker/cartworker/cartworkertest"
	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// The gRPC transport of statepool.Client against daprd 1.18.0 with its
// Redis state store (deployments/dapr/components/cartstore.yaml), side by
// side with the HTTP transport. What daprd answered when these tests were
// written is recorded next to each case, as "gRPC <code> [<ErrorInfo
// reason>] / HTTP <status>".

// codedClient is a state client that records the code of its last call
// (statepool.Hooks.OnRequest: the gRPC code name, or the HTTP status).
type codedClient struct {
	*statepool.Client
	mu   sync.Mutex
	last string
}

func newCodedClient(t *testing.T, cfg statepool.Config) *codedClient {
	t.Helper()
	c := &codedClient{}
	cfg.Hooks.OnRequest = func(_, code string, _ time.Duration) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.last = code
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	var err error
	c.Client, err = statepool.New(cfg)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func (c *codedClient) code() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

func grpcStateConfig(st *stack) statepool.Config {
	return statepool.Config{Protocol: statepool.ProtocolGRPC, GRPCEndpoint: st.DaprGRPCEndpoint(), APIToken: st.DaprToken()}
}

func httpStateConfig(st *stack) statepool.Config {
	return statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: st.DaprHTTPEndpoint(), APIToken: st.DaprToken()}
}

// transports are the two protocols under test, each with the code daprd
// answers it for the same outcome.
var transports = []struct {
	name string
	cfg  func(*stack) statepool.Config
}{
	{"grpc", grpcStateConfig},
	{"http", httpStateConfig},
}

// codeOf picks the code of the transport under test.
func codeOf(transport, grpcCode, httpStatus string) string {
	if transport == "grpc" {
		return grpcCode
	}
	return httpStatus
}

const (
	grpcCartV1 = `{"id":"c-1","items":[{"sku":"A-1","qty":2,"price":19.98}],"note":"caf\u00e9 \"x\""}`
	grpcCartV2 = `{"id":"c-1","items":[]}`
)

// TestGRPCStoreContract runs the cases of the state store contract
// (internal/statetest) against the real daprd, over gRPC and, for
// comparison, HTTP. Documents are seeded and inspected through the other
// transport and in Redis, which also shows that the two read and write
// the same store with the same ETags.
//
// Two cases differ from internal/daprfake, which is stricter than daprd's
// Redis store: an ETag on a key that does not exist is no conflict there,
// for a save or a delete (the Lua scripts of state.redis accept a missing
// version). The contract suite keeps the stricter rule; no caller may rely
// on either.
func TestGRPCStoreContract(t *testing.T) {
	ctx := testkit.Context(t, 3*time.Minute)
	st := sharedStack(t)
	clients := map[string]*codedClient{
		"grpc": newCodedClient(t, grpcStateConfig(st)),
		"http": newCodedClient(t, httpStateConfig(st)),
	}

	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			s := clients[tr.name]
			other := clients["http"]
			if tr.name == "http" {
				other = clients["grpc"]
			}
			code := func(grpcCode, httpStatus string) string { return codeOf(tr.name, grpcCode, httpStatus) }
			key := func() string { return "grpc-contract-" + tr.name + "-" + randomHex(4) }
			seed := func(t *testing.T, k, doc string) string {
				t.Helper()
				require.NoError(t, other.Save(ctx, k, []byte(doc), statepool.SaveOptions{}))
				e, err := other.Get(ctx, k)
				require.NoError(t, err)
				return e.ETag
			}
			// requireStored reads k through the other protocol and
			// requires it to hold doc.
			requireStored := func(t *testing.T, k, doc string, msgAndArgs ...any) {
				t.Helper()
				e, err := other.Get(ctx, k)
				require.NoError(t, err, msgAndArgs...)
				require.JSONEq(t, doc, string(e.Value), msgAndArgs...)
			}
			// requireConflict requires err to be daprd's ETag mismatch,
			// which is no fault of the store: not a breaker failure.
			requireConflict := func(t *testing.T, err error) {
				t.Helper()
				require.ErrorIs(t, err, statepool.ErrETagMismatch)
				require.Equal(t, code("Aborted", "409"), s.code())
				require.False(t, breaker.IsFailure(err))
			}

			t.Run("GetMissingIsNotFound", func(t *testing.T) {
				// gRPC OK, empty data and ETag / HTTP 204.
				_, err := s.Get(ctx, key())
				require.ErrorIs(t, err, statepool.ErrNotFound)
				require.Equal(t, code("OK", "204"), s.code())
			})

			t.Run("SaveThenGetRoundTrips", func(t *testing.T) {
				k := key()
				require.NoError(t, s.Save(ctx, k, []byte(grpcCartV1), statepool.SaveOptions{}))
				require.Equal(t, code("OK", "204"), s.code())
				got, err := s.Get(ctx, k)
				require.NoError(t, err)
				require.Equal(t, code("OK", "200"), s.code())
				require.JSONEq(t, grpcCartV1, string(got.Value))
				require.NotEmpty(t, got.ETag)

				seen, err := other.Get(ctx, k)
				require.NoError(t, err)
				require.JSONEq(t, grpcCartV1, string(seen.Value), "the other protocol reads the same document")
				require.Equal(t, got.ETag, seen.ETag, "and the same ETag")

				stored := st.redisCLI(ctx, t, "HGET", redisKey(k), "data")
				require.JSONEq(t, grpcCartV1, stored, "stored as a document, not a JSON string")
				if tr.name == "grpc" {
					// gRPC values are bytes: daprd stores them as sent. Over
					// HTTP it decodes the JSON and encodes it again
					// (1.50 would come back 1.5).
					require.Equal(t, grpcCartV1, stored)
				}
			})

			t.Run("SaveWithCurrentETag", func(t *testing.T) {
				k := key()
				first := seed(t, k, grpcCartV1)
				require.NoError(t, s.Save(ctx, k, []byte(grpcCartV2), statepool.SaveOptions{ETag: first}))
				second, err := s.Get(ctx, k)
				require.NoError(t, err)
				require.JSONEq(t, grpcCartV2, string(second.Value))
				require.NotEqual(t, first, second.ETag)
			})

			t.Run("SaveWithStaleETagConflicts", func(t *testing.T) {
				// gRPC Aborted ERR_STATE_SAVE "failed saving state in state
				// store cartstore: possible etag mismatch. error from state
				// store: ..." / HTTP 409 ERR_STATE_SAVE.
				k := key()
				stale := seed(t, k, grpcCartV1)
				seed(t, k, grpcCartV1)
				err := s.Save(ctx, k, []byte(grpcCartV2), statepool.SaveOptions{ETag: stale})
				requireConflict(t, err)
				requireStored(t, k, grpcCartV1, "a rejected save must not write")
			})

			t.Run("SaveWithETagOnMissingKeyWrites", func(t *testing.T) {
				// gRPC OK / HTTP 204: unlike daprfake, Redis takes it.
				k := key()
				require.NoError(t, s.Save(ctx, k, []byte(grpcCartV1), statepool.SaveOptions{ETag: "1"}))
				require.Equal(t, code("OK", "204"), s.code())
				_, err := other.Get(ctx, k)
				require.NoError(t, err)
			})

			t.Run("SaveWithMalformedETagIsBadRequest", func(t *testing.T) {
				// gRPC InvalidArgument ERR_STATE_SAVE "failed saving state in
				// state store cartstore: invalid etag value: strconv.Atoi:
				// parsing "abc": invalid syntax" / HTTP 400 ERR_STATE_SAVE.
				k := key()
				seed(t, k, grpcCartV1)
				err := s.Save(ctx, k, []byte(grpcCartV2), statepool.SaveOptions{ETag: "abc"})
				require.ErrorIs(t, err, statepool.ErrBadRequest)
				require.Equal(t, code("InvalidArgument", "400"), s.code())
				require.False(t, breaker.IsFailure(err))
				if tr.name == "grpc" {
					var ge *statepool.GRPCError
					require.ErrorAs(t, err, &ge)
					require.Equal(t, codes.InvalidArgument, ge.Code)
					require.Equal(t, "ERR_STATE_SAVE", ge.ErrorCode)
					require.Contains(t, ge.Message, "invalid etag value")
				}
			})

			t.Run("DeleteWithStaleETagConflicts", func(t *testing.T) {
				// gRPC Aborted ERR_STATE_DELETE / HTTP 409 ERR_STATE_DELETE.
				k := key()
				stale := seed(t, k, grpcCartV1)
				seed(t, k, grpcCartV2)
				requireConflict(t, s.Delete(ctx, k, stale))
				requireStored(t, k, grpcCartV2, "a rejected delete must not delete")
			})

			t.Run("DeleteWithMalformedETagConflicts", func(t *testing.T) {
				// gRPC Aborted / HTTP 409: Redis's delete script compares the
				// ETag as a string, so "abc" is merely stale.
				k := key()
				seed(t, k, grpcCartV1)
				requireConflict(t, s.Delete(ctx, k, "abc"))
			})

			t.Run("DeleteThenGetIsNotFound", func(t *testing.T) {
				k := key()
				etag := seed(t, k, grpcCartV1)
				require.NoError(t, s.Delete(ctx, k, etag))
				require.Equal(t, code("OK", "204"), s.code())
				_, err := s.Get(ctx, k)
				require.ErrorIs(t, err, statepool.ErrNotFound)
				require.Equal(t, "0", st.redisCLI(ctx, t, "EXISTS", redisKey(k)))
			})

			t.Run("DeleteMissingSucceeds", func(t *testing.T) {
				require.NoError(t, s.Delete(ctx, key(), ""))
				require.Equal(t, code("OK", "204"), s.code())
				// With an ETag too, unlike daprfake.
				require.NoError(t, s.Delete(ctx, key(), "5"))
				require.Equal(t, code("OK", "204"), s.code())
			})

			t.Run("TTLSentAsMetadata", func(t *testing.T) {
				k := key()
				require.NoError(t, s.Save(ctx, k, []byte(grpcCartV1), statepool.SaveOptions{TTL: 90 * time.Second}))
				ttl, err := strconv.Atoi(st.redisCLI(ctx, t, "TTL", redisKey(k)))
				require.NoError(t, err)
				require.InDelta(t, 90, ttl, 5, "ttlInSeconds reached Redis")

				// Without one, the component's store-wide 10 h applies.
				k = key()
				require.NoError(t, s.Save(ctx, k, []byte(grpcCartV1), statepool.SaveOptions{}))
				ttl, err = strconv.Atoi(st.redisCLI(ctx, t, "TTL", redisKey(k)))
				require.NoError(t, err)
				require.InDelta(t, 36000, ttl, 5)
			})

			t.Run("OddKeysRoundTrip", func(t *testing.T) {
				for _, k := range []string{"c-1_A", "cart:42", "c.1~x", "C-0001", "a/b", "a b", "ünï"} {
					k := "grpc-odd-" + tr.name + "-" + randomHex(2) + "-" + k
					require.NoError(t, s.Save(ctx, k, []byte(grpcCartV1), statepool.SaveOptions{}))
					require.Equal(t, "1", st.redisCLI(ctx, t, "EXISTS", redisKey(k)), "stored under a different key: %q", k)
					e, err := other.Get(ctx, k)
					require.NoError(t, err, k)
					require.JSONEq(t, grpcCartV1, string(e.Value))
					require.NoError(t, s.Delete(ctx, k, e.ETag), k)
					require.Equal(t, "0", st.redisCLI(ctx, t, "EXISTS", redisKey(k)))
				}
			})

			t.Run("ConcurrentSavesSameETagOneWins", func(t *testing.T) {
				const writers = 16
				k := key()
				etag := seed(t, k, grpcCartV1)
				errs := make([]error, writers)
				var wg sync.WaitGroup
				start := make(chan struct{})
				for i := range writers {
					wg.Go(func() {
						<-start
						errs[i] = s.Save(ctx, k, []byte(grpcCartV2), statepool.SaveOptions{ETag: etag})
					})
				}
				close(start)
				wg.Wait()
				wins := 0
				for _, err := range errs {
					switch {
					case err == nil:
						wins++
					case errors.Is(err, statepool.ErrETagMismatch):
					default:
						require.NoError(t, err, "losers must see ErrETagMismatch")
					}
				}
				require.Equal(t, 1, wins)
			})

			t.Run("BulkReadThenGuardedBulkSave", func(t *testing.T) {
				// gRPC OK / HTTP 200 for the read, OK / 204 for the save.
				k1, k2, missing := key(), key(), key()
				e1, e2 := seed(t, k1, grpcCartV1), seed(t, k2, grpcCartV2)
				got, err := s.GetBulk(ctx, []string{k1, missing, k2})
				require.NoError(t, err)
				require.Equal(t, code("OK", "200"), s.code())
				require.Len(t, got, 3)
				require.NoError(t, got[0].Err)
				require.JSONEq(t, grpcCartV1, string(got[0].Value))
				require.Equal(t, e1, got[0].ETag, "a bulk read's ETag is Get's")
				require.ErrorIs(t, got[1].Err, statepool.ErrNotFound)
				require.Equal(t, e2, got[2].ETag)

				require.NoError(t, s.SaveBulk(ctx, []statepool.SaveItem{
					{Key: k1, Value: []byte(grpcCartV2), Opts: statepool.SaveOptions{ETag: e1}},
					{Key: k2, Value: []byte(grpcCartV1), Opts: statepool.SaveOptions{ETag: e2}},
					{Key: missing, Value: []byte(grpcCartV1)},
				}))
				require.Equal(t, code("OK", "204"), s.code())
				for k, want := range map[string]string{k1: grpcCartV2, k2: grpcCartV1, missing: grpcCartV1} {
					requireStored(t, k, want, k)
				}
			})

			t.Run("BulkSaveWithAStaleETagWritesTheOthers", func(t *testing.T) {
				// gRPC Aborted / HTTP 409, and daprd writes the other items
				// all the same: it saves a bulk's items one by one
				// (state.DoBulkSetDelete), so the caller must read again.
				stale, fresh := key(), key()
				e := seed(t, stale, grpcCartV1)
				seed(t, stale, grpcCartV1) // e is stale now
				err := s.SaveBulk(ctx, []statepool.SaveItem{
					{Key: fresh, Value: []byte(grpcCartV2)},
					{Key: stale, Value: []byte(grpcCartV2), Opts: statepool.SaveOptions{ETag: e}},
				})
				requireConflict(t, err)
				requireStored(t, stale, grpcCartV1, "the stale item is not written")
				requireStored(t, fresh, grpcCartV2, "daprd wrote the other item")
			})

			t.Run("BulkReadOverDaprdsBodyLimit", func(t *testing.T) {
				// gRPC ResourceExhausted / HTTP 200: daprd sends at most its
				// max-body-size (4 MiB) per gRPC message, so three 1.5 MiB
				// documents cannot come back together over gRPC; cartcache
				// then reads them one by one. HTTP has no such limit.
				big := `{"pad":"` + strings.Repeat("x", 1536<<10) + `"}`
				keys := []string{key(), key(), key()}
				for _, k := range keys {
					seed(t, k, big)
				}
				got, err := s.GetBulk(ctx, keys)
				if tr.name == "grpc" {
					require.ErrorIs(t, err, statepool.ErrResourceExhausted)
					require.Equal(t, "ResourceExhausted", s.code())
					require.False(t, breaker.IsFailure(err), "a bulk read too big says nothing of daprd's health")
					return
				}
				require.NoError(t, err)
				require.Len(t, got, 3)
				require.Len(t, got[2].Value, len(big))
			})

			t.Run("UnconditionalSaveAfterFirstWriteFails", func(t *testing.T) {
				// gRPC Internal ERR_STATE_SAVE "failed to set key
				// cartworker||<key>: ERR user_script:14: failed to set key
				// ..." / HTTP 500 ERR_STATE_SAVE. state.redis marks a key
				// saved with first-write concurrency; a later save without
				// an ETag is refused, and daprd reports it as its own fault,
				// so the breaker counts it. cartcache never does this: only
				// a new cart is saved without an ETag, and tombstones
				// always are.
				k := key()
				seed(t, k, grpcCartV1)
				e, err := other.Get(ctx, k)
				require.NoError(t, err)
				require.NoError(t, other.Save(ctx, k, []byte(grpcCartV1), statepool.SaveOptions{ETag: e.ETag}))
				err = s.Save(ctx, k, []byte(grpcCartV2), statepool.SaveOptions{})
				require.Error(t, err)
				require.Equal(t, code("Internal", "500"), s.code())
				require.True(t, breaker.IsFailure(err))
			})
		})
	}
}

// TestGRPCErrorCodes classifies what daprd answers over gRPC when the
// worker's configuration or surroundings are wrong, on a stack of its own
// whose daprd requires an API token and whose Redis is stopped half way.
func TestGRPCErrorCodes(t *testing.T) {
	ctx := testkit.Context(t, 3*time.Minute)
	st := newTestStack(t, cartworkertest.WithDaprToken("tok-"+randomHex(16)))
	good := newCodedClient(t, grpcStateConfig(st))
	require.NoError(t, good.Check(ctx))
	require.Equal(t, "OK", good.code())
	_, err := good.Get(ctx, "nothing-"+randomHex(4))
	require.ErrorIs(t, err, statepool.ErrNotFound)

	t.Run("WrongToken", func(t *testing.T) {
		// gRPC Unauthenticated, message "Unauthorized", ErrorInfo reason
		// "Unauthorized" (daprd's token check answers in HTTP terms) /
		// HTTP 401 "invalid api token", not JSON. The same with no token.
		for name, token := range map[string]string{"wrong": "tok-" + randomHex(16), "none": ""} {
			cfg := grpcStateConfig(st)
			cfg.APIToken = token
			c := newCodedClient(t, cfg)
			for _, call := range []func() error{
				func() error { _, err := c.Get(ctx, "k"); return err },
				func() error { return c.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{}) },
				func() error { return c.Delete(ctx, "k", "") },
			} {
				err := call()
				require.ErrorIs(t, err, statepool.ErrUnauthorized, name)
				require.Equal(t, "Unauthenticated", c.code())
				require.False(t, breaker.IsFailure(err))
				var ge *statepool.GRPCError
				require.ErrorAs(t, err, &ge)
				require.Equal(t, "Unauthorized", ge.Message)
				require.Equal(t, "Unauthorized", ge.ErrorCode)
				if token != "" {
					require.NotContains(t, err.Error(), token)
				}
			}
			require.ErrorIs(t, c.Check(ctx), statepool.ErrUnauthorized, "GetMetadata checks the token too")
			require.Equal(t, "Unauthenticated", c.code())
		}
	})

	t.Run("MissingStore", func(t *testing.T) {
		// gRPC InvalidArgument DAPR_STATE_NOT_FOUND "state store nosuchstore
		// is not found" / HTTP 400 ERR_STATE_STORE_NOT_FOUND, whose body
		// carries the same ErrorInfo.
		cfg := grpcStateConfig(st)
		cfg.StoreName = "nosuchstore"
		c := newCodedClient(t, cfg)
		for _, call := range []func() error{
			func() error { _, err := c.Get(ctx, "k"); return err },
			func() error { return c.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{}) },
			func() error { return c.Delete(ctx, "k", "") },
		} {
			err := call()
			require.ErrorIs(t, err, statepool.ErrStoreNotFound)
			require.NotErrorIs(t, err, statepool.ErrBadRequest, "the store's absence is no fault of the request")
			require.False(t, breaker.IsFailure(err))
			var ge *statepool.GRPCError
			require.ErrorAs(t, err, &ge)
			require.Equal(t, codes.InvalidArgument, ge.Code)
			require.Equal(t, "DAPR_STATE_NOT_FOUND", ge.ErrorCode)
			require.Equal(t, "state store nosuchstore is not found", ge.Message)
		}
		// GetMetadata answers OK and lists the components.
		err := c.Check(ctx)
		require.ErrorIs(t, err, statepool.ErrStoreNotFound)
		require.Contains(t, err.Error(), `"nosuchstore": daprd has cartstore`)
		require.Equal(t, "OK", c.code())
	})

	t.Run("StoreDown", func(t *testing.T) {
		// With Redis stopped, after about 3 s: get and save answer gRPC
		// Internal ERR_STATE_GET "fail to get <key> from state store
		// cartstore: dial tcp: lookup redis on 127.0.0.11:53: no such host"
		// (ERR_STATE_SAVE "failed saving state in state store cartstore:
		// failed to set key ...") / HTTP 500 with the same errorCode:
		// failures for the breaker. A delete answers gRPC Aborted / HTTP
		// 409, an ETag mismatch: state.redis reports every failed delete
		// so, whatever the cause, and both transports pass it on as
		// ErrETagMismatch, which the breaker does not count (the re-read
		// that follows fails and is counted). GetMetadata still answers:
		// the store is configured.
		require.NoError(t, st.RedisContainer().Stop(ctx, nil))
		h := newCodedClient(t, httpStateConfig(st))
		for _, c := range []*codedClient{good, h} {
			transport := "grpc"
			if c == h {
				transport = "http"
			}
			_, getErr := c.Get(ctx, "k")
			require.Equal(t, codeOf(transport, "Internal", "500"), c.code())
			saveErr := c.Save(ctx, "k", []byte(`{}`), statepool.SaveOptions{})
			require.Equal(t, codeOf(transport, "Internal", "500"), c.code())
			for _, err := range []error{getErr, saveErr} {
				require.Error(t, err)
				require.True(t, breaker.IsFailure(err), "%v", err)
				for _, class := range []error{statepool.ErrUnauthorized, statepool.ErrStoreNotFound, statepool.ErrBadRequest, statepool.ErrUnreachable} {
					require.NotErrorIs(t, err, class)
				}
			}
			if transport == "grpc" {
				for i, want := range []string{"ERR_STATE_GET", "ERR_STATE_SAVE"} {
					var ge *statepool.GRPCError
					require.ErrorAs(t, []error{getErr, saveErr}[i], &ge)
					require.Equal(t, want, ge.ErrorCode)
				}
			}
			require.ErrorIs(t, c.Delete(ctx, "k", ""), statepool.ErrETagMismatch)
			require.Equal(t, codeOf(transport, "Aborted", "409"), c.code())
			require.NoError(t, c.Check(ctx))
		}

		// The client's own timeout, shorter than daprd's attempt: the
		// context's error, reported as DeadlineExceeded, a failure.
		cfg := grpcStateConfig(st)
		cfg.RequestTimeout = 300 * time.Millisecond
		hasty := newCodedClient(t, cfg)
		_, err := hasty.Get(ctx, "k")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Equal(t, "DeadlineExceeded", hasty.code())
		require.True(t, breaker.IsFailure(err))
	})

	t.Run("SidecarDown", func(t *testing.T) {
		// No daprd: gRPC Unavailable "connection error: desc = "transport:
		// Error while dialing: dial tcp 127.0.0.1:<port>: connect:
		// connection refused"", from the client's side: ErrUnreachable, a
		// failure.
		require.NoError(t, st.StopDaprd(ctx))
		_, err := good.Get(ctx, "k")
		require.ErrorIs(t, err, statepool.ErrUnreachable)
		require.Contains(t, err.Error(), "connection refused")
		require.Equal(t, "Unavailable", good.code())
		require.True(t, breaker.IsFailure(err))
		require.ErrorIs(t, good.Check(ctx), statepool.ErrUnreachable)
	})
}

// TestGRPCWorker runs the worker with WORKER_STATE_PROTOCOL=grpc on the
// shared stack: commands are applied through daprd's gRPC API, over one
// connection.
func TestGRPCWorker(t *testing.T) {
	ctx := testkit.Context(t, 3*time.Minute)
	st := sharedStack(t)
	b := connectBus(ctx, t, st.NATSURL())
	w := inProcessWorker(t, st, "grpc", map[string]string{
		"WORKER_STATE_PROTOCOL": "grpc",
		"DAPR_GRPC_ENDPOINT":    "http://" + st.DaprGRPCEndpoint(),
		// The HTTP API is out of the worker's reach: everything goes
		// through gRPC.
		"DAPR_HTTP_ENDPOINT": "http://127.0.0.1:1",
	})
	b.waitConsumer(ctx, t)
	cart := newCartIDs("grpc", 1)[0]
	cacheCarts(ctx, t, b, []string{cart})
	ev, err := b.pub.PublishAndWait(ctx, publisher.AddItemCommand(cart,
		command.Item{ItemCode: "GRPC", Quantity: 2, UnitPrice: money.FromInt(120), TaxCode: "01"}))
	require.NoError(t, err)
	require.Equal(t, command.OutcomeApplied, ev.Outcome)

	d := readCart(ctx, t, st, cart)
	require.Len(t, d.LineItems, 1)
	require.Equal(t, money.FromInt(264), d.Sales.TotalAmountWithTax)

	m := w.metrics(t)
	require.Positive(t, m.get(t, "cartworker_state_requests_total", "op", "save", "code", "OK"))
	require.Positive(t, m.get(t, "cartworker_state_requests_total", "op", "check", "code", "OK"))
	require.Equal(t, 1.0, m.get(t, "cartworker_state_connections_opened_total"), "one gRPC connection")
	code, err := w.readyz()
	require.NoError(t, err)
	require.Equal(t, 200, code)
	require.Contains(t, w.logs.String(), "config.state_protocol=grpc")
}

// BenchmarkGRPCDaprRoundTrip is one Get plus one conditional Save of a
// 9 KB cart against the real daprd and Redis, over each protocol, from one
// goroutine and from 16 at once (the worker's default concurrency). Unlike
// statepool's benchmarks it includes daprd's own cost of each API.
//
//	go test -tags integration -run X -bench GRPCDapr ./integration/
func BenchmarkGRPCDaprRoundTrip(b *testing.B) {
	st := sharedStack(b)
	doc := benchCart()
	for _, tr := range transports {
		for _, workers := range []int{1, 16} {
			b.Run(tr.name+"-"+strconv.Itoa(workers), func(b *testing.B) {
				var dials atomic.Int64
				cfg := tr.cfg(st)
				cfg.Hooks.OnDial = func() { dials.Add(1) }
				c, err := statepool.New(cfg)
				require.NoError(b, err)
				b.Cleanup(c.Close)
				ctx := context.Background()
				prefix := "bench-" + tr.name + "-" + randomHex(4) + "-"
				for i := range workers {
					require.NoError(b, c.Save(ctx, prefix+strconv.Itoa(i), doc, statepool.SaveOptions{}))
				}
				roundTrip := func(key string) bool {
					e, err := c.Get(ctx, key)
					if err != nil {
						b.Error(err)
						return false
					}
					err = c.Save(ctx, key, e.Value, statepool.SaveOptions{ETag: e.ETag})
					if err != nil && !errors.Is(err, statepool.ErrETagMismatch) {
						b.Error(err)
						return false
					}
					return true
				}
				b.ReportAllocs()
				if workers == 1 {
					for b.Loop() {
						if !roundTrip(prefix + "0") {
							return
						}
					}
				} else {
					var next atomic.Int64
					b.SetParallelism(max(1, workers/runtime.GOMAXPROCS(0)))
					b.RunParallel(func(pb *testing.PB) {
						key := prefix + strconv.Itoa(int(next.Add(1)-1)%workers)
						for pb.Next() && roundTrip(key) {
						}
					})
				}
				b.ReportMetric(float64(dials.Load()), "conns")
			})
		}
	}
}

// benchCart is a 20-line cart of about 9 KB.
func benchCart() []byte {
	var b strings.Builder
	b.WriteString(`{"cart_id":"bench","line_items":[`)
	for i := range 20 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"line_no":` + strconv.Itoa(i+1) + `,"item_code":"ITEM000001","description":"` +
			strings.Repeat("x", 300) + `","quantity":2,"unit_price":120,"tax_code":"01","amount":240,"is_cancelled":false}`)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}
