// Package ownership gives each partition of the command stream to one
// instance at a time, spreads the partitions over the live instances, and
// makes every change of hands safe for per-cart order:
//
//   - Taking. An instance takes a free partition by creating its lease, a
//     key in a durable key-value bucket, and then rewinds the partition's
//     durable consumer to its ack floor (JetStream's consumer reset,
//     ADR-60) before it pulls. Every command the previous holder did not
//     acknowledge then comes back in stream order, before anything newer,
//     whenever its AckWait or heartbeats would have expired.
//   - Fencing. Each lease carries an epoch, (the bucket's era, the lease's
//     creation revision), that grows with every takeover and keeps growing
//     when the bucket is re-created. The consumer stores it with every cart
//     it writes, and the store refuses a write with a lower one. Locally, a
//     holder stops pulling, applying and settling once its lease may have
//     lapsed, counted from before the renewal request was sent.
//   - Handing back. An instance gives a partition back (shutdown, not ready,
//     more than its share) only once its fetch is over and every command it
//     holds of the partition is settled.
//   - Durability. The buckets are file-backed with the streams' replicas, so
//     they survive a NATS restart, and are re-created if they go missing.
//
// JetStream's pinned-client priority groups (ADR-42) would pin a partition
// to one client too, but the server keeps the first client pinned while it
// pulls, so a joining instance gets nothing (TestPinningDoesNotSpreadPartitions):
// spreading the partitions would still need the members bucket, and the
// epoch a durable counter, since a pin id is a random nuid. Together those
// are what the leases are.
package ownership

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/cartworker/cartworker/command"
)

// Grant is an instance's hold on one partition. Its epoch, (Era, Seq),
// fences the writes made under it: a later grant of the partition has a
// larger one.
type Grant struct {
	Partition int
	// Era is when the leases bucket was created, in Unix milliseconds: a
	// number under 2^53, which daprd's HTTP API, re-encoding every JSON
	// number through a float64, stores exactly (nanoseconds it rounds,
	// which once fenced every write of their own owner).
	Era int64
	// Seq is the lease's creation revision in the bucket.
	Seq uint64
}

// Gate tells the leases whether the instance may take partitions.
type Gate interface {
	// Ready reports whether the instance can serve commands now.
	Ready() bool
	// Opening returns nil while ready, else a channel closed once ready.
	Opening() <-chan struct{}
	// HeldTooLong reports whether the instance has been not ready long
	// enough to have handed its commands back.
	HeldTooLong() bool
}

// Config describes the partitions and the timing of the leases. Every
// field is required; the consumer sets them from its own timing.
type Config struct {
	// Stream is the command stream; Consumer(p) names partition p's
	// durable consumer.
	Stream     string
	Consumer   func(p int) string
	Partitions int
	// Replicas of the buckets (file storage).
	Replicas int
	// Renew is how often leases and the member key are renewed.
	Renew time.Duration
	// TTL is how long a lease outlives its last renewal, and MemberTTL a
	// member key.
	TTL, MemberTTL time.Duration
	// PullExpiry is how long one pull request waits, and PullMargin how
	// long past its expiry the server may still hold it.
	PullExpiry, PullMargin time.Duration
	// ShutdownTimeout bounds waiting for the pool before handing back.
	ShutdownTimeout time.Duration
	// CallTimeout bounds each call to NATS.
	CallTimeout time.Duration
	// Logger receives a line per lease lost, taken over or handed back.
	Logger *slog.Logger
}

// Leases are this instance's partitions. Create them with New; Run keeps
// them; the consumer asks MayPull before each fetch and Holds before it
// applies or settles a command.
type Leases struct {
	js        jetstream.JetStream
	cfg       Config
	gate      Gate
	self      string
	ownerless bool // no buckets: every partition is this instance's
	log       *slog.Logger

	mu      sync.Mutex
	members jetstream.KeyValue
	bucket  jetstream.KeyValue
	// era is the leases bucket's creation time; 0 until read.
	era int64
	// owned maps each partition this instance holds to its lease.
	owned map[int]*lease
	// leaving holds the partitions being given back.
	leaving map[int]bool
	// held counts the messages of each partition this instance holds.
	held map[int]int
	// fetching holds the partitions with a fetch under way.
	fetching map[int]bool
	// replayTo is, per partition, the last stream sequence delivered
	// before its last rewind.
	replayTo map[int]uint64
	// members0 is the last count of live instances, 0 before the first;
	// only Run's goroutine uses it.
	members0 int
	// changed is closed and replaced whenever owned, leaving or a lease's
	// fence changes, to wake the pullers.
	changed chan struct{}
}

