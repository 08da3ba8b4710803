package daprfake_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cartworker/cartworker/internal/daprfake"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type harness struct {
	t    *testing.T
	f    *daprfake.Fake
	hc   *http.Client
	base string
}

func newHarness(t *testing.T, opts ...daprfake.Option) *harness {
	t.Helper()
	f := daprfake.New(opts...)
	t.Cleanup(f.Close)
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	return &harness{t: t, f: f, hc: hc, base: f.URL() + "/v1.0/state/" + daprfake.DefaultStoreName}
}

type reply struct {
	code int
	etag string
	body string
}

func (h *harness) do(method, url, body string, header ...string) reply {
	h.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	require.NoError(h.t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := h.hc.Do(req)
	require.NoError(h.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(h.t, err)
	return reply{code: resp.StatusCode, etag: resp.Header.Get("ETag"), body: string(b)}
}

func (h *harness) save(body string) reply { return h.do(http.MethodPost, h.base, body) }
func (h *harness) get(key string) reply   { return h.do(http.MethodGet, h.base+"/"+key, "") }

func TestSaveGetDelete(t *testing.T) {
	h := newHarness(t)

	require.Equal(t, http.StatusNoContent, h.get("k").code)

	require.Equal(t, http.StatusNoContent, h.save(`[{"key":"k","value":{"a":1}}]`).code)
	r := h.get("k")
	require.Equal(t, http.StatusOK, r.code)
	require.JSONEq(t, `{"a":1}`, r.body)
	require.Equal(t, "1", r.etag)

	require.Equal(t, http.StatusNoContent, h.save(`[{"key":"k","value":{"a":2},"etag":"1","options":{"concurrency":"first-write"}}]`).code)
	require.Equal(t, "2", h.get("k").etag)

	require.Equal(t, http.StatusNoContent, h.do(http.MethodDelete, h.base+"/k", "", "If-Match", "2").code)
	require.Equal(t, http.StatusNoContent, h.get("k").code)
	require.Equal(t, http.StatusNoContent, h.do(http.MethodDelete, h.base+"/k", "").code, "delete missing")
}

func TestConcurrencyRules(t *testing.T) {
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		header []string
		want   int
	}{
		{"stale etag", http.MethodPost, "", `[{"key":"k","value":1,"etag":"1"}]`, nil, http.StatusConflict},
		{"current etag", http.MethodPost, "", `[{"key":"k","value":1,"etag":"2"}]`, nil, http.StatusNoContent},
		{"etag on missing key", http.MethodPost, "", `[{"key":"new","value":1,"etag":"2"}]`, nil, http.StatusConflict},
		{"last-write ignores etag", http.MethodPost, "", `[{"key":"k","value":1,"etag":"1","options":{"concurrency":"last-write"}}]`, nil, http.StatusNoContent},
		{"malformed etag", http.MethodPost, "", `[{"key":"k","value":1,"etag":"abc"}]`, nil, http.StatusBadRequest},
		{"malformed body", http.MethodPost, "", `{"key":"k"}`, nil, http.StatusBadRequest},
		{"missing value", http.MethodPost, "", `[{"key":"k"}]`, nil, http.StatusBadRequest},
		{"bad ttl", http.MethodPost, "", `[{"key":"k","value":1,"metadata":{"ttlInSeconds":"x"}}]`, nil, http.StatusBadRequest},
		{"batch writes each item on its own, as daprd does", http.MethodPost, "", `[{"key":"other","value":1},{"key":"k","value":1,"etag":"1"}]`, nil, http.StatusConflict},
		{"delete stale", http.MethodDelete, "/k", "", []string{"If-Match", "1"}, http.StatusConflict},
		{"delete missing with etag", http.MethodDelete, "/nope", "", []string{"If-Match", "1"}, http.StatusConflict},
		{"delete malformed etag", http.MethodDelete, "/k", "", []string{"If-Match", "x"}, http.StatusBadRequest},
		{"delete last-write", http.MethodDelete, "/k?concurrency=last-write", "", []string{"If-Match", "1"}, http.StatusNoContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.f.Put("k", []byte(`0`))
			h.f.Put("k", []byte(`0`)) // etag 2
			r := h.do(tt.method, h.base+tt.path, tt.body, tt.header...)
			require.Equal(t, tt.want, r.code, r.body)
			if tt.want == http.StatusConflict {
				// daprd writes a bulk save's items one by one: the item
				// with the current ETag lands even though another's fails.
				_, ok := h.f.Get("other")
				require.Equal(t, strings.Contains(tt.body, `"other"`), ok)
			}
		})
	}
}

