package consumer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/ownership"
)

// Applier applies the validated commands of several distinct carts, each
// cart's in order in one read-modify-write, with an outcome for each
// command or an error for the cart, after which nothing of that cart was
// applied (see cartcache.Carts.ApplyCarts, which implements it). Results
// are in the order of batches.
type Applier interface {
	ApplyCarts(ctx context.Context, batches []cartcache.CartBatch) []cartcache.CartResult
}

var _ Applier = (*cartcache.Carts)(nil)

// Publisher sends outcome events, with their trace context in headers, on
// core NATS. *nats.Conn implements it.
type Publisher interface {
	PublishMsg(msg *nats.Msg) error
}

var _ Publisher = (*nats.Conn)(nil)

// owner is what the consumer needs of the partitions' ownership: which
// partitions it may pull, under which grant, whether a grant still holds
// when a command is applied or settled, and a rewind of a partition.
// ownership.Leases implements it.
type owner interface {
	Run(ctx context.Context, done <-chan struct{})
	MayPull(p int) (ownership.Grant, bool, <-chan struct{})
	Holds(g ownership.Grant) bool
	Pulling(p int, on bool)
	Received(p int)
	Settled(p int)
	Holding(p int) int
	Rewind(ctx context.Context, g ownership.Grant) error
	ReplayedUpTo(p int) uint64
	Owned(n int) []int
}

var _ owner = (*ownership.Leases)(nil)

// Worker consumes cart commands. Create it with New, then Run it: Run sets
// JetStream up itself (Setup, tried again for up to SetupTimeout), so
// calling Setup first is not needed; it may be called on its own, to set
// JetStream up without consuming.
type Worker struct {
	js   jetstream.JetStream
	pub  Publisher
	app  Applier
	cfg  Config
	log  *slog.Logger
	gate *gate
	// stalls are the consumers whose fetches keep failing (stalls.go).
	stalls *stalls
	// tracing makes the worker's spans (trace.go).
	tracing tracing
}

// New returns a Worker. It does not touch the server until Setup or Run.
func New(js jetstream.JetStream, pub Publisher, app Applier, cfg Config) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("consumer config: %w", err)
	}
	cfg = cfg.withDefaults()
	w := &Worker{js: js, pub: pub, app: app, cfg: cfg, log: cfg.Logger, tracing: newTracing(cfg), stalls: newStalls()}
	w.gate = newGate(cfg.Probe, w.probeDelay, w.handBackAfter(), cfg.Logger)
	return w, nil
}

// Ready returns nil while the instance can serve commands, else why not: the
// last failed probe of its environment, such as a rejected API token or a
// missing state store, or a consumer it pulls whose fetches have failed for
// longer than AckWait, which names the stream. Until Run's first probe
// passes it reports that the store has not been checked yet. A failing
// fetch is only reported: the instance keeps its partitions and goes on
// trying, and answers ready again once a fetch works.
func (w *Worker) Ready() error {
	if err := w.gate.err(); err != nil {
		return err
	}
	return w.stalls.err(w.cfg.AckWait)
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

// consume runs the pullers, the pool and what runs beside them
// (startBackground) until ctx ends, then stops pulling, lets the pool
// finish what it holds within ShutdownTimeout (cutOffWork), and returns
// the error of a puller that failed, if one did.
func (w *Worker) consume(ctx context.Context, cons Consumers) error {
	// work is the context handlers run under: it outlives ctx by at most
	// ShutdownTimeout so that in-flight commands can finish.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	r := &run{stop: ctx, work: work, beats: newHeartbeats(), failures: failures{kv: cons.Failures},
		owner: ownership.New(w.js, cons.Members, cons.Leases, w.gate, w.ownershipConfig())}
	if len(cons.Partitions) > 0 {
		r.idle = newIdlePartitions(w.js.Conn(), w.cfg.Subjects, len(cons.Partitions))
	}

	var bg sync.WaitGroup
	poolDone := make(chan struct{})
	stopBackground := w.startBackground(ctx, &bg, r, cons, poolDone)
	defer func() {
		stopBackground()
		bg.Wait()
	}()
	pool := newKeyedPool(w.cfg.Concurrency, w.cfg.Buffer+1, w.cfg.Held, w.cfg.BatchMax, w.cfg.BatchMaxBytes, w.cfg.BatchCarts,
		func(batches [][]jetstream.Msg) { w.handle(r, batches) })
	bg.Go(func() { w.cutOffWork(ctx, poolDone, cancelWork) })

	err := w.pullAll(ctx, cons, pool, r)
	pool.close()
	close(poolDone)
	return err
}