// lease is this instance's lease on a partition.
type lease struct {
	// rev is the lease key's revision, for the next renewal.
	rev uint64
	// era and seq are the grant's epoch.
	era int64
	seq uint64
	// until is the local fence: from then on the lease may have lapsed on
	// the server (it is counted from before the last renewal was sent,
	// less the time a pull request may outlive its start).
	until time.Time
}

// New returns the leases of one instance over the members and leases
// buckets (see EnsureBuckets). With either nil, the instance owns every
// partition: a single consumer, as in tests.
func New(js jetstream.JetStream, members, leases jetstream.KeyValue, gate Gate, cfg Config) *Leases {
	return &Leases{
		js:        js,
		cfg:       cfg,
		gate:      gate,
		self:      nuid.Next(),
		ownerless: members == nil || leases == nil,
		log:       cfg.Logger,
		members:   members,
		bucket:    leases,
		owned:     map[int]*lease{},
		leaving:   map[int]bool{},
		held:      map[int]int{},
		fetching:  map[int]bool{},
		replayTo:  map[int]uint64{},
		changed:   make(chan struct{}),
	}
}

// EnsureBuckets creates or updates the members and leases buckets: file
// storage with replicas, so that they survive a NATS restart. A bucket an
// earlier version kept in memory cannot be changed in place; its keys only
// describe live instances, so it is deleted and created anew (its holders
// see their leases lost and take them again, rewinding).
func EnsureBuckets(ctx context.Context, js jetstream.JetStream, cfg Config) (members, leases jetstream.KeyValue, err error) {
	for _, b := range []struct {
		kv   *jetstream.KeyValue
		name string
		ttl  time.Duration
		desc string
	}{
		{&members, command.MembersBucket, cfg.MemberTTL, "cartworker: live instances, for sharing the partitions"},
		{&leases, command.LeasesBucket, cfg.TTL, "cartworker: which instance consumes each partition"},
	} {
		kcfg := jetstream.KeyValueConfig{
			Bucket:      b.name,
			Description: b.desc,
			TTL:         b.ttl,
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			// Expired keys leave a marker, so that watchers see a dead
			// holder's lease go at once, not at the next renewal.
			LimitMarkerTTL: b.ttl,
		}
		*b.kv, err = js.CreateOrUpdateKeyValue(ctx, kcfg)
		if err != nil && storageChange(ctx, js, b.name) {
			if err = js.DeleteKeyValue(ctx, b.name); err == nil {
				*b.kv, err = js.CreateOrUpdateKeyValue(ctx, kcfg)
			}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("key-value bucket %s: %w", b.name, err)
		}
	}
	return members, leases, nil
}

// storageChange reports whether bucket exists with memory storage, which
// an update cannot turn into file storage.
func storageChange(ctx context.Context, js jetstream.JetStream, bucket string) bool {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return false
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return false
	}
	s, ok := st.(*jetstream.KeyValueBucketStatus)
	return ok && s.StreamInfo().Config.Storage == jetstream.MemoryStorage
}

// MayPull reports whether this instance may start a fetch of partition p
// now, under which grant, and returns a channel closed when that may have
// changed. A fetch may start only if it ends before the lease's local
// fence.
func (l *Leases) MayPull(p int) (Grant, bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ownerless {
		return Grant{Partition: p}, true, nil
	}
	le, ok := l.owned[p]
	if !ok || l.leaving[p] || !time.Now().Add(l.cfg.PullExpiry).Before(le.until) {
		return Grant{}, false, l.changed
	}
	return Grant{Partition: p, Era: le.era, Seq: le.seq}, true, l.changed
}

// Holds reports whether g is still this instance's and its lease cannot
// have lapsed: only then may a command pulled under g be applied or
// settled. A command of no partition (p < 0) is always held.
func (l *Leases) Holds(g Grant) bool {
	if l.ownerless || g.Partition < 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	le, ok := l.owned[g.Partition]
	return ok && le.era == g.Era && le.seq == g.Seq && time.Now().Before(le.until)
}

