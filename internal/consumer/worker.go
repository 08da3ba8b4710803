package consumer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cartcache"
)

// Applier applies one validated command. cartcache.Carts implements it.
type Applier interface {
	Apply(ctx context.Context, cmd command.Command) (cartcache.Result, error)
}

var _ Applier = (*cartcache.Carts)(nil)

// Publisher sends outcome events on core NATS. *nats.Conn implements it.
type Publisher interface {
	Publish(subject string, data []byte) error
}

var _ Publisher = (*nats.Conn)(nil)

// Worker consumes cart commands. Create it with New, call Setup once, then Run.
type Worker struct {
	js   jetstream.JetStream
	pub  Publisher
	app  Applier
	cfg  Config
	log  *slog.Logger
	gate *gate
}

// New returns a Worker. It does not touch the server until Setup or Run.
func New(js jetstream.JetStream, pub Publisher, app Applier, cfg Config) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("consumer config: %w", err)
	}
	cfg = cfg.withDefaults()
	w := &Worker{js: js, pub: pub, app: app, cfg: cfg, log: cfg.Logger}
	w.gate = newGate(cfg.Probe, w.probeDelay, cfg.Logger)
	return w, nil
}

// Ready returns nil while the instance can serve commands, else why not: the
// last failed probe of its environment, such as a rejected API token or a
// missing state store. Until Run's first probe passes it reports that the
// store has not been checked yet.
func (w *Worker) Ready() error { return w.gate.err() }

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

func (w *Worker) consume(ctx context.Context, cons Consumers) error {
	// work is the context handlers run under: it outlives ctx by at most
	// ShutdownTimeout so that in-flight commands can finish.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	r := &run{stop: ctx, work: work, beats: newHeartbeats(), failures: failures{kv: cons.Failures}}

	// The prober stops when shutdown begins; heartbeats go on until every
	// held command is settled.
	var bg sync.WaitGroup
	probeCtx, stopProbes := context.WithCancel(ctx)
	beatCtx, stopBeats := context.WithCancel(context.WithoutCancel(ctx))
	bg.Go(func() { w.gate.run(probeCtx) })
	bg.Go(func() { r.beats.run(beatCtx, w.cfg.AckWait/3) })
	defer func() {
		stopProbes()
		stopBeats()
		bg.Wait()
	}()

	pool := newKeyedPool(w.cfg.Concurrency, func(msg jetstream.Msg) {
		w.handle(r, msg)
		r.beats.remove(msg)
	})
	poolDone := make(chan struct{})
	bg.Go(func() {
		select {
		case <-ctx.Done():
			t := time.NewTimer(w.cfg.ShutdownTimeout)
			defer t.Stop()
			select {
			case <-t.C:
				// Handlers see a cancelled context and Nak; the pull
				// loop stops waiting on a drain stuck on a broken
				// connection.
				cancelWork()
			case <-poolDone:
			}
		case <-poolDone:
		}
	})

	// Every consumer has its own puller. One that fails (its consumer was
	// deleted, the connection closed for good) stops them all, so that Run
	// fails and a supervisor restarts the worker.
	pullCtx, stopPulling := context.WithCancel(ctx)
	defer stopPulling()
	var (
		pullers sync.WaitGroup
		errMu   sync.Mutex
		pullErr error
	)
	puller := func(c jetstream.Consumer) {
		pullers.Go(func() {
			if err := w.pullLoop(pullCtx, c, pool, r); err != nil {
				errMu.Lock()
				pullErr = cmp.Or(pullErr, err)
				errMu.Unlock()
				stopPulling()
			}
		})
	}
	puller(cons.Strays)
	pullers.Go(func() {
		// Commands stored before the stream was partitioned come first: a
		// cart's newer commands wait in their partitions until they are
		// done.
		if err := w.waitDrained(pullCtx, cons.Strays); err != nil {
			return
		}
		for _, c := range cons.Partitions {
			puller(c)
		}
	})
	pullers.Wait()
	pool.close()
	close(poolDone)
	return pullErr
}

