// Command daprpeer is the benchmark's Dapr pub/sub peer: what a team
// already on Dapr would write instead of a NATS consumer. Its daprd
// subscribes to the command stream through the pubsub.jetstream component
// (registered in the daprd tools/daprd builds) and delivers each command to
// this app, a Dapr Go SDK gRPC service (github.com/dapr/go-sdk/service/grpc);
// the app does the worker's read-modify-write with ETag through the SDK's
// state client (GetState, then SaveState with the ETag and first-write
// concurrency, re-read and re-applied on a mismatch: cartworker's own cart
// rules and ETag loop, internal/cartcache, through the replace directive as
// bench/watermillpeer does) and publishes the same outcome event on core
// NATS with a plain nats.go connection, as the worker does, so that the
// comparison measures consuming and state, not event storage.
//
// The app is the SDK's gRPC service rather than its HTTP one. daprd then
// delivers over one HTTP/2 connection it keeps open, the command as raw
// bytes in a protobuf envelope and the subject it was stored under in a
// header the handler can read (the SDK's HTTP handler sees only the
// CloudEvent, whose topic is the subscription's filter, so it could not
// check a command against its subject as the worker does). Measured side by
// side on the bench machine (64 users, closed loop, no bulk), the gRPC
// service carried 910-1,030 add-items/s and the HTTP one 800.
//
// The peer runs its own daprd (the -daprd binary) as a child process: the
// two are one consumer, started, measured and stopped together, which is
// what `loadgen backlog` needs of a consumer it launches. It writes the
// pubsub.jetstream components into a directory of its own and gives daprd
// that directory and -resources, which holds the state store (cartstore).
//
// It consumes as the worker does: one pubsub.jetstream component and
// subscription per partition of the command stream, each with its own
// durable consumer (dapr-peer-pNN) and the worker's share of commands in
// flight (consumer.DefaultBuffer / partitions), and the component's
// "single" delivery, which hands daprd one message at a time and acks it
// once the app has handled it, so that each cart's commands apply in stream
// order.
//
// With -bulk the same subscriptions ask for Dapr's bulk subscribe.
// pubsub.jetstream is a push consumer with no bulk support of its own, so
// daprd emulates it, gathering into a batch the messages the component
// hands it at once; with single delivery that is always one, which waits
// out -bulk-await before it goes (and daprd's batch timer ticks at that
// period per subscription, idle or not). The go-sdk's service has no bulk callback
// (dapr/go-sdk#800), so the app answers OnBulkTopicEvent through a gRPC
// interceptor on the SDK's server, and asks for bulk delivery in the
// subscriptions it lists. -bulk-parallel is what batches: one subscription
// over every partition with the component's "parallel" delivery. But the
// component then returns from nats.go's callback before the work is done,
// and nats.go acks the message there and then (components-contrib#3656):
// delivery becomes at most once, MaxAckPending bounds nothing, and a cart's
// commands race each other. So the benchmark measures -bulk with single
// delivery, and -bulk-parallel is there to show why.
//
// The command stream is the worker's (its partitioned subjects, created
// here as the worker creates it when missing), on a NATS server of the
// peer's own. scripts/bench.sh builds the peer (its own module, so that
// cartworker never depends on the go-sdk's service) and runs one per mode.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/consumer"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "daprpeer:", err)
		os.Exit(1)
	}
}

