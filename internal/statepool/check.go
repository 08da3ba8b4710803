package statepool

import (
	"context"
	"fmt"
	"strings"
)

// OpCheck names Check in StatusError.Op and Hooks.OnRequest.
const OpCheck = "check"

// component is a component daprd's metadata lists.
type component struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Check reports whether daprd can serve this client's store: it answers, it
// accepts the API token, and its metadata lists a state store of the
// configured name. The errors wrap ErrUnreachable, ErrUnauthorized or
// ErrStoreNotFound, so a caller can tell the operator what to fix before
// any command is spent on a call that cannot succeed.
//
// It asks GET /v1.0/metadata, or the GetMetadata RPC with ProtocolGRPC,
// which daprd guards with the API token like the state API, and which lists
// components without touching the store, so a store that is configured but
// briefly down (Redis restarting) still passes: that is the breaker's
// business.
func (c *Client) Check(ctx context.Context) error {
	comps, err := c.backend.components(ctx, c.newCall(OpCheck, ""))
	if err != nil {
		return err
	}
	return c.storeListed(comps)
}

// storeListed reports whether comps include a state store of the client's
// store name.
func (c *Client) storeListed(comps []component) error {
	var stores []string
	for _, comp := range comps {
		if !strings.HasPrefix(comp.Type, "state.") {
			continue
		}
		if comp.Name == c.store {
			return nil
		}
		stores = append(stores, comp.Name)
	}
	if len(stores) == 0 {
		return fmt.Errorf("%w: %q: daprd has no state store", ErrStoreNotFound, c.store)
	}
	return fmt.Errorf("%w: %q: daprd has %s", ErrStoreNotFound, c.store, strings.Join(stores, ", "))
}