// Pulling notes whether partition p's puller is fetching.
func (l *Leases) Pulling(p int, on bool) {
	l.mu.Lock()
	l.fetching[p] = on
	l.mu.Unlock()
}

// Received notes a message of partition p taken by this instance.
func (l *Leases) Received(p int) {
	l.mu.Lock()
	l.held[p]++
	l.mu.Unlock()
}

// Holding returns how many messages of partition p this instance holds:
// received and not yet settled.
func (l *Leases) Holding(p int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held[p]
}

// Settled notes that a message of partition p is done with: settled, or
// dropped because its grant lapsed.
func (l *Leases) Settled(p int) {
	l.mu.Lock()
	l.held[p]--
	l.mu.Unlock()
}

// Rewind restarts g's partition's consumer from its ack floor, once every
// message of it this instance holds is done with: what was unacknowledged
// is delivered again, in stream order, before anything newer. The puller
// calls it after a delivery was lost on its way or a fetch failed, instead
// of waiting for AckWait to expire. A rewind is safe only while this
// instance holds the partition under g and has no fetch of it under way:
// Rewind gives up with ErrNotHeld once g no longer holds.
func (l *Leases) Rewind(ctx context.Context, g Grant) error {
	for {
		l.mu.Lock()
		idle := l.held[g.Partition] == 0
		l.mu.Unlock()
		if idle {
			break
		}
		if !sleepCtx(ctx, idlePoll) {
			return ctx.Err()
		}
	}
	// While the commands were finishing, the lease may have lapsed and
	// the partition gone to another instance, which rewound it itself.
	if !l.Holds(g) {
		return fmt.Errorf("rewind partition %d: %w", g.Partition, ErrNotHeld)
	}
	// A consumer electing a leader answers nothing: try again soon rather
	// than wait out a long timeout once it has one.
	ctx, cancel := context.WithTimeout(ctx, l.cfg.Renew/2)
	defer cancel()
	return l.reset(ctx, g.Partition)
}

// ErrNotHeld: the partition's grant no longer holds.
var ErrNotHeld = errors.New("the partition is no longer this instance's")

// reset rewinds partition p's consumer to its ack floor, and records the
// last stream sequence it had delivered: what comes again up to it is a
// replay (ReplayedUpTo).
func (l *Leases) reset(ctx context.Context, p int) error {
	c, err := l.js.Consumer(ctx, l.cfg.Stream, l.cfg.Consumer(p))
	if err != nil {
		return fmt.Errorf("rewind partition %d: %w", p, err)
	}
	if _, err := l.js.ResetConsumer(ctx, l.cfg.Stream, l.cfg.Consumer(p)); err != nil {
		return fmt.Errorf("rewind partition %d: %w", p, err)
	}
	l.mu.Lock()
	l.replayTo[p] = max(l.replayTo[p], c.CachedInfo().Delivered.Stream)
	l.mu.Unlock()
	return nil
}

// ReplayedUpTo returns the last stream sequence of partition p delivered
// before its last rewind: a command up to it may have been settled before,
// and must be given the outcome it had.
func (l *Leases) ReplayedUpTo(p int) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.replayTo[p]
}

// idlePoll is how often Rewind and a hand-back look whether a partition's
// messages are all done with.
const idlePoll = 20 * time.Millisecond

