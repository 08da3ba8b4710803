package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cartcache"
)

// Applier applies one validated command. cartcache.Service implements it.
type Applier interface {
	Apply(ctx context.Context, cmd command.Command) (cartcache.Result, error)
}

var _ Applier = (*cartcache.Service)(nil)

// Publisher sends outcome events on core NATS. *nats.Conn implements it.
type Publisher interface {
	Publish(subject string, data []byte) error
}

var _ Publisher = (*nats.Conn)(nil)

// Worker consumes cart commands. Create it with New, call Setup once, then Run.
type Worker struct {
	js  jetstream.JetStream
	pub Publisher
	app Applier
	cfg Config
	log *slog.Logger
}

// New returns a Worker. It does not touch the server until Setup or Run.
func New(js jetstream.JetStream, pub Publisher, app Applier, cfg Config) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("consumer config: %w", err)
	}
	cfg = cfg.withDefaults()
	return &Worker{js: js, pub: pub, app: app, cfg: cfg, log: cfg.Logger}, nil
}

// Run sets up JetStream, then pulls and handles commands until ctx ends. It
// then stops pulling, lets the pool finish what it holds within
// ShutdownTimeout, Naks whatever is left, and returns nil. Its goroutines
// have all exited when it returns.
func (w *Worker) Run(ctx context.Context) error {
	cons, err := w.setupWithRetry(ctx)
	if err != nil {
		return err
	}
	return w.consume(ctx, cons)
}

func (w *Worker) consume(ctx context.Context, cons jetstream.Consumer) error {
	n := w.cfg.Concurrency
	iter, err := cons.Messages(
		jetstream.PullMaxMessages(n),
		jetstream.WithMessagesErrOnMissingHeartbeat(false),
	)
	if err != nil {
		return fmt.Errorf("pull from %s: %w", command.ConsumerName, err)
	}

	// work is the context handlers run under: it outlives ctx by at most
	// ShutdownTimeout so that in-flight commands can finish.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	var wg sync.WaitGroup
	stopWatch := make(chan struct{})
	wg.Go(func() {
		select {
		case <-ctx.Done():
			// Drain stops the pulls but still hands out what is buffered,
			// which the pool handles or Naks below.
			iter.Drain()
			t := time.NewTimer(w.cfg.ShutdownTimeout)
			defer t.Stop()
			select {
			case <-t.C:
				// Handlers see a cancelled context and Nak; the pull loop
				// stops waiting on a drain stuck on a broken connection.
				cancelWork()
			case <-stopWatch:
			}
		case <-stopWatch:
			iter.Stop()
		}
	})

	pool := newKeyedPool(n, func(msg jetstream.Msg) { w.handle(work, msg) })

	var lastErr error
	for {
		// NextContext(work) bounds the wait after shutdown even when NATS
		// is unreachable and the drain cannot complete.
		msg, err := iter.Next(jetstream.NextContext(work))
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || work.Err() != nil {
				break
			}
			// Heartbeat and status hiccups are reported by the iterator and
			// then recovered by it; wait a little rather than spin.
			lastErr = err
			w.log.Warn("pull from JetStream failed", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		cartID, _, _ := w.cfg.Subjects.ParseCommand(msg.Subject())
		pool.submit(cartID, msg)
	}
	pool.close()
	close(stopWatch)
	wg.Wait()
	if ctx.Err() == nil {
		// The iterator closed by itself (consumer deleted, connection
		// closed): stopping quietly would leave a live process that consumes
		// nothing, so fail and let the supervisor restart the worker.
		return fmt.Errorf("%w: %w", ErrStopped, errors.Join(lastErr, jetstream.ErrMsgIteratorClosed))
	}
	return nil
}
