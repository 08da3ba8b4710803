package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/consumer"
)

// ensureStream makes sure the command stream exists before daprd
// subscribes, since pubsub.jetstream creates consumers but never streams:
// a missing one is created with the worker's configuration
// (internal/consumer's defaults), and an existing one must be partitioned
// into as many partitions as the peer subscribes to.
func ensureStream(ctx context.Context, js jetstream.JetStream, s command.Subjects, partitions int) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	src, dst := s.PartitionTransform(partitions)
	want := jetstream.StreamConfig{
		Name:        command.StreamCommands,
		Description: "cart commands, consumed by the Dapr pub/sub peer",
		Subjects:    []string{s.Commands()},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      consumer.DefaultCommandMaxAge,
		Duplicates:  consumer.MinDuplicateWindow,
		Replicas:    consumer.DefaultReplicas,
		SubjectTransform: &jetstream.SubjectTransformConfig{
			Source: src, Destination: dst,
		},
	}
	_, err := js.CreateStream(ctx, want)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("create stream %s: %w", command.StreamCommands, err)
	}
	st, err := js.Stream(ctx, command.StreamCommands)
	if err != nil {
		return fmt.Errorf("stream %s: %w", command.StreamCommands, err)
	}
	if have := st.CachedInfo().Config.SubjectTransform; have == nil || *have != *want.SubjectTransform {
		return fmt.Errorf("stream %s is not partitioned into %d (transform %+v): give the peer a NATS server of its own",
			command.StreamCommands, partitions, have)
	}
	return nil
}

// waitBound waits until every durable consumer exists and daprd's push
// subscription is bound to it: from then on the peer consumes.
func waitBound(ctx context.Context, js jetstream.JetStream, durables []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	pending := slices.Clone(durables)
	for {
		pending = slices.DeleteFunc(pending, func(name string) bool { return bound(ctx, js, name) })
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("consumers %v of %s not subscribed: %w", pending, command.StreamCommands, ctx.Err())
		case <-tick.C:
		}
	}
}

// bound reports whether the durable consumer name exists with a push
// subscription bound to it.
func bound(ctx context.Context, js jetstream.JetStream, name string) bool {
	c, err := js.PushConsumer(ctx, command.StreamCommands, name)
	if err != nil {
		return false
	}
	return c.CachedInfo().PushBound
}