// Owned returns the partitions this instance holds now, in order, out of n.
func (l *Leases) Owned(n int) []int {
	if l.ownerless {
		ps := make([]int, n)
		for i := range ps {
			ps[i] = i
		}
		return ps
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ps := make([]int, 0, len(l.owned))
	for p := range l.owned {
		if p < n {
			ps = append(ps, p)
		}
	}
	slices.Sort(ps)
	return ps
}

// notify wakes the pullers. l.mu must be held.
func (l *Leases) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// Run keeps this instance's member key and leases alive, takes its share of
// the free partitions while it is ready, and gives back the rest, until ctx
// ends. Then it keeps renewing what it holds until the pool has settled it
// (done is closed), and gives every partition back. Its goroutines have
// exited when it returns.
func (l *Leases) Run(ctx context.Context, done <-chan struct{}) {
	if l.ownerless {
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	// Renewals keep their own pace, so that a slow member count or take
	// never delays one, and go on through shutdown until the pool is done,
	// so that the last acks are not fenced.
	renewCtx, stopRenewing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRenewing()
	wg.Go(func() { l.renewLoop(renewCtx) })
	t := time.NewTicker(l.cfg.Renew)
	defer t.Stop()
	// A partition given back or expired, or an instance joining or
	// leaving, is acted on at once rather than at the next tick.
	wake := make(chan struct{}, 1)
	watchCtx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	l.mu.Lock()
	buckets := []jetstream.KeyValue{l.bucket, l.members}
	l.mu.Unlock()
	for _, kv := range buckets {
		wg.Go(func() { l.watch(watchCtx, kv, wake) })
	}
	for {
		// A tick with the gate closed takes no partition: take them as
		// soon as it opens. The channel is taken before the tick, so that
		// an opening during it counts.
		opened := l.gate.Opening()
		var soon <-chan time.Time
		if short := l.tick(ctx, &wg); short {
			// The buckets are failing over: try again well before the
			// next tick, so that a partition whose lease lapsed is not
			// left unowned for a whole tick once they answer.
			soon = time.After(retakeEvery)
		}
		select {
		case <-wake:
			continue
		case <-opened:
			continue
		case <-soon:
			continue
		case <-ctx.Done():
			l.shutdown(context.WithoutCancel(ctx), done)
			return
		case <-t.C:
		}
	}
}

// renewLoop renews the leases every Renew until ctx ends.
func (l *Leases) renewLoop(ctx context.Context) {
	t := time.NewTicker(l.cfg.Renew)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.renew(ctx)
		}
	}
}

// shutdown waits for the pool to finish what it holds (the leases are
// still renewed meanwhile), then hands every partition over, so that
// another instance need not wait for them to expire.
func (l *Leases) shutdown(ctx context.Context, done <-chan struct{}) {
	limit := time.NewTimer(l.cfg.ShutdownTimeout + l.cfg.PullExpiry + l.cfg.PullMargin)
	defer limit.Stop()
	select {
	case <-done:
		l.releaseAll(ctx)
	case <-limit.C:
	}
	l.forget(ctx)
}

// watch signals wake whenever a key of kv is deleted or expires or, in the
// members bucket, is first created, until ctx ends.
func (l *Leases) watch(ctx context.Context, kv jetstream.KeyValue, wake chan<- struct{}) {
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return // the ticks still come
	}
	defer func() {
		// Stop waits for the server; with NATS down the watch ends with
		// the connection instead.
		if l.js.Conn().IsConnected() {
			_ = w.Stop()
		}
	}()
	isMembers := kv.Bucket() == command.MembersBucket
	seen := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				continue
			}
			joined := false
			if isMembers && e.Operation() == jetstream.KeyValuePut && !seen[e.Key()] {
				seen[e.Key()], joined = true, e.Key() != l.self
			}
			if e.Operation() != jetstream.KeyValuePut {
				delete(seen, e.Key())
			}
			if e.Operation() != jetstream.KeyValuePut || joined {
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}
	}
}

// retakeEvery is how soon a tick that could not take its share because the
// buckets failed is tried again.
const retakeEvery = 250 * time.Millisecond

// tick takes and gives back leases once. It reports whether this instance
// holds less than its share because the buckets failed, so that the next
// attempt should come soon.
func (l *Leases) tick(ctx context.Context, wg *sync.WaitGroup) bool {
	if l.gate.HeldTooLong() {
		// Not ready for longer than a blip: its commands have been handed
		// back. It stops counting as an instance and gives its partitions
		// to the healthy ones, until it is ready again.
		l.forget(ctx)
		for _, p := range l.excess(0) {
			wg.Go(func() { l.release(ctx, p) })
		}
		return false
	}
	n, err := l.liveMembers(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		l.recover(ctx, err)
		if l.members0 == 0 {
			l.log.Warn("cannot count the instances; taking no partition yet", "err", err)
			return true
		}
		// The members bucket may be electing a leader while the leases
		// work: the last count still shares the partitions well enough,
		// and free partitions must not wait for it.
		l.log.Warn("cannot count the instances; sharing by the last count", "instances", l.members0, "err", err)
		n = l.members0
	}
	l.members0 = n
	share := (l.cfg.Partitions + n - 1) / n
	for _, p := range l.excess(share) {
		wg.Go(func() { l.release(ctx, p) })
	}
	if l.gate.Ready() {
		return l.take(ctx, share)
	}
	return false
}