// pullLoop feeds the pool from one consumer until ctx ends or delivery
// stops by itself, pausing while the gate is closed.
func (w *Worker) pullLoop(ctx context.Context, cons jetstream.Consumer, pool *keyedPool, r *run) error {
	var err error
	for err == nil && ctx.Err() == nil && w.gate.wait(ctx) == nil {
		var parked []jetstream.Msg
		parked, err = w.pull(ctx, cons, pool, r)
		if len(parked) == 0 {
			continue
		}
		// The gate closed under the pull: the messages already on their
		// way wait here, kept alive, until it opens again, or are handed
		// back for a healthy instance if it stays closed.
		if w.gate.waitOrHandBack(ctx) != nil {
			for _, msg := range parked {
				w.settle(msg, msg.Nak(), "nak")
				r.beats.remove(msg)
			}
			continue
		}
		for _, msg := range parked {
			pool.submit(w.cartOf(msg), msg)
		}
	}
	return err
}

// waitDrained returns once c has nothing pending or in flight, or ctx's
// error. It polls: it only ever waits for a backlog left by an earlier,
// unpartitioned version.
func (w *Worker) waitDrained(ctx context.Context, c jetstream.Consumer) error {
	for logged := false; ; {
		info, err := c.Info(ctx)
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
			if logged {
				w.log.Info("commands stored before partitioning are done; consuming partitions")
			}
			return nil
		}
		if err == nil && !logged {
			logged = true
			w.log.Info("finishing commands stored before partitioning first", "pending", info.NumPending+uint64(info.NumAckPending))
		}
		if !sleepCtx(ctx, drainPollDelay) {
			return ctx.Err()
		}
	}
}

// cartOf is the key of msg in the pool: its cart id, or its subject when
// that names no cart (it will be dead-lettered).
func (w *Worker) cartOf(msg jetstream.Msg) string {
	subject := w.cfg.Subjects.Published(msg.Subject())
	if cartID, _, ok := w.cfg.Subjects.ParseCommand(subject); ok {
		return cartID
	}
	return subject
}

// pull feeds the pool from one pull iterator until shutdown begins, the gate
// closes, or delivery stops by itself. It returns the messages it received
// after the gate closed, which it did not start.
func (w *Worker) pull(ctx context.Context, cons jetstream.Consumer, pool *keyedPool, r *run) ([]jetstream.Msg, error) {
	iter, err := cons.Messages(
		// The consumer lets one message be in flight, so the server never
		// sends more than one at a time whatever the batch; a large batch
		// only means fewer pull requests, about one per pullBatch/2
		// commands instead of one per command.
		jetstream.PullMaxMessages(pullBatch),
		jetstream.WithMessagesErrOnMissingHeartbeat(false),
	)
	if err != nil {
		return nil, fmt.Errorf("pull from %s: %w", cons.CachedInfo().Name, err)
	}
	var (
		wg      sync.WaitGroup
		drained atomic.Bool
	)
	stopWatch := make(chan struct{})
	closing := w.gate.closing()
	wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-closing:
		case <-stopWatch:
			iter.Stop()
			return
		}
		// Drain stops the pulls but still hands out what is buffered,
		// which is handled, or parked while the gate is closed.
		drained.Store(true)
		iter.Drain()
	})
	defer func() {
		close(stopWatch)
		wg.Wait()
	}()

	var parked []jetstream.Msg
	var lastErr error
	for {
		// NextContext(work) bounds the wait after shutdown even when NATS
		// is unreachable and the drain cannot complete.
		msg, err := iter.Next(jetstream.NextContext(r.work))
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || r.work.Err() != nil {
				break
			}
			// Heartbeat and status hiccups are reported by the iterator and
			// then recovered by it; wait a little rather than spin.
			lastErr = err
			w.log.Warn("pull from JetStream failed", "err", err)
			sleepCtx(r.work, pullErrorDelay)
			continue
		}
		r.beats.add(msg)
		if ctx.Err() == nil && w.gate.err() != nil {
			parked = append(parked, msg)
			continue
		}
		pool.submit(w.cartOf(msg), msg)
	}
	if !drained.Load() && ctx.Err() == nil {
		// The iterator closed by itself (consumer deleted, connection
		// closed): stopping quietly would leave a live process that consumes
		// nothing, so fail and let the supervisor restart the worker.
		return parked, fmt.Errorf("%w: %w", ErrStopped, errors.Join(lastErr, jetstream.ErrMsgIteratorClosed))
	}
	return parked, nil
}

// pullBatch is the batch of each pull request.
const pullBatch = 64

// run is what the handlers of one Run share.
type run struct {
	// stop ends when shutdown begins: held commands stop waiting for the
	// gate then.
	stop context.Context
	// work ends ShutdownTimeout later: commands still running are cut off.
	work     context.Context
	beats    *heartbeats
	failures failures
}
