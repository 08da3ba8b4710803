package consumer

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/cartworker/cartworker/command"
)

// leases give each partition to one instance at a time, and spread the
// partitions over the live instances. Only the instance that holds a
// partition's lease pulls it, so the partition's consumer can let many of
// its commands be in flight (a cart's backlog then forms into one
// read-modify-write) while each cart's commands still run in one place, in
// order.
//
// A lease is a key in the partitions bucket, created by its holder and
// renewed every balanceEvery; the bucket's TTL removes the key of an
// instance that died. An instance takes free partitions up to its share
// (the partitions over the live instances, which keep a key alive in the
// members bucket) and gives back what is beyond it. Giving back, as at
// shutdown or while the instance is not ready, never lets a command
// overtake another: the instance stops pulling once its current fetch is
// over (so no request of its own is left on the server), settles every
// command of the partition it holds, and only then deletes the lease. JetStream redelivers the
// commands it Nak'ed, in order, before anything newer.
//
// JetStream's pinned-client priority groups would do the pinning, but
// nats-server 2.15 rotates its redelivery queue when a pinned consumer has
// other clients' pull requests waiting, which redelivers a cart's commands
// out of order (Naks of sequences 1, 2, 3 came back as 2, 3, 1).
type leases struct {
	w         *Worker
	members   jetstream.KeyValue
	bucket    jetstream.KeyValue
	self      string
	ownerless bool // no buckets: every partition is this instance's

	mu sync.Mutex
	// owned maps each partition this instance holds to its lease's
	// revision.
	owned map[int]uint64
	// leaving holds the partitions being given back.
	leaving map[int]bool
	// held counts the messages of each partition this instance holds.
	held map[int]int
	// fetching holds the partitions with a fetch under way.
	fetching map[int]bool
	// changed is closed and replaced whenever owned or leaving changes,
	// to wake the pullers.
	changed chan struct{}
}

func newLeases(w *Worker, cons Consumers) *leases {
	l := &leases{
		w:         w,
		members:   cons.Members,
		bucket:    cons.Leases,
		self:      nuid.Next(),
		ownerless: cons.Leases == nil || cons.Members == nil,
		owned:     map[int]uint64{},
		leaving:   map[int]bool{},
		held:      map[int]int{},
		fetching:  map[int]bool{},
		changed:   make(chan struct{}),
	}
	return l
}

// ensureBuckets creates or updates the members and partitions buckets.
// Both are in memory: they only describe the live instances.
func (w *Worker) ensureBuckets(ctx context.Context) (members, leases jetstream.KeyValue, err error) {
	for _, b := range []struct {
		kv   *jetstream.KeyValue
		name string
		ttl  time.Duration
		desc string
	}{
		{&members, command.MembersBucket, memberTTL, "cartworker: live instances, for sharing the partitions"},
		{&leases, command.LeasesBucket, w.leaseTTL(), "cartworker: which instance consumes each partition"},
	} {
		*b.kv, err = w.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      b.name,
			Description: b.desc,
			TTL:         b.ttl,
			Storage:     jetstream.MemoryStorage,
			Replicas:    w.cfg.Replicas,
		})
		if err != nil {
			return nil, nil, w.explain(fmt.Errorf("key-value bucket %s: %w", b.name, err))
		}
	}
	return members, leases, nil
}

// mayPull reports whether this instance may pull partition p now, and
// returns a channel closed when that may have changed.
func (l *leases) mayPull(p int) (bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ownerless {
		return true, nil
	}
	_, ok := l.owned[p]
	return ok && !l.leaving[p], l.changed
}

// pulling notes whether partition p's puller is fetching.
func (l *leases) pulling(p int, on bool) {
	l.mu.Lock()
	l.fetching[p] = on
	l.mu.Unlock()
}

// received notes a message of partition p taken by this instance.
func (l *leases) received(p int) {
	l.mu.Lock()
	l.held[p]++
	l.mu.Unlock()
}

// settled notes that a message of partition p is settled.
func (l *leases) settled(p int) {
	l.mu.Lock()
	l.held[p]--
	l.mu.Unlock()
}

