package statepool

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/daprfake"
)

// pipeDial returns in-memory connections and counts how many are open.
type pipeDial struct {
	open atomic.Int64
}

type countedConn struct {
	net.Conn
	peer net.Conn
	d    *pipeDial
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.d.open.Add(-1) })
	_ = c.peer.Close()
	return c.Conn.Close()
}

func (d *pipeDial) dial(context.Context, string, string) (net.Conn, error) {
	a, b := net.Pipe()
	d.open.Add(1)
	return &countedConn{Conn: a, peer: b, d: d}, nil
}

func TestLimitDialerCapsOpenConnections(t *testing.T) {
	var pd pipeDial
	var dials, idleCloses atomic.Int64
	d := newLimitDialer(2, 50*time.Millisecond, func() { dials.Add(1) }, pd.dial)
	d.closeIdle = func() { idleCloses.Add(1) }
	ctx := context.Background()

	c1, err := d.DialContext(ctx, "tcp", "x")
	require.NoError(t, err)
	c2, err := d.DialContext(ctx, "tcp", "x")
	require.NoError(t, err)

	start := time.Now()
	_, err = d.DialContext(ctx, "tcp", "x")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 2*time.Second)
	require.Positive(t, idleCloses.Load(), "a full limiter must shed idle connections")
	require.EqualValues(t, 2, pd.open.Load())

	// Closing twice frees one slot, not two.
	require.NoError(t, c1.Close())
	_ = c1.Close()
	c3, err := d.DialContext(ctx, "tcp", "x")
	require.NoError(t, err)
	_, err = d.DialContext(ctx, "tcp", "x")
	require.ErrorIs(t, err, context.DeadlineExceeded)

	require.NoError(t, c2.Close())
	require.NoError(t, c3.Close())
	require.EqualValues(t, 3, dials.Load())
	require.Zero(t, pd.open.Load())
}

func TestLimitDialerWaitsForSlot(t *testing.T) {
	var pd pipeDial
	d := newLimitDialer(1, 5*time.Second, nil, pd.dial)
	c1, err := d.DialContext(context.Background(), "tcp", "x")
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		c, err := d.DialContext(context.Background(), "tcp", "x")
		if err == nil {
			err = c.Close()
		}
		done <- err
	}()
	require.NoError(t, c1.Close())
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("dial did not get the freed slot")
	}
}

// TestMaxConnsAcrossHosts drives two hosts through one client whose total
// cap is below the sum of the per-host caps.
func TestMaxConnsAcrossHosts(t *testing.T) {
	const maxConns = 3
	var open, peak atomic.Int64
	tcp := dialTCP(time.Second)
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := tcp(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		n := open.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		return &trackedConn{Conn: c, open: &open}, nil
	}

	fakes := []*daprfake.Fake{daprfake.New(), daprfake.New()}
	for _, f := range fakes {
		f.SetDelay(5 * time.Millisecond)
		t.Cleanup(f.Close)
	}
	cfg := Config{MaxConns: maxConns, MaxConnsPerHost: maxConns}.withDefaults()
	hc := newHTTPClient(cfg, Hooks{}, dial)
	t.Cleanup(hc.CloseIdleConnections)

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequest(http.MethodGet, fakes[i%2].URL()+"/v1.0/healthz", nil)
			if err != nil {
				errs <- err
				return
			}
			resp, err := hc.Do(req)
			if err != nil {
				errs <- err
				return
			}
			drain(resp)
			errs <- resp.Body.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.LessOrEqual(t, peak.Load(), int64(maxConns))
	require.Equal(t, 20, fakes[0].Requests(daprfake.OpHealthz))
	require.Equal(t, 20, fakes[1].Requests(daprfake.OpHealthz))
}

type trackedConn struct {
	net.Conn
	open *atomic.Int64
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{
		"", "plain", `q"uote`, `back\slash`, "nl\nnl", "tab\t", "cr\r", "ctl\x01\x1f",
		"unicode ünï €", "line\u2028sep", "</script>",
	} {
		t.Run(s, func(t *testing.T) {
			b := appendJSONString(nil, s)
			var got string
			require.NoError(t, json.Unmarshal(b, &got), string(b))
			require.Equal(t, s, got)
		})
	}
}

func TestAppendSaveBody(t *testing.T) {
	type item struct {
		Key      string            `json:"key"`
		Value    json.RawMessage   `json:"value"`
		ETag     *string           `json:"etag"`
		Options  map[string]string `json:"options"`
		Metadata map[string]string `json:"metadata"`
	}
	etag := "7"
	tests := []struct {
		name string
		opts SaveOptions
		want item
	}{
		{"plain", SaveOptions{}, item{Key: `k"1`, Value: json.RawMessage(`{"a":1}`)}},
		{"etag", SaveOptions{ETag: etag}, item{
			Key: `k"1`, Value: json.RawMessage(`{"a":1}`), ETag: &etag,
			Options: map[string]string{"concurrency": "first-write"},
		}},
		{"ttl", SaveOptions{TTL: 61 * time.Second}, item{
			Key: `k"1`, Value: json.RawMessage(`{"a":1}`),
			Metadata: map[string]string{"ttlInSeconds": "61"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := appendSaveBody(nil, `k"1`, []byte(`{"a":1}`), tt.opts)
			var got []item
			require.NoError(t, json.Unmarshal(b, &got), string(b))
			require.Equal(t, []item{tt.want}, got)
		})
	}
}

func TestSaveBufferReusedAfterRelease(t *testing.T) {
	c := &Client{}
	b := c.newBody()
	b.data = append(b.data, "x"...)
	r := b.reader()
	b.release()
	require.EqualValues(t, 1, b.refs.Load(), "a reader still holds the buffer")
	require.NoError(t, r.Close())
	require.NoError(t, r.Close())
	require.Zero(t, b.refs.Load())
}

var statusSink string

// statusCode exists so that reporting the status of a call to Dapr costs no
// allocation; whatever the status, it must still spell it as strconv does.
func TestStatusCodeSpellsEveryStatusWithoutAllocating(t *testing.T) {
	for code := 100; code < 600; code++ {
		require.Equal(t, strconv.Itoa(code), statusCode(code))
	}
	for _, code := range []int{200, 204, 400, 401, 404, 409, 500, 502, 503} {
		allocs := testing.AllocsPerRun(100, func() { statusSink = statusCode(code) })
		require.Zero(t, allocs, "status %d, which Dapr returns, allocates", code)
	}
}
