package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
)

// ensureStream creates the command stream as the worker creates it
// (internal/consumer/setup.go: subjects <prefix>.cmd.>, file storage, a
// 2-minute duplicate window, kept 24 h, partitioned by the subject
// transform) when it is missing, and checks that an existing one is
// partitioned into as many partitions as the peer subscribes to.
func ensureStream(ctx context.Context, nc *nats.Conn, s command.Subjects, partitions int) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	src, dst := s.PartitionTransform(partitions)
	st, err := js.Stream(ctx, command.StreamCommands)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:             command.StreamCommands,
			Description:      "cart commands, consumed by the Watermill peer",
			Subjects:         []string{s.Commands()},
			Storage:          jetstream.FileStorage,
			Retention:        jetstream.LimitsPolicy,
			MaxAge:           24 * time.Hour,
			Duplicates:       2 * time.Minute,
			Replicas:         1,
			SubjectTransform: &jetstream.SubjectTransformConfig{Source: src, Destination: dst},
		})
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("create stream %s: %w", command.StreamCommands, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("stream %s: %w", command.StreamCommands, err)
	}
	t := st.CachedInfo().Config.SubjectTransform
	if t == nil || t.Source != src || t.Destination != dst {
		return fmt.Errorf("stream %s is not partitioned into %d (transform %+v): start the peer on a NATS server of its own", command.StreamCommands, partitions, t)
	}
	return nil
}