// recover re-creates the buckets when they are gone (deleted, or kept in
// memory by a server that restarted), so that no partition stays unowned
// for it. err is the failure that raised the question: "no responders" is
// also what a bucket electing a leader answers, so the server is asked
// whether the buckets exist before anything is created.
func (l *Leases) recover(ctx context.Context, err error) {
	if !bucketMissing(err) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.CallTimeout)
	defer cancel()
	missing := false
	for _, name := range []string{command.MembersBucket, command.LeasesBucket} {
		if _, err := l.js.KeyValue(ctx, name); errors.Is(err, jetstream.ErrBucketNotFound) {
			missing = true
		}
	}
	if !missing {
		return
	}
	members, leases, err := EnsureBuckets(ctx, l.js, l.cfg)
	if err != nil {
		l.log.Warn("coordination buckets missing and not re-created", "err", err)
		return
	}
	l.mu.Lock()
	l.members, l.bucket, l.era = members, leases, 0
	l.mu.Unlock()
	l.log.Warn("coordination buckets were missing: re-created them", "buckets", []string{command.MembersBucket, command.LeasesBucket})
}

// bucketMissing reports whether err says a bucket's stream is gone.
func bucketMissing(err error) bool {
	return errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}

// kvs returns the buckets in use.
func (l *Leases) kvs() (members, leases jetstream.KeyValue) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.members, l.bucket
}

