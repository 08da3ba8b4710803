package statepool_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/statepool"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		cfg   statepool.Config
		field string // empty: valid
	}{
		{"zero value", statepool.Config{}, ""},
		{"full", statepool.Config{
			Protocol: statepool.ProtocolHTTP,
			Endpoint: "https://dapr:3500", StoreName: "s", Mode: statepool.ModePerRequest,
			MaxConns: 10, IdleConnTimeout: time.Second, DialTimeout: time.Second,
			ResponseHeaderTimeout: time.Second, RequestTimeout: time.Second,
		}, ""},
		{"bad scheme", statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: "ftp://x"}, "Endpoint"},
		{"no host", statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: "http://"}, "Endpoint"},
		{"query", statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: "http://x?a=1"}, "Endpoint"},
		{"unparsable", statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: "http://[::1"}, "Endpoint"},
		{"store slash", statepool.Config{StoreName: "a/b"}, "StoreName"},
		{"mode", statepool.Config{Mode: "pooling"}, "Mode"},
		{"grpc", statepool.Config{Protocol: statepool.ProtocolGRPC, GRPCEndpoint: "http://daprd:50001"}, ""},
		{"protocol", statepool.Config{Protocol: "grpc-web"}, "Protocol"},
		{"grpc per-request", statepool.Config{Protocol: statepool.ProtocolGRPC, Mode: statepool.ModePerRequest}, "Mode"},
		{"grpc endpoint", statepool.Config{Protocol: statepool.ProtocolHTTP, GRPCEndpoint: "unix:///var/run/dapr.sock"}, "GRPCEndpoint"},
		{"negative max conns", statepool.Config{MaxConns: -1}, "MaxConns"},
		{"idle timeout", statepool.Config{IdleConnTimeout: -1}, "IdleConnTimeout"},
		{"dial timeout", statepool.Config{DialTimeout: -1}, "DialTimeout"},
		{"header timeout", statepool.Config{ResponseHeaderTimeout: -1}, "ResponseHeaderTimeout"},
		{"request timeout", statepool.Config{RequestTimeout: -1}, "RequestTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.field == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, statepool.ErrInvalidConfig)
			require.Contains(t, err.Error(), tt.field+":")
		})
	}
}

func TestGRPCPerRequestRefusedClearly(t *testing.T) {
	err := statepool.Config{Protocol: statepool.ProtocolGRPC, Mode: statepool.ModePerRequest}.Validate()
	require.EqualError(t, err, `statepool: invalid config: Mode: "per-request" is an HTTP benchmark baseline `+
		`and cannot be used with protocol "grpc": use "pooled", or protocol "http"`)
}

func TestDefaultGRPCEndpointUsesDefaultPort(t *testing.T) {
	require.Equal(t, "127.0.0.1:"+strconv.Itoa(statepool.DefaultGRPCPort), statepool.DefaultGRPCEndpoint)
	require.Equal(t, statepool.ProtocolGRPC, statepool.DefaultProtocol)
}

func TestConfigStringShowsDefaults(t *testing.T) {
	s := statepool.Config{MaxConns: 10}.String()
	for _, want := range []string{
		"Protocol:grpc ", "GRPCEndpoint:127.0.0.1:50001 ",
		"Endpoint:http://127.0.0.1:3500", "StoreName:cartstore", "Mode:pooled",
		"MaxConns:10 ", "RequestTimeout:10s",
	} {
		require.Contains(t, s, want)
	}
}

func TestConfigRedactsToken(t *testing.T) {
	const token = "s3cret-token"
	cfg := statepool.Config{APIToken: token}
	wrapped := struct{ State statepool.Config }{cfg}

	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "state", cfg)

	for name, out := range map[string]string{
		"%v":      fmt.Sprintf("%v", cfg),
		"%+v":     fmt.Sprintf("%+v", cfg),
		"%#v":     fmt.Sprintf("%#v", cfg),
		"nested":  fmt.Sprintf("%+v", wrapped),
		"slog":    logged.String(),
		"pointer": fmt.Sprintf("%v", &cfg),
	} {
		t.Run(name, func(t *testing.T) {
			require.NotContains(t, out, token)
			require.Contains(t, out, "REDACTED")
		})
	}

	require.NotContains(t, statepool.Config{}.String(), "REDACTED", "an unset token should not look set")
}
