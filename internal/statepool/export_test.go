package statepool

import "net/http"

// NewWithDoer is New with d in place of the transport Config.Mode would
// build, so that a benchmark can measure the client alone. Close does
// nothing.
func NewWithDoer(d interface {
	Do(*http.Request) (*http.Response, error)
}, cfg Config,
) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return newClient(newHTTPBackend(d, func() {}, cfg), cfg), nil
}