// liveMembers refreshes this instance's key and counts the live ones.
func (l *Leases) liveMembers(ctx context.Context) (int, error) {
	// A members bucket electing a leader must not hold up taking partitions
	// for long: the last count serves meanwhile (tick).
	ctx, cancel := context.WithTimeout(ctx, l.cfg.Renew/2)
	defer cancel()
	members, _ := l.kvs()
	if _, err := members.Put(ctx, l.self, nil); err != nil {
		return 0, err
	}
	keys, err := members.ListKeys(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for range keys.Keys() {
		n++
	}
	return max(n, 1), nil
}

// renew keeps the leases alive, each with its own call, all at once. A
// lease that is gone or another's was lost (this instance stalled past its
// TTL); one whose renewals failed until its local fence passed may have
// lapsed. Either way the partition's puller stops at once and what it holds
// is dropped unsettled: the next holder rewinds.
func (l *Leases) renew(ctx context.Context) {
	l.mu.Lock()
	owned := maps.Clone(l.owned)
	l.mu.Unlock()
	var wg sync.WaitGroup
	for p, le := range owned {
		wg.Go(func() { l.renewOne(ctx, p, le) })
	}
	wg.Wait()
}

func (l *Leases) renewOne(ctx context.Context, p int, le *lease) {
	// A renewal answered after the next is due is of no use.
	ctx, cancel := context.WithTimeout(ctx, min(l.cfg.CallTimeout, l.cfg.Renew))
	defer cancel()
	_, bucket := l.kvs()
	sent := time.Now()
	next, err := bucket.Update(ctx, leaseKey(p), []byte(l.self), le.rev)
	if revisionMismatch(err) {
		// The last renewal may have reached the server without its
		// answer reaching us: renew at the lease's revision if it is
		// still ours.
		if cur, ok := l.ownRevision(ctx, p); ok {
			next, err = bucket.Update(ctx, leaseKey(p), []byte(l.self), cur)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.owned[p] != le {
		return // given back meanwhile
	}
	switch {
	case err == nil:
		l.owned[p] = &lease{rev: next, era: le.era, seq: le.seq, until: l.fence(sent)}
		l.notify()
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyExists),
		errors.Is(err, jetstream.ErrKeyDeleted), errors.Is(err, jetstream.ErrBucketNotFound):
		delete(l.owned, p)
		delete(l.leaving, p)
		l.notify()
		l.log.Error("partition lease lost: this instance stalled past its TTL, or the bucket was lost; dropping what it holds",
			"partition", p, "err", err)
	case !time.Now().Before(le.until):
		delete(l.owned, p)
		delete(l.leaving, p)
		l.notify()
		l.log.Error("partition lease may have lapsed: renewals failed; dropping what it holds",
			"partition", p, "err", err)
	}
}

// fence is the local fence of a lease renewed by a request sent at sent:
// the server counts TTL from when the request arrives, after sent, and a
// fetch that starts before the fence ends before the server can let the
// lease go.
func (l *Leases) fence(sent time.Time) time.Time {
	return sent.Add(l.cfg.TTL - l.cfg.PullMargin)
}

// take creates leases on free partitions until this instance holds share,
// and rewinds each one it takes. It starts at a place of its own, so that
// instances starting together do not all race for the same partitions. It
// reports whether it fell short of share because the buckets or the
// consumers failed, rather than because the others hold the rest.
func (l *Leases) take(ctx context.Context, share int) (short bool) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.CallTimeout)
	defer cancel()
	era, err := l.readEra(ctx)
	if err != nil {
		l.log.Warn("cannot read the leases bucket's era; taking no partition", "err", err)
		l.recover(ctx, err)
		return true
	}
	_, bucket := l.kvs()
	h := fnv.New32a()
	_, _ = h.Write([]byte(l.self))
	start := int(h.Sum32() % uint32(l.cfg.Partitions))
	for i := range l.cfg.Partitions {
		p := (start + i) % l.cfg.Partitions
		l.mu.Lock()
		_, mine := l.owned[p]
		n := len(l.owned)
		// What this instance still holds of a lease it lost must be done
		// with before it rewinds the partition again.
		busy := l.held[p] > 0 || l.fetching[p]
		l.mu.Unlock()
		if n >= share {
			return false
		}
		if mine {
			continue
		}
		if busy {
			short = true
			continue
		}
		// Each partition gets its own share of the time: one whose
		// consumer is electing a leader must not hold up the others.
		pctx, cancel := context.WithTimeout(ctx, l.cfg.Renew/2)
		sent := time.Now()
		rev, err := l.create(pctx, bucket, p)
		if err == nil {
			err = l.reset(pctx, p)
			if err != nil {
				// Never pull without the rewind: give the lease back.
				l.log.Warn("partition not taken: its consumer could not be rewound", "partition", p, "err", err)
				_ = bucket.Delete(ctx, leaseKey(p), jetstream.LastRevision(rev))
			}
		}
		cancel()
		if err != nil {
			// Held by another instance; or the bucket or the consumer
			// is failing over.
			short = short || !errors.Is(err, jetstream.ErrKeyExists)
			continue
		}
		l.mu.Lock()
		l.owned[p] = &lease{rev: rev, era: era, seq: rev, until: l.fence(sent)}
		l.notify()
		l.mu.Unlock()
		l.log.Info("partition taken, rewound to its ack floor", "partition", p, "epoch", strconv.FormatInt(era, 10)+"."+strconv.FormatUint(rev, 10))
	}
	return short
}

// create creates p's lease. A lease that is still this instance's on the
// server, though it dropped it (its renewals failed until its local fence
// passed), is taken again at once with a new revision, rather than after
// it expires: the new revision is a new epoch, and the taker rewinds.
func (l *Leases) create(ctx context.Context, bucket jetstream.KeyValue, p int) (uint64, error) {
	rev, err := bucket.Create(ctx, leaseKey(p), []byte(l.self))
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return rev, err
	}
	cur, ok := l.ownRevision(ctx, p)
	if !ok {
		return 0, err
	}
	return bucket.Update(ctx, leaseKey(p), []byte(l.self), cur)
}

// readEra returns the leases bucket's creation time, read once per bucket.
func (l *Leases) readEra(ctx context.Context) (int64, error) {
	l.mu.Lock()
	era, bucket := l.era, l.bucket
	l.mu.Unlock()
	if era != 0 {
		return era, nil
	}
	st, err := bucket.Status(ctx)
	if err != nil {
		return 0, err
	}
	s, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || s.StreamInfo() == nil {
		return 0, fmt.Errorf("bucket %s: no stream info in its status", command.LeasesBucket)
	}
	era = s.StreamInfo().Created.UnixMilli()
	l.mu.Lock()
	if l.bucket == bucket {
		l.era = era
	}
	l.mu.Unlock()
	return era, nil
}

