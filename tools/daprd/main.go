// Command daprd is Dapr's sidecar, v1.18.0's cmd/daprd built with the
// stablecomponents tag, plus the one component the bench needs that is not
// stable: pubsub.jetstream (components-contrib's pubsub/jetstream).
//
// It exists so that scripts/build-images.sh keeps building one daprd binary
// and one image: the bench's Dapr pub/sub peer (bench/daprpeer) subscribes
// through pubsub.jetstream, and every other user of the image sees the
// stable set it had before, since a component is only loaded when a
// resources file names it.
//
// Build (from this directory):
//
//	CGO_ENABLED=0 go build -tags stablecomponents -o daprd .
package main

import (
	"github.com/dapr/components-contrib/pubsub/jetstream"
	"github.com/dapr/dapr/cmd/daprd/app"
	pubsubloader "github.com/dapr/dapr/pkg/components/pubsub"
)

func main() {
	// Registered here rather than in an init() so that the only side effect
	// of importing this program's packages stays dapr's own: the registry
	// is read when the runtime loads the resources, after this line, inside
	// app.Run. The name is dapr's own ("jetstream" makes "pubsub.jetstream"),
	// as cmd/daprd/components/pubsub_jetstream.go registers it under the
	// allcomponents tag.
	pubsubloader.DefaultRegistry.RegisterComponent(jetstream.NewJetStream, "jetstream")
	app.Run()
}
