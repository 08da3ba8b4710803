package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/consumer"
)

// subscription is one pubsub.jetstream component and the app's one
// subscription on it: the component's metadata holds the consumer's
// settings (durable name, ack wait, ...), and it applies them to every
// subscription it serves, so each durable consumer needs a component.
type subscription struct {
	// Component is the component's name, the subscription's pubsub name.
	Component string
	// Topic is the stored subjects the consumer filters on: one
	// partition's, or every partition's.
	Topic string
	// Durable is the durable consumer's name.
	Durable string
}

// plan is how the peer consumes: its subscriptions and the settings every
// component shares.
type plan struct {
	subs          []subscription
	natsURL       string
	concurrency   string // the component's delivery: "single" or "parallel"
	maxAckPending int
	ackWait       string
	// bulk is nil without bulk subscribe.
	bulk *bulkSettings
}

// bulkSettings is Dapr's bulk subscribe configuration of a subscription.
type bulkSettings struct {
	maxMessages int32
	awaitMS     int32
}

// newPlan is the peer's plan for cfg. By default each partition has its
// ordered subscription: "single" delivery, where the component hands daprd
// one message at a time and acks it once the app has handled it, with the
// worker's share of commands in flight (prefetched, still in order). Bulk
// subscribe keeps those subscriptions and asks daprd to batch them.
//
// With -bulk-parallel one subscription covers every partition instead, with
// the component's "parallel" delivery: the only way daprd's emulated bulk
// subscribe sees more than one message at once, and one that gives up both
// per-cart order and acking after the work (see the package doc).
func newPlan(cfg config) plan {
	p := plan{natsURL: cfg.natsURL, ackWait: cfg.ackWait.String(), concurrency: "single"}
	if cfg.bulk {
		p.bulk = &bulkSettings{maxMessages: int32(cfg.bulkMax), awaitMS: int32(cfg.bulkAwait.Milliseconds())}
	}
	if cfg.bulk && cfg.bulkParallel {
		p.concurrency = "parallel"
		p.maxAckPending = consumer.DefaultBuffer
		p.subs = []subscription{{Component: "commands", Topic: cfg.prefix + ".pcmd.>", Durable: "dapr-peer-all"}}
	} else {
		p.maxAckPending = max(1, consumer.DefaultBuffer/cfg.partitions)
		subjects := command.Subjects{Prefix: cfg.prefix}
		for i := range cfg.partitions {
			p.subs = append(p.subs, subscription{
				Component: fmt.Sprintf("commands-p%02d", i), Topic: subjects.Partition(i), Durable: fmt.Sprintf("dapr-peer-p%02d", i),
			})
		}
	}
	if cfg.maxAckPending > 0 {
		p.maxAckPending = cfg.maxAckPending
	}
	return p
}

// durables are the durable consumers the plan's subscriptions create.
func (p plan) durables() []string {
	out := make([]string, len(p.subs))
	for i, s := range p.subs {
		out[i] = s.Durable
	}
	return out
}

// component is the pubsub.jetstream component of s, as YAML.
func (p plan) component(s subscription) []byte {
	meta := [][2]string{
		{"natsURL", p.natsURL},
		{"name", "cartworker-daprpeer-" + s.Component},
		// The worker's stream: its subjects are the published ones, which
		// the stream stores under the partitioned ones the topic filters
		// on, so the component could not find it by the topic.
		{"streamName", command.StreamCommands},
		{"durableName", s.Durable},
		// As the worker's consumers: from the start of the stream, each
		// message acked once handled.
		{"deliverPolicy", "all"},
		{"ackPolicy", "explicit"},
		{"ackWait", p.ackWait},
		{"maxAckPending", strconv.Itoa(p.maxAckPending)},
		{"concurrency", p.concurrency},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: %s\nspec:\n  type: pubsub.jetstream\n  version: v1\n  metadata:\n", s.Component)
	for _, kv := range meta {
		// Quoted: a topic such as cart.pcmd.7.*.* is no plain YAML scalar.
		fmt.Fprintf(&b, "    - name: %s\n      value: %s\n", kv[0], strconv.Quote(kv[1]))
	}
	return []byte(b.String())
}

// write writes every component into dir, one file each.
func (p plan) write(dir string) error {
	for _, s := range p.subs {
		path := filepath.Join(dir, s.Component+".yaml")
		if err := os.WriteFile(path, p.component(s), 0o644); err != nil {
			return fmt.Errorf("writing component %s: %w", s.Component, err)
		}
	}
	return nil
}