// startBackground starts, in bg, what runs beside the pullers: the prober
// and the sampler, which stop when shutdown begins (ctx); the heartbeats,
// which go on until every held command is settled, when stop is called;
// and the leases, which are given back once poolDone is closed.
func (w *Worker) startBackground(ctx context.Context, bg *sync.WaitGroup, r *run, cons Consumers, poolDone <-chan struct{}) (stop func()) {
	probeCtx, stopProbes := context.WithCancel(ctx)
	beatCtx, stopBeats := context.WithCancel(context.WithoutCancel(ctx))
	bg.Go(func() { w.gate.run(probeCtx) })
	bg.Go(func() { r.beats.run(beatCtx, w.cfg.AckWait/3) })
	bg.Go(func() { r.owner.Run(probeCtx, poolDone) })
	bg.Go(func() { w.sample(probeCtx, r, cons) })
	if r.idle != nil {
		bg.Go(func() { r.idle.watch(probeCtx, w.js) })
	}
	return func() {
		stopProbes()
		stopBeats()
	}
}

// cutOffWork cancels the work (cancelWork) once ShutdownTimeout has passed
// since ctx ended, unless the pool is done (poolDone) first: handlers then
// see a cancelled context and Nak, and the pull loop stops waiting on a
// drain stuck on a broken connection.
func (w *Worker) cutOffWork(ctx context.Context, poolDone <-chan struct{}, cancelWork context.CancelFunc) {
	select {
	case <-ctx.Done():
	case <-poolDone:
		return
	}
	t := time.NewTimer(w.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-t.C:
		cancelWork()
	case <-poolDone:
	}
}

// pullAll runs a puller for every consumer until ctx ends: the strays'
// first, and the partitions' once the strays are drained. One that fails
// (its consumer was deleted, the connection closed for good) stops them
// all and its error is returned, so that Run fails and a supervisor
// restarts the worker.
func (w *Worker) pullAll(ctx context.Context, cons Consumers, pool *keyedPool, r *run) error {
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
	return pullErr
}

