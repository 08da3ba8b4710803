package statepool

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Keys and ETags reach Dapr as the JSON strings encoding/json would write:
// daprd decodes them with it, so what it stores is what the caller passed,
// and invalid UTF-8 becomes U+FFFD exactly as daprd would make it.
func TestAppendSaveBodyEscapesStrings(t *testing.T) {
	for _, s := range []string{
		"", "plain", `q"uote`, `back\slash`, "nl\nnl", "tab\t", "cr\r", "ctl\x01\x1f",
		"unicode ünï €", "line\u2028sep", "</script>&", "bad\xffutf8\xfe",
	} {
		t.Run(s, func(t *testing.T) {
			b := appendSaveBody(nil, s, []byte(`{}`), SaveOptions{ETag: s})
			var got []struct{ Key, ETag string }
			require.NoError(t, json.Unmarshal(b, &got), string(b))
			want := strings.ToValidUTF8(s, "\ufffd")
			require.Equal(t, want, got[0].Key)
			if s != "" {
				require.Equal(t, want, got[0].ETag)
			}
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
	h := &httpBackend{}
	b := h.newBody()
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

func TestParseGRPCEndpoint(t *testing.T) {
	tests := []struct {
		in   string
		addr string
		tls  bool
		err  string // substring; empty: valid
	}{
		{in: "127.0.0.1:50001", addr: "127.0.0.1:50001"},
		{in: "localhost:50001", addr: "localhost:50001"},
		{in: "daprd:50001", addr: "daprd:50001"},
		{in: ":50001", addr: "localhost:50001"},
		{in: "[::1]:50001", addr: "[::1]:50001"},
		{in: "http://127.0.0.1:50001", addr: "127.0.0.1:50001"},
		{in: "http://daprd:50001/", addr: "daprd:50001"},
		{in: "https://dapr.example.com:50001", addr: "dapr.example.com:50001", tls: true},
		{in: "https://dapr.example.com", addr: "dapr.example.com:443", tls: true},
		{in: "http://daprd", addr: "daprd:443"}, // as Dapr's SDKs
		{in: "daprd", addr: "daprd:443"},
		{in: "[::1]", addr: "[::1]:443"},
		{in: "daprd:50001?tls=true", addr: "daprd:50001", tls: true},
		{in: "daprd:50001?tls=false", addr: "daprd:50001"},
		{in: "", err: "empty"},
		{in: "dns:///daprd:50001", err: "not supported"},
		{in: "unix:///tmp/dapr.sock", err: "not supported"},
		{in: "unix:/tmp/dapr.sock", err: "not supported"},
		{in: "vsock:2:50001", err: "not supported"},
		{in: "ftp://daprd:50001", err: "scheme"},
		{in: "http://daprd:50001/v1", err: "path"},
		{in: "http://daprd:50001?tls=true", err: "query"},
		{in: "daprd:50001?tls=yes", err: "tls"},
		{in: "daprd:50001?x=1", err: "unknown query"},
		{in: "daprd:0", err: "port"},
		{in: "daprd:70000", err: "port"},
		{in: "daprd:http", err: "port"},
		{in: "a:b:c", err: "host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseGRPCEndpoint(tt.in)
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, grpcTarget{addr: tt.addr, tls: tt.tls}, got)
		})
	}
}
