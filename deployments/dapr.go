package deployments

import _ "embed"

// The Dapr files daprd is given in Compose (and by `make run`), embedded so
// that Go code starting daprd elsewhere (package cartworkertest, in a user's
// go test, where this repository's files are not on disk) runs exactly what
// ships.
var (
	//go:embed dapr/components/cartstore.yaml
	cartstoreComponent []byte
	//go:embed dapr/config.yaml
	daprConfig []byte
)

// CartstoreComponent returns dapr/components/cartstore.yaml, the cartstore
// state component (state.redis at redis:6379, DB 2), for daprd's
// --resources-path. It returns a copy: callers may edit it.
func CartstoreComponent() []byte { return append([]byte(nil), cartstoreComponent...) }

// DaprConfig returns dapr/config.yaml, the Dapr Configuration (tracing) for
// daprd's --config. It returns a copy: callers may edit it.
func DaprConfig() []byte { return append([]byte(nil), daprConfig...) }
