package statepool_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/statepool"
)

var benchDoc = []byte(`{"id":"c-1","currency":"EUR","items":[{"sku":"A-1","qty":2,"price":19.98},{"sku":"B-7","qty":1,"price":5.5}]}`)

// BenchmarkClientRoundTrip is one Get plus one conditional Save against the
// in-process fake. Allocations include the fake's server side.
func BenchmarkClientRoundTrip(b *testing.B) {
	for _, mode := range []statepool.Mode{statepool.ModePooled, statepool.ModePerRequest} {
		b.Run(string(mode), func(b *testing.B) {
			f := newFake(b)
			f.Put("c-1", benchDoc)
			c := newClient(b, f, statepool.Config{Mode: mode}, statepool.Hooks{})
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
	c, err := statepool.New(cannedDoer{}, statepool.Config{APIToken: "t"}, statepool.Hooks{
		OnRequest: func(string, string) {},
	})
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
	b.Run("save", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := c.Save(ctx, "c-1", benchDoc, statepool.SaveOptions{ETag: strconv.Itoa(i % 10)}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
