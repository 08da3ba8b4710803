package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cartworker/cartworker/internal/consumer"
)

func testConfig() config {
	return config{natsURL: "nats://127.0.0.1:4222", prefix: "cart", partitions: 4, bulkMax: 100, bulkAwait: time.Millisecond, ackWait: 5 * time.Second}
}

func TestPlanOneOrderedSubscriptionPerPartition(t *testing.T) {
	for _, bulk := range []bool{false, true} {
		cfg := testConfig()
		cfg.bulk = bulk
		p := newPlan(cfg)
		if len(p.subs) != 4 || p.concurrency != "single" || p.maxAckPending != consumer.DefaultBuffer/4 {
			t.Fatalf("bulk %v: plan %+v", bulk, p)
		}
		if s := p.subs[3]; s.Component != "commands-p03" || s.Topic != "cart.pcmd.3.*.*" || s.Durable != "dapr-peer-p03" {
			t.Errorf("bulk %v: subscription %+v", bulk, s)
		}
		if (p.bulk != nil) != bulk || (bulk && (p.bulk.maxMessages != 100 || p.bulk.awaitMS != 1)) {
			t.Errorf("bulk %v: bulk settings %+v", bulk, p.bulk)
		}
	}
}

func TestPlanBulkParallel(t *testing.T) {
	cfg := testConfig()
	cfg.bulk, cfg.bulkParallel, cfg.maxAckPending = true, true, 10
	p := newPlan(cfg)
	if len(p.subs) != 1 || p.subs[0].Topic != "cart.pcmd.>" || p.concurrency != "parallel" || p.maxAckPending != 10 {
		t.Fatalf("plan %+v", p)
	}
	// -bulk-parallel means nothing without -bulk.
	cfg.bulk = false
	if p := newPlan(cfg); len(p.subs) != 4 || p.concurrency != "single" {
		t.Fatalf("without -bulk: %+v", p)
	}
}

// component is what daprd reads of a component file.
type component struct {
	Kind     string
	Metadata struct{ Name string }
	Spec     struct {
		Type     string
		Metadata []struct{ Name, Value string }
	}
}

func TestComponentFiles(t *testing.T) {
	p := newPlan(testConfig())
	dir := t.TempDir()
	if err := p.write(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "commands-p02.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c component
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	meta := map[string]string{}
	for _, m := range c.Spec.Metadata {
		meta[m.Name] = m.Value
	}
	if c.Kind != "Component" || c.Metadata.Name != "commands-p02" || c.Spec.Type != "pubsub.jetstream" {
		t.Fatalf("component %+v", c)
	}
	want := map[string]string{
		"natsURL": "nats://127.0.0.1:4222", "streamName": "CART_COMMANDS", "durableName": "dapr-peer-p02",
		"deliverPolicy": "all", "ackPolicy": "explicit", "ackWait": "5s", "maxAckPending": "512", "concurrency": "single",
	}
	for k, v := range want {
		if meta[k] != v {
			t.Errorf("%s = %q, want %q", k, meta[k], v)
		}
	}
}
