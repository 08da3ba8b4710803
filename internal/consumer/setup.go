package consumer

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
)

// Setup creates or updates the command and dead-letter streams and the
// shared durable consumer. Every instance calls it at start-up; it is
// idempotent.
func (w *Worker) Setup(ctx context.Context) (jetstream.Consumer, error) {
	s := w.cfg.Subjects
	if _, err := w.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        command.StreamCommands,
		Description: "cart commands, consumed by cartworker",
		Subjects:    []string{s.Commands()},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      w.cfg.CommandMaxAge,
		Duplicates:  w.cfg.DuplicateWindow,
		Replicas:    w.cfg.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("stream %s: %w", command.StreamCommands, err)
	}
	if _, err := w.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        command.StreamDeadLetters,
		Description: "cart commands that can never be applied",
		Subjects:    []string{s.DeadLetters()},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      w.cfg.DeadLetterMaxAge,
		Duplicates:  w.cfg.DuplicateWindow,
		Replicas:    w.cfg.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("stream %s: %w", command.StreamDeadLetters, err)
	}
	cons, err := w.js.CreateOrUpdateConsumer(ctx, command.StreamCommands, jetstream.ConsumerConfig{
		Durable:       command.ConsumerName,
		Description:   "cartworker instances share this consumer",
		FilterSubject: s.Commands(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.cfg.AckWait,
		// The worker, not the server, decides when to give up, so that an
		// open breaker never exhausts a command's deliveries and every give
		// up is a dead letter rather than a silent drop.
		MaxDeliver:    -1,
		MaxAckPending: w.cfg.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", command.ConsumerName, err)
	}
	return cons, nil
}

// setupWithRetry retries Setup for up to SetupTimeout: at start-up NATS may
// still be coming up next to the worker, as in docker compose.
func (w *Worker) setupWithRetry(ctx context.Context) (jetstream.Consumer, error) {
	deadline := time.Now().Add(w.cfg.SetupTimeout)
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cons, err := w.Setup(attemptCtx)
		cancel()
		if err == nil {
			return cons, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, err
		}
		w.log.Warn("JetStream setup failed, retrying", "err", err)
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}