// excess marks the partitions beyond share, the highest first, as leaving
// and returns them.
func (l *Leases) excess(share int) []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var mine []int
	for p := range l.owned {
		if !l.leaving[p] {
			mine = append(mine, p)
		}
	}
	if len(mine) <= share {
		return nil
	}
	slices.Sort(mine)
	out := mine[share:]
	for _, p := range out {
		l.leaving[p] = true
	}
	l.notify()
	return out
}

// release gives partition p back: its puller stops after its current fetch
// (leaving tells it); once that fetch is over and every command of p this
// instance holds is settled, no request of this instance is left on the
// server and the lease is deleted.
func (l *Leases) release(ctx context.Context, p int) {
	for {
		l.mu.Lock()
		idle := l.held[p] == 0 && !l.fetching[p]
		l.mu.Unlock()
		if idle {
			break
		}
		if !sleepCtx(ctx, idlePoll) {
			return // shutdown: releaseAll takes over
		}
	}
	l.drop(ctx, p)
	l.log.Info("partition handed over", "partition", p)
}

// releaseAll gives every partition back at shutdown, once the pullers have
// finished their fetches and the pool has settled everything.
func (l *Leases) releaseAll(ctx context.Context) {
	if !l.js.Conn().IsConnected() {
		return // the leases expire by themselves
	}
	l.mu.Lock()
	owned := maps.Clone(l.owned)
	l.mu.Unlock()
	for p := range owned {
		l.drop(ctx, p)
	}
}

// drop deletes the lease of p, if it is still this instance's.
func (l *Leases) drop(ctx context.Context, p int) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.CallTimeout)
	defer cancel()
	l.mu.Lock()
	le, ok := l.owned[p]
	l.mu.Unlock()
	if ok {
		if err := l.deleteLease(ctx, p, le.rev); err != nil {
			l.log.Warn("partition lease not deleted; it expires by itself", "partition", p, "err", err, "expires_after", l.cfg.TTL)
		}
	}
	l.mu.Lock()
	delete(l.owned, p)
	delete(l.leaving, p)
	l.notify()
	l.mu.Unlock()
}

// deleteLease deletes p's lease at revision rev. A renewal cut short may
// have reached the server after all, leaving rev one behind: the lease is
// then read again and deleted at its revision if it is still this
// instance's, rather than left to hold the partition from the next instance
// until it expires.
func (l *Leases) deleteLease(ctx context.Context, p int, rev uint64) error {
	_, bucket := l.kvs()
	err := bucket.Delete(ctx, leaseKey(p), jetstream.LastRevision(rev))
	if !revisionMismatch(err) {
		return err
	}
	cur, ok := l.ownRevision(ctx, p)
	if !ok {
		return err // another instance's now, or gone: not ours to delete
	}
	return bucket.Delete(ctx, leaseKey(p), jetstream.LastRevision(cur))
}

// ownRevision returns the revision of p's lease if it is this instance's.
func (l *Leases) ownRevision(ctx context.Context, p int) (uint64, bool) {
	_, bucket := l.kvs()
	e, err := bucket.Get(ctx, leaseKey(p))
	if err != nil || string(e.Value()) != l.self {
		return 0, false
	}
	return e.Revision(), true
}

// revisionMismatch reports whether a guarded write of a lease failed
// because its revision had moved on.
func revisionMismatch(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

// forget removes this instance's member key, so that the others count it
// gone at once rather than after MemberTTL.
func (l *Leases) forget(ctx context.Context) {
	if !l.js.Conn().IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, forgetTimeout)
	defer cancel()
	members, _ := l.kvs()
	_ = members.Delete(ctx, l.self)
}

// forgetTimeout bounds removing the member key, which must not hold up a
// shutdown: a key not removed expires by itself.
const forgetTimeout = time.Second

// leaseKey is partition p's key in the leases bucket.
func leaseKey(p int) string { return "p" + strconv.Itoa(p) }

// sleepCtx waits d, reporting false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
