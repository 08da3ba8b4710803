package statepool

import (
	"context"
	"fmt"
	"strings"

	sjson "github.com/segmentio/encoding/json"
)

// OpCheck names Check in StatusError.Op and Hooks.OnRequest.
const OpCheck = "check"

// maxMetadataBody bounds the metadata document Check reads. A sidecar lists
// every component, subscription and actor type there; a megabyte is far
// more than any real one.
const maxMetadataBody = 1 << 20

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
	if c.rpc != nil {
		return c.checkGRPC(ctx)
	}
	body, _, err := c.get(ctx, OpCheck, "", c.metadataURL, nil)
	if err != nil {
		return err
	}
	var md struct {
		Components []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"components"`
	}
	if len(body) > maxMetadataBody {
		body = body[:maxMetadataBody]
	}
	if err := sjson.Unmarshal(body, &md); err != nil {
		return fmt.Errorf("statepool: daprd metadata: %w", err)
	}
	comps := md.Components
	return c.storeListed(len(comps), func(i int) (string, string) { return comps[i].Name, comps[i].Type })
}

// storeListed reports whether the n components that component(i) describes
// by name and type include a state store of the client's store name.
func (c *Client) storeListed(n int, component func(i int) (name, typ string)) error {
	var stores []string
	for i := range n {
		name, typ := component(i)
		if !strings.HasPrefix(typ, "state.") {
			continue
		}
		if name == c.store {
			return nil
		}
		stores = append(stores, name)
	}
	if len(stores) == 0 {
		return fmt.Errorf("%w: %q: daprd has no state store", ErrStoreNotFound, c.store)
	}
	return fmt.Errorf("%w: %q: daprd has %s", ErrStoreNotFound, c.store, strings.Join(stores, ", "))
}
