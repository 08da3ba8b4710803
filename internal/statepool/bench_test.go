package statepool_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/statepool"
)

var benchDoc = []byte(`{"id":"c-1","currency":"EUR","items":[{"sku":"A-1","qty":2,"price":19.98},{"sku":"B-7","qty":1,"price":5.5}]}`)

// cartDoc is about the size of a 20-line cart, 9 KB: the size at which the
// pooled save buffer earns its keep.
var cartDoc = []byte(`{"id":"c-1","line_items":[` + strings.TrimSuffix(strings.Repeat(
	`{"item_code":"ITEM000001","description":"`+strings.Repeat("x", 300)+`","quantity":2,"unit_price":120,"tax_code":"01","amount":240,"is_cancelled":false},`,
	20), ",") + `]}`)

// benchTransports are the client configurations the round-trip benchmarks
// compare: the HTTP pool, HTTP with a connection per call, and gRPC.
var benchTransports = []struct {
	name string
	cfg  statepool.Config
}{
	{"pooled", statepool.Config{Mode: statepool.ModePooled}},
	{"per-request", statepool.Config{Mode: statepool.ModePerRequest}},
	{"grpc", statepool.Config{Protocol: statepool.ProtocolGRPC}},
}

// BenchmarkClientRoundTrip is one Get plus one conditional Save against the
// in-process fake, over each transport, with a small document and a 9 KB
// cart. Allocations include the fake's server side.
func BenchmarkClientRoundTrip(b *testing.B) {
	for _, doc := range []struct {
		name string
		doc  []byte
	}{{"", benchDoc}, {"-9KB", cartDoc}} {
		for _, tr := range benchTransports {
			if doc.name != "" && tr.cfg.Mode == statepool.ModePerRequest {
				continue
			}
			b.Run(tr.name+doc.name, func(b *testing.B) {
				f := newFake(b)
				f.Put("c-1", doc.doc)
				c := newClient(b, f, tr.cfg)
				ctx := context.Background()

				b.ReportAllocs()
				for b.Loop() {
					e, err := c.Get(ctx, "c-1")
					if err != nil {
						b.Fatal(err)
					}
					if err := c.Save(ctx, "c-1", e.Value, statepool.SaveOptions{ETag: e.ETag}); err != nil {
						b.Fatal(err)
					}
				}
				opened, _ := f.Conns()
				b.ReportMetric(float64(opened)/float64(b.N), "conns/op")
			})
		}
	}
}

// BenchmarkClientRoundTripParallel is BenchmarkClientRoundTrip from 16
// goroutines at once (the worker's default concurrency), each on a cart of
// its own: the HTTP pool's connections against gRPC's one multiplexed
// connection.
func BenchmarkClientRoundTripParallel(b *testing.B) {
	const workers = 16
	for _, tr := range benchTransports {
		if tr.cfg.Mode == statepool.ModePerRequest {
			continue
		}
		b.Run(tr.name, func(b *testing.B) {
			f := newFake(b)
			for i := range workers {
				f.Put("c-"+strconv.Itoa(i), benchDoc)
			}
			c := newClient(b, f, tr.cfg)
			var next atomic.Int64

			b.ReportAllocs()
			b.SetParallelism(max(1, workers/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				key := "c-" + strconv.Itoa(int(next.Add(1)-1)%workers)
				ctx := context.Background()
				for pb.Next() {
					e, err := c.Get(ctx, key)
					if err != nil {
						b.Error(err)
						return
					}
					// Two goroutines may share a key when GOMAXPROCS does
					// not divide workers: a lost race is a normal outcome.
					err = c.Save(ctx, key, e.Value, statepool.SaveOptions{ETag: e.ETag})
					if err != nil && !errors.Is(err, statepool.ErrETagMismatch) {
						b.Error(err)
						return
					}
				}
			})
			opened, _ := f.Conns()
			b.ReportMetric(float64(opened), "conns")
		})
	}
}

// cannedDoer answers without a network, isolating the client's own cost.
type cannedDoer struct{}

func (cannedDoer) Do(req *http.Request) (*http.Response, error) {
	resp := &http.Response{StatusCode: http.StatusNoContent, Header: http.Header{}, Body: http.NoBody}
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
	}
	if req.Method == http.MethodGet {
		resp.StatusCode = http.StatusOK
		resp.Header["Etag"] = []string{"42"}
		resp.ContentLength = int64(len(benchDoc))
		resp.Body = io.NopCloser(bytes.NewReader(benchDoc))
	}
	return resp, nil
}

// BenchmarkClientOverhead measures the client alone: request building, body
// encoding, response handling.
func BenchmarkClientOverhead(b *testing.B) {
	c, err := statepool.NewWithDoer(cannedDoer{}, statepool.Config{APIToken: "t", Hooks: statepool.Hooks{
		OnRequest: func(string, string, time.Duration) {},
	}})
	require.NoError(b, err)
	ctx := context.Background()

	b.Run("get", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Get(ctx, "c-1"); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, bc := range []struct {
		name string
		doc  []byte
	}{{"save", benchDoc}, {"save-9KB", cartDoc}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := c.Save(ctx, "c-1", bc.doc, statepool.SaveOptions{ETag: strconv.Itoa(i % 10)}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