// pullLoop feeds the pool from one consumer until ctx ends or delivery
// stops by itself, pausing while the gate is closed.
func (w *Worker) pullLoop(ctx context.Context, cons jetstream.Consumer, pool *keyedPool, r *run) error {
	partition := -1
	if p, ok := w.cfg.Subjects.PartitionOf(cons.CachedInfo().Config.FilterSubject); ok {
		partition = p
	}
	var err error
	// last is the consumer sequence of the last delivery taken since the
	// partition was last rewound, which every grant begins with: 0 until
	// the first, which must then be 1.
	var (
		last      uint64
		lastGrant ownership.Grant
		// changed is closed once the partition's ownership changes.
		changed <-chan struct{}
	)
	for err == nil && ctx.Err() == nil && w.gate.wait(ctx) == nil {
		grant := ownership.Grant{Partition: -1}
		if partition >= 0 {
			// Only the instance holding the partition's lease pulls it.
			g, ok, ch := r.owner.MayPull(partition)
			if changed = ch; !ok {
				select {
				case <-changed:
				case <-ctx.Done():
				}
				continue
			}
			grant = g
			r.owner.Pulling(partition, true)
		}
		if grant != lastGrant {
			last, lastGrant = 0, grant
		}
		var parked <-chan struct{}
		parked, err = w.pull(ctx, cons, grant, &last, pool, r)
		if partition >= 0 {
			r.owner.Pulling(partition, false)
		}
		if parked != nil {
			sleepParked(ctx, r.owner, grant, parked, changed)
		}
		if partition >= 0 && r.idle != nil {
			r.idle.unpark(partition)
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

// pull feeds the pool from cons, one fetch at a time, until shutdown
// begins, the gate closes, the instance loses or gives back the partition
// it holds under grant (grant.Partition is -1 for a consumer that is not a
// partition), or delivery stops by itself. Each fetch is read to its end: a
// pull request is never abandoned with commands on their way. So when pull
// returns, no request of this instance is left on the server.
//
// A delivery lost on its way, or a failed fetch, may leave a command behind
// the ones after it: the partition is then rewound to its ack floor, which
// delivers every unacknowledged command again in stream order, rather than
// waiting for the lost one's AckWait.
//
// A partition whose fetch comes back empty, and of which the instance holds
// nothing, is idle: pull parks it (idle.go), makes a last, short fetch, and
// if that finds nothing either returns parked, closed once a command may
// have come; its caller waits for it without pulling.
func (w *Worker) pull(ctx context.Context, cons jetstream.Consumer, grant ownership.Grant, last *uint64, pool *keyedPool, r *run) (
	parked <-chan struct{}, err error) {
	name := cons.CachedInfo().Name
	partition := grant.Partition
	// A fetch asks for no more than the consumer lets be in flight: a
	// stop takes effect after at most that many more commands.
	size := min(pullBatch, max(1, cons.CachedInfo().Config.MaxAckPending))
	// Not pulling it any more: it stalls nothing.
	defer w.stalls.ok(name)
	failures := 0
	for ctx.Err() == nil && w.gate.err() == nil {
		if partition >= 0 {
			if g, ok, _ := r.owner.MayPull(partition); !ok || g != grant {
				return nil, nil
			}
		}
		wait := w.pullExpiry()
		if parked != nil {
			wait = lastLook
		}
		taken, err := w.fetch(ctx, cons, size, wait, grant, last, pool, r)
		switch {
		case err == nil && taken == 0 && partition >= 0 && r.idle != nil && r.owner.Holding(partition) == 0:
			// Nothing came, and nothing of the partition is unacked here
			// to hold back what the server may deliver (MaxAckPending):
			// the partition is idle.
			if parked != nil {
				// The last look found nothing either: stop pulling
				// until a command may have come (idle.go).
				return parked, nil
			}
			// Subscribing fails only on a closed connection, which the
			// next fetch reports.
			if ch, perr := r.idle.park(partition); perr == nil {
				parked = ch
			}
		case err == nil:
			failures = 0
			if parked != nil {
				r.idle.unpark(partition)
				parked = nil
			}
		case stopped(err):
			// The consumer is gone or the connection closed for good:
			// stopping quietly would leave a live process that consumes
			// nothing, so fail and let the supervisor restart the worker.
			return nil, fmt.Errorf("%w: pull from %s: %w", ErrStopped, name, err)
		case r.work.Err() != nil:
			return nil, nil
		case partition >= 0:
			// A gap, or a failed fetch that may have lost deliveries the
			// consumer's new leader does not know were made (and numbers
			// afresh, so no gap shows).
			if failures++; failures == 1 || errors.Is(err, errGap) {
				w.log.Warn("partition rewinds to its ack floor so that nothing overtakes a lost delivery",
					"consumer", name, "err", err)
			}
			if !w.rewind(ctx, grant, r) {
				return nil, nil
			}
			*last = 0
		default:
			// NATS is reconnecting, or its server failed over: wait rather
			// than spin.
			if failures++; failures == 1 {
				w.log.Warn("pull from JetStream failed", "consumer", name, "err", err)
			}
			sleepCtx(ctx, pullErrorDelay)
		}
	}
	return nil, nil
}

// fetch makes one fetch of up to size commands, waiting up to wait, and
// hands what it gets to the pool (take); it notes whether the consumer
// stalls.
func (w *Worker) fetch(ctx context.Context, cons jetstream.Consumer, size int, wait time.Duration, grant ownership.Grant, last *uint64, pool *keyedPool, r *run) (
	taken int, err error) {
	batch, err := cons.Fetch(size, jetstream.FetchMaxWait(wait))
	if err == nil {
		taken, err = w.take(ctx, batch, grant, last, pool, r)
	}
	if name := cons.CachedInfo().Name; err == nil {
		w.stalls.ok(name)
	} else {
		w.stalls.failed(name, err)
	}
	return taken, err
}

// rewind rewinds grant's partition, trying again while NATS cannot be
// reached. It reports false when it gave up: shutdown began or the grant
// lapsed (whoever holds the partition next rewinds it).
//
// It first lets the pull request that failed expire: a server that ends a
// fetch with an error status (a shutdown, a leadership change) may keep
// the request and still deliver to it, after nats.go stopped listening,
// and would hand it what the rewind delivers again. The gap check after
// the rewind catches one it hands over anyway: the first delivery after a
// rewind must be the consumer's first.
func (w *Worker) rewind(ctx context.Context, grant ownership.Grant, r *run) bool {
	if !sleepCtx(ctx, w.pullsGone()) {
		return false
	}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if g, ok, _ := r.owner.MayPull(grant.Partition); !ok || g != grant {
			return false
		}
		err := r.owner.Rewind(ctx, grant)
		if err == nil {
			if attempt > 0 {
				w.log.Info("partition rewound", "partition", grant.Partition, "attempts", attempt+1)
			}
			return true
		}
		if attempt == 0 {
			w.log.Warn("partition not rewound yet; trying again", "partition", grant.Partition, "err", err)
		}
		sleepCtx(ctx, rewindRetryDelay)
	}
	return false
}

// take hands a fetch's messages to the pool as they arrive, until the
// fetch ends (nats.go ends it by its own timer even with NATS down).
//
// A partition's deliveries come to this instance alone, numbered one after
// another by the consumer; a number skipped is a delivery lost on its way
// (its server failed over, say), which the commands after it could
// overtake. So from a gap on, take abandons the rest of the fetch too, and
// returns errGap: the puller rewinds the partition once what it holds is
// done with, and everything abandoned comes again in order, lost delivery
// first.
func (w *Worker) take(ctx context.Context, batch jetstream.MessageBatch, grant ownership.Grant, last *uint64, pool *keyedPool, r *run) (
	taken int, err error) {
	partition := grant.Partition
	gap := false
	msgs, stop := batch.Messages(), ctx.Done()
fetch:
	for {
		var msg jetstream.Msg
		select {
		case <-stop:
			if !w.js.Conn().IsConnected() {
				// Nothing can arrive with NATS down: stop waiting for the
				// fetch to time out, so that shutdown is not held up.
				return taken, nil
			}
			stop = nil // read the fetch to its end
			continue
		case m, ok := <-msgs:
			if !ok {
				break fetch
			}
			msg = m
		}
		in := &inbound{Msg: msg, grant: grant, taken: time.Now()}
		if partition >= 0 {
			if md, err := msg.Metadata(); err == nil {
				if md.Sequence.Consumer != *last+1 {
					gap = true
				}
				*last = md.Sequence.Consumer
				in.replay = md.Sequence.Stream <= r.owner.ReplayedUpTo(partition)
			}
			if gap {
				continue // the rewind delivers it again, in order
			}
			r.owner.Received(partition)
		}
		r.beats.add(in)
		w.cfg.Observer.InFlight(1)
		pool.submit(w.cartOf(msg), in)
		taken++
	}
	if gap {
		return taken, errGap
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		return taken, err
	}
	return taken, nil
}

// errGap: a delivery of the partition was lost on its way.
var errGap = errors.New("a delivery was lost on its way")

// stopped reports whether a pull failed for good: the consumer was deleted
// or the connection closed.
func stopped(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, nats.ErrConnectionClosed)
}

// pullBatch is the batch of each pull request: at most a partition's share
// of the buffer is in flight whatever the batch, so it only sets how many
// pull requests that takes.
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
	owner    owner
	// idle holds the parked partitions (idle.go); nil for a run that
	// pulls no partitions.
	idle *idlePartitions
}

// inbound is a message taken from JetStream, with the grant it was pulled
// under (Partition -1 for the strays' consumer) and when it was taken.
type inbound struct {
	jetstream.Msg
	grant ownership.Grant
	taken time.Time
	// replay: delivered again by a rewind, it may have been settled
	// before.
	replay bool
}

// grantOf returns the grant msg was pulled under.
func grantOf(msg jetstream.Msg) ownership.Grant {
	if in, ok := msg.(*inbound); ok {
		return in.grant
	}
	return ownership.Grant{Partition: -1}
}

// epochOf is the store's fencing epoch of grant g.
func epochOf(g ownership.Grant) cartcache.Epoch {
	return cartcache.Epoch{Era: g.Era, Seq: g.Seq}
}
