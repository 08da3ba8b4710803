package app

import (
	"context"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
)

// The probe's errors name the setting to fix, and the endpoint of the
// protocol in use.
func TestStateProbeNamesTheSetting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	nothing := ln.Addr().String() // refuses connections once closed
	require.NoError(t, ln.Close())

	f := daprfake.New(daprfake.WithAPIToken("right"))
	t.Cleanup(f.Close)

	for _, tc := range []struct {
		name string
		cfg  statepool.Config
		want string // "" for no error
	}{
		{"http ok", statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: f.URL(), APIToken: "right"}, ""},
		{"grpc ok", statepool.Config{Protocol: statepool.ProtocolGRPC, GRPCEndpoint: f.GRPCAddr(), APIToken: "right"}, ""},
		{"http token", statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: f.URL(), APIToken: "wrong"}, "DAPR_API_TOKEN: daprd at " + f.URL() + " refused the API token"},
		{
			"grpc token", statepool.Config{Protocol: statepool.ProtocolGRPC, GRPCEndpoint: f.GRPCAddr(), APIToken: "wrong"},
			"DAPR_API_TOKEN: daprd at " + f.GRPCAddr() + " refused the API token",
		},
		{
			"grpc store", statepool.Config{Protocol: statepool.ProtocolGRPC, GRPCEndpoint: f.GRPCAddr(), APIToken: "right", StoreName: "other"},
			"CART_STATE_STORE=other: daprd at " + f.GRPCAddr() + " has no such state store",
		},
		{"http unreachable", statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: "http://" + nothing}, "DAPR_HTTP_ENDPOINT: daprd is not reachable at http://" + nothing},
		{
			"grpc unreachable", statepool.Config{Protocol: statepool.ProtocolGRPC, GRPCEndpoint: nothing},
			"DAPR_GRPC_ENDPOINT: daprd is not reachable at " + nothing,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state, err := statepool.New(tc.cfg)
			require.NoError(t, err)
			t.Cleanup(state.Close)
			guarded, err := breaker.New(state, breaker.Settings{})
			require.NoError(t, err)

			err = stateProbe(tc.cfg, state, guarded)(context.Background())
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}