// notify wakes the pullers. l.mu must be held.
func (l *leases) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// run keeps this instance's member key and leases alive, takes its share of
// the free partitions while it is ready, and gives back the rest, until ctx
// ends; then it gives back every partition (after the pool has settled
// what it holds: done is closed then). Its goroutines have exited when it
// returns.
func (l *leases) run(ctx context.Context, done <-chan struct{}) {
	if l.ownerless {
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(balanceEvery)
	defer t.Stop()
	// A partition given back, or an instance joining or leaving, is acted
	// on at once rather than at the next tick.
	wake := make(chan struct{}, 1)
	watchCtx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	for _, kv := range []jetstream.KeyValue{l.bucket, l.members} {
		wg.Go(func() { l.watch(watchCtx, kv, wake) })
	}
	for {
		// A tick with the gate closed takes no partition (a new instance
		// before its first probe, or one that was not ready): take them
		// as soon as it opens, not up to balanceEvery later. The channel
		// is taken before the tick, so that an opening during it counts.
		opened := l.w.gate.opening()
		l.tick(ctx, &wg)
		select {
		case <-wake:
			continue
		case <-opened:
			continue
		case <-ctx.Done():
			// Shutdown: the pullers stop now. Hand everything over once
			// the pool is done and no pull request of this instance is
			// left, so that another instance need not wait for the
			// leases to expire.
			bg := context.WithoutCancel(ctx)
			select {
			case <-done:
				l.releaseAll(bg)
			case <-time.After(l.w.cfg.ShutdownTimeout + l.w.pullsGone()):
			}
			l.forget(bg)
			return
		case <-t.C:
		}
	}
}

// watch signals wake whenever a key of kv is deleted or, in the members
// bucket, first created, until ctx ends.
func (l *leases) watch(ctx context.Context, kv jetstream.KeyValue, wake chan<- struct{}) {
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return // the ticks still come
	}
	defer func() {
		// Stop waits for the server; with NATS down the watch ends with
		// the connection instead.
		if l.w.js.Conn().IsConnected() {
			_ = w.Stop()
		}
	}()
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
			if kv == l.members && e.Operation() == jetstream.KeyValuePut && !seen[e.Key()] {
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

// tick renews, takes and gives back leases once.
func (l *leases) tick(ctx context.Context, wg *sync.WaitGroup) {
	if l.w.gate.heldTooLong() {
		// Not ready for longer than a blip: its commands have been handed
		// back. It stops counting as an instance and gives its partitions
		// to the healthy ones, until it is ready again.
		l.forget(ctx)
		l.renew(ctx)
		for _, p := range l.excess(0) {
			wg.Go(func() { l.release(ctx, p) })
		}
		return
	}
	n, err := l.liveMembers(ctx)
	if err != nil {
		if ctx.Err() == nil {
			l.w.log.Warn("cannot count the instances; partitions stay where they are", "err", err)
		}
		return
	}
	l.renew(ctx)
	share := (l.w.cfg.Partitions + n - 1) / n
	for _, p := range l.excess(share) {
		wg.Go(func() { l.release(ctx, p) })
	}
	if l.w.gate.err() == nil {
		l.take(ctx, share)
	}
}

// liveMembers refreshes this instance's key and counts the live ones.
func (l *leases) liveMembers(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	if _, err := l.members.Put(ctx, l.self, nil); err != nil {
		return 0, err
	}
	keys, err := l.members.ListKeys(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for range keys.Keys() {
		n++
	}
	return max(n, 1), nil
}

// renew keeps the leases alive. A lease that cannot be renewed because it
// is gone or changed was lost (this instance stalled for longer than its
// TTL): the partition's puller stops at once.
func (l *leases) renew(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	l.mu.Lock()
	owned := maps.Clone(l.owned)
	l.mu.Unlock()
	for p, rev := range owned {
		next, err := l.bucket.Update(ctx, leaseKey(p), []byte(l.self), rev)
		if revisionMismatch(err) {
			// The last renewal may have reached the server without its
			// answer reaching us: renew at the lease's revision if it is
			// still ours.
			if cur, ok := l.ownRevision(ctx, p); ok {
				next, err = l.bucket.Update(ctx, leaseKey(p), []byte(l.self), cur)
			}
		}
		l.mu.Lock()
		switch {
		case err == nil:
			l.owned[p] = next
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyDeleted):
			delete(l.owned, p)
			l.notify()
			l.w.log.Error("partition lease lost: this instance stalled past its TTL", "partition", p, "err", err)
		}
		l.mu.Unlock()
	}
}

// take creates leases on free partitions until this instance holds share.
// It starts at a place of its own, so that instances starting together do
// not all race for the same partitions.
func (l *leases) take(ctx context.Context, share int) {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	h := fnv.New32a()
	_, _ = h.Write([]byte(l.self))
	start := int(h.Sum32() % uint32(l.w.cfg.Partitions))
	for i := range l.w.cfg.Partitions {
		p := (start + i) % l.w.cfg.Partitions
		l.mu.Lock()
		_, mine := l.owned[p]
		n := len(l.owned)
		l.mu.Unlock()
		if n >= share {
			return
		}
		if mine {
			continue
		}
		rev, err := l.bucket.Create(ctx, leaseKey(p), []byte(l.self))
		if err != nil {
			continue // held by another instance, or NATS is slow: next tick
		}
		l.mu.Lock()
		l.owned[p] = rev
		l.notify()
		l.mu.Unlock()
	}
}

// excess marks the partitions beyond share, the highest first, as leaving
// and returns them.
func (l *leases) excess(share int) []int {
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

// release gives partition p back: its puller stops after its current
// fetch (leaving tells it); once that fetch is over and every command of p
// this instance holds is settled, no request of this instance is left on
// the server and the lease is deleted.
func (l *leases) release(ctx context.Context, p int) {
	for {
		l.mu.Lock()
		idle := l.held[p] == 0 && !l.fetching[p]
		l.mu.Unlock()
		if idle {
			break
		}
		if !sleepCtx(ctx, drainPollDelay) {
			return // shutdown: releaseAll takes over
		}
	}
	l.drop(ctx, p)
	l.w.log.Info("partition handed over", "partition", p)
}

// releaseAll gives every partition back at shutdown, once the pullers have
// finished their fetches and the pool has settled everything.
func (l *leases) releaseAll(ctx context.Context) {
	if !l.w.js.Conn().IsConnected() {
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
func (l *leases) drop(ctx context.Context, p int) {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	l.mu.Lock()
	rev, ok := l.owned[p]
	l.mu.Unlock()
	if ok {
		if err := l.deleteLease(ctx, p, rev); err != nil {
			l.w.log.Warn("partition lease not deleted; it expires by itself", "partition", p, "err", err, "expires_after", l.w.leaseTTL())
		}
	}
	l.mu.Lock()
	delete(l.owned, p)
	delete(l.leaving, p)
	l.notify()
	l.mu.Unlock()
}

// deleteLease deletes p's lease at revision rev. A renewal cut short by
// shutdown may have reached the server after all, leaving rev one behind:
// the lease is then read again and deleted at its revision if it is still
// this instance's, rather than left to hold the partition from the next
// instance until it expires.
func (l *leases) deleteLease(ctx context.Context, p int, rev uint64) error {
	err := l.bucket.Delete(ctx, leaseKey(p), jetstream.LastRevision(rev))
	if !revisionMismatch(err) {
		return err
	}
	cur, ok := l.ownRevision(ctx, p)
	if !ok {
		return err // another instance's now, or gone: not ours to delete
	}
	return l.bucket.Delete(ctx, leaseKey(p), jetstream.LastRevision(cur))
}

// ownRevision returns the revision of p's lease if it is this instance's.
func (l *leases) ownRevision(ctx context.Context, p int) (uint64, bool) {
	e, err := l.bucket.Get(ctx, leaseKey(p))
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
// gone at once rather than after memberTTL.
func (l *leases) forget(ctx context.Context) {
	if !l.w.js.Conn().IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, forgetTimeout)
	defer cancel()
	_ = l.members.Delete(ctx, l.self)
}

// leaseKey is partition p's key in the partitions bucket.
func leaseKey(p int) string { return "p" + strconv.Itoa(p) }