func TestTTLExpiresLazily(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	h := newHarness(t, daprfake.WithClock(clock))

	require.Equal(t, http.StatusNoContent, h.save(`[{"key":"k","value":1,"metadata":{"ttlInSeconds":"60"}}]`).code)
	ttl, ok := h.f.TTL("k")
	require.True(t, ok)
	require.Equal(t, time.Minute, ttl)

	mu.Lock()
	now = now.Add(59 * time.Second)
	mu.Unlock()
	require.Equal(t, http.StatusOK, h.get("k").code)

	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	require.Equal(t, http.StatusNoContent, h.get("k").code)
	require.Zero(t, h.f.Len())
}

func TestAPIToken(t *testing.T) {
	h := newHarness(t, daprfake.WithAPIToken("tok"))

	require.Equal(t, http.StatusUnauthorized, h.get("k").code)
	require.Equal(t, http.StatusUnauthorized, h.do(http.MethodGet, h.base+"/k", "", "dapr-api-token", "wrong").code)
	require.Equal(t, http.StatusNoContent, h.do(http.MethodGet, h.base+"/k", "", "dapr-api-token", "tok").code)
	require.Equal(t, http.StatusNoContent, h.do(http.MethodGet, h.f.URL()+"/v1.0/healthz", "").code, "healthz needs no token")
}

func TestUnknownStore(t *testing.T) {
	h := newHarness(t, daprfake.WithStoreName("other"))
	r := h.get("k")
	require.Equal(t, http.StatusBadRequest, r.code)
	require.Contains(t, r.body, "ERR_STATE_STORE_NOT_FOUND")
}

func TestFaultInjection(t *testing.T) {
	h := newHarness(t)

	h.f.FailNext(2, http.StatusServiceUnavailable)
	require.Equal(t, http.StatusServiceUnavailable, h.get("k").code)
	require.Equal(t, http.StatusServiceUnavailable, h.get("k").code)
	require.Equal(t, http.StatusNoContent, h.get("k").code)

	h.f.FailWith(http.StatusInternalServerError)
	for range 5 {
		require.Equal(t, http.StatusInternalServerError, h.get("k").code)
	}
	h.f.Heal()
	require.Equal(t, http.StatusNoContent, h.get("k").code)
	require.Equal(t, 9, h.f.Requests(daprfake.OpGet))
}

func TestDelayHonoursClientCancel(t *testing.T) {
	h := newHarness(t)
	h.f.SetDelay(time.Hour)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.f.URL()+"/v1.0/healthz", nil)
	require.NoError(t, err)
	_, err = h.hc.Do(req)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestCloseCutsDelayShort(t *testing.T) {
	f := daprfake.New()
	f.SetDelay(time.Hour)
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()

	status := make(chan int, 1)
	go func() {
		resp, err := hc.Get(f.URL() + "/v1.0/healthz")
		if err != nil {
			status <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		status <- resp.StatusCode
	}()
	require.Eventually(t, func() bool { return f.Requests(daprfake.OpHealthz) == 1 },
		5*time.Second, time.Millisecond)

	closed := make(chan struct{})
	go func() {
		f.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a delayed request")
	}
	require.Contains(t, []int{0, http.StatusServiceUnavailable}, <-status)
	f.Close() // idempotent
}

func TestCountsConnections(t *testing.T) {
	h := newHarness(t)
	for range 5 {
		h.get("k")
	}
	opened, maxOpen := h.f.Conns()
	require.Equal(t, 1, opened, "keep-alive client reuses one connection")
	require.Equal(t, 1, maxOpen)

	h.hc.CloseIdleConnections()
	require.Eventually(t, func() bool { return h.f.OpenConns() == 0 }, 5*time.Second, 5*time.Millisecond)
}

func TestPeekAndSeed(t *testing.T) {
	h := newHarness(t)
	etag := h.f.Put("k", []byte(`{"seeded":true}`))

	doc, ok := h.f.Get("k")
	require.True(t, ok)
	require.JSONEq(t, `{"seeded":true}`, string(doc))
	got, ok := h.f.ETag("k")
	require.True(t, ok)
	require.Equal(t, etag, got)
	require.Equal(t, etag, h.get("k").etag)

	doc[0] = 'X'
	again, _ := h.f.Get("k")
	require.Equal(t, byte('{'), again[0], "Get must return a copy")
}