// config is the peer's command line.
type config struct {
	natsURL   string
	daprd     string
	resources string
	workDir   string
	appID     string
	store     string
	// Ports of the peer's daprd (HTTP and gRPC APIs, internal gRPC) and of
	// this app's gRPC service, all on 127.0.0.1.
	httpPort, grpcPort, internalPort, appPort int
	daprdLogLevel                             string
	prefix                                    string
	partitions                                int
	bulk, bulkParallel                        bool
	bulkMax                                   int
	bulkAwait                                 time.Duration
	maxAckPending                             int
	ackWait                                   time.Duration
	httpAddr                                  string
	readyTimeout                              time.Duration
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("daprpeer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.natsURL, "nats", "nats://127.0.0.1:4222", "NATS URL (a server of its own: the peer runs instead of the worker)")
	fs.StringVar(&c.daprd, "daprd", "daprd", "daprd binary with pubsub.jetstream (tools/daprd)")
	fs.StringVar(&c.resources, "resources", "", "directory of the state store component (required)")
	fs.StringVar(&c.workDir, "work-dir", "", "directory for the pubsub.jetstream components (default: a temporary one, removed on exit)")
	fs.StringVar(&c.appID, "app-id", "cartworker", "daprd app id (the state store's key prefix and scope)")
	fs.StringVar(&c.store, "store", "cartstore", "Dapr state store")
	fs.IntVar(&c.httpPort, "dapr-http-port", 3500, "daprd HTTP port")
	fs.IntVar(&c.grpcPort, "dapr-grpc-port", 50001, "daprd gRPC port")
	fs.IntVar(&c.internalPort, "dapr-internal-grpc-port", 50002, "daprd internal gRPC port")
	fs.IntVar(&c.appPort, "app-port", 50003, "port of this app's gRPC service, which daprd delivers to")
	fs.StringVar(&c.daprdLogLevel, "daprd-log-level", "warn", "daprd's log level")
	fs.StringVar(&c.prefix, "prefix", command.DefaultPrefix, "subject prefix (CART_SUBJECT_PREFIX)")
	fs.IntVar(&c.partitions, "partitions", command.DefaultPartitions, "partitions of the command stream (the worker's WORKER_PARTITIONS)")
	fs.BoolVar(&c.bulk, "bulk", false, "subscribe with Dapr's bulk subscribe (emulated by daprd for pubsub.jetstream)")
	fs.BoolVar(&c.bulkParallel, "bulk-parallel", false, "with -bulk: one subscription over every partition with the component's parallel delivery, which batches but acks each message on receipt and loses per-cart order (not for the benchmark)")
	fs.IntVar(&c.bulkMax, "bulk-max-messages", 100, "bulk subscribe: most messages in one batch (Dapr's default)")
	fs.DurationVar(&c.bulkAwait, "bulk-await", time.Millisecond, "bulk subscribe: longest wait for a batch to fill, whole ms (the least: with single delivery no batch fills, so every message waits it out)")
	fs.IntVar(&c.maxAckPending, "max-ack-pending", 0, "commands in flight per consumer (default: the worker's, consumer.DefaultBuffer split over the consumers)")
	fs.DurationVar(&c.ackWait, "ack-wait", consumer.DefaultAckWait, "JetStream ack wait of the consumers (the worker's default)")
	fs.StringVar(&c.httpAddr, "http-addr", "", "serve /readyz here once every subscription is up (e.g. 127.0.0.1:8090)")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", 60*time.Second, "bound on daprd's start and the subscriptions")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return c, c.check()
}

// check refuses the settings the peer cannot run with.
func (c *config) check() error {
	switch {
	case c.resources == "":
		return errors.New("-resources is required")
	case c.partitions < 1 || c.partitions > command.MaxPartitions:
		return fmt.Errorf("-partitions %d: want 1..%d", c.partitions, command.MaxPartitions)
	case c.bulkMax < 1:
		return fmt.Errorf("-bulk-max-messages %d: want at least 1", c.bulkMax)
	case c.bulkAwait < time.Millisecond:
		return fmt.Errorf("-bulk-await %s: want at least 1ms", c.bulkAwait)
	case c.maxAckPending < 0:
		return fmt.Errorf("-max-ack-pending %d: want 0 (the worker's) or more", c.maxAckPending)
	case c.ackWait < time.Second:
		return fmt.Errorf("-ack-wait %s: want at least 1s", c.ackWait)
	}
	for _, p := range []int{c.httpPort, c.grpcPort, c.internalPort, c.appPort} {
		if p < 1 || p > 65535 {
			return fmt.Errorf("port %d: want 1..65535", p)
		}
	}
	return nil
}
