package main

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
)

// startJetStream is an embedded JetStream server and a client of it.
func startJetStream(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc := testkit.Connect(t, testkit.StartJetStream(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func TestEnsureStream(t *testing.T) {
	_, js := startJetStream(t)
	ctx := testkit.Context(t, 30*time.Second)
	s := command.Subjects{}
	for range 2 { // created, then found as it is
		if err := ensureStream(ctx, js, s, 4); err != nil {
			t.Fatal(err)
		}
	}
	st, err := js.Stream(ctx, command.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; cfg.Subjects[0] != "cart.cmd.>" || cfg.SubjectTransform == nil || cfg.Duplicates != 2*time.Minute {
		t.Fatalf("stream config %+v", cfg)
	}
	if err := ensureStream(ctx, js, s, 8); err == nil || !strings.Contains(err.Error(), "not partitioned into 8") {
		t.Fatalf("other partitions: %v", err)
	}
}

func TestWaitBound(t *testing.T) {
	nc, js := startJetStream(t)
	ctx := testkit.Context(t, 30*time.Second)
	if err := ensureStream(ctx, js, command.Subjects{}, 2); err != nil {
		t.Fatal(err)
	}
	// Missing: never bound.
	if err := waitBound(ctx, js, []string{"p0"}, 200*time.Millisecond); err == nil {
		t.Fatal("a missing consumer is not bound")
	}
	if _, err := js.CreateOrUpdatePushConsumer(ctx, command.StreamCommands, jetstream.ConsumerConfig{
		Durable: "p0", DeliverSubject: "deliver.p0", AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	// Bound once something listens on its deliver subject, as daprd does.
	sub, err := nc.SubscribeSync("deliver.p0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := waitBound(ctx, js, []string{"p0"}, 20*time.Second); err != nil {
		t.Fatal(err)
	}
}
