package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"

	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/consumer"
	"github.com/cartworker/cartworker/internal/statepool"
)

// errBreakerOpen is the readiness reason while the state breaker is open.
var errBreakerOpen = errors.New("state store breaker is open: daprd or its store keeps failing")

// breakerOpen returns errBreakerOpen while the state breaker is open, else
// nil. Both the probe and /readyz ask it: the probe only runs while the
// consumer's gate is closed, and the breaker may open while it is not.
func breakerOpen(guarded *breaker.Breaker) error {
	if guarded.State() == breaker.StateOpen {
		return errBreakerOpen
	}
	return nil
}

// stateProbe returns the consumer's probe of the state store: daprd answers,
// takes our token and has our store (statepool.Client.Check), and the
// breaker is not open. Its errors name the setting an operator must look
// at, because they are what /readyz and the log say: the endpoint is the
// one of the protocol in use (DAPR_HTTP_ENDPOINT or DAPR_GRPC_ENDPOINT).
func stateProbe(cfg statepool.Config, state *statepool.Client, guarded *breaker.Breaker) func(context.Context) error {
	endpoint, endpointVar := cfg.Endpoint, "DAPR_HTTP_ENDPOINT"
	if cmp.Or(cfg.Protocol, statepool.DefaultProtocol) == statepool.ProtocolGRPC {
		endpoint, endpointVar = cfg.GRPCEndpoint, "DAPR_GRPC_ENDPOINT"
	}
	return func(ctx context.Context) error {
		err := state.Check(ctx)
		switch {
		case err == nil:
			return breakerOpen(guarded)
		case !consumer.EnvironmentFault(err):
			return fmt.Errorf("daprd at %s (%s) does not answer its metadata API: %w", endpoint, endpointVar, err)
		// A fault of the environment, which the consumer holds its
		// commands for: name the setting that fixes it.
		case errors.Is(err, statepool.ErrUnauthorized):
			return fmt.Errorf("DAPR_API_TOKEN: daprd at %s refused the API token: %w", endpoint, err)
		case errors.Is(err, statepool.ErrStoreNotFound):
			return fmt.Errorf("CART_STATE_STORE=%s: daprd at %s has no such state store: %w", cfg.StoreName, endpoint, err)
		default:
			// statepool.ErrUnreachable, the fault left: the endpoint
			// setting says where daprd should be.
			return fmt.Errorf("%s: daprd is not reachable at %s: %w", endpointVar, endpoint, err)
		}
	}
}
