package consumer

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/ownership"
)

// An idle instance should cost nothing, but a partition's puller that keeps
// a pull request waiting costs one request a second, and an instance holds
// up to 32 partitions. So the puller of a partition whose fetch came back
// empty parks instead: it stops pulling until a command may have come to
// the partition. Nothing else changes: a parked partition has no request on
// the server, so its hand-back waits for nothing, and a woken one pulls as
// any other.
//
// What wakes a parked partition is a core NATS subscription to the subject
// publishers publish commands on, held only while some partition is parked:
// every command published names its cart, and so its partition
// (command.CartPartition). The subscription is a hint, not a source of
// commands: they are still fetched from the stream, in order. A command it
// misses (published while it was being set up, or while NATS was away, or
// by a user it may not subscribe as) still comes: watch wakes every parked
// partition once the stream has stored anything since its last look, every
// idleRecheck.

// idlePartitions are the parked partitions of one run, and the
// subscription that wakes them.
type idlePartitions struct {
	nc       *nats.Conn
	subjects command.Subjects
	n        int

	mu     sync.Mutex
	parked map[int]chan struct{}
	sub    *nats.Subscription
	// stored is the command stream's last sequence at watch's last look.
	stored uint64
}

func newIdlePartitions(nc *nats.Conn, subjects command.Subjects, partitions int) *idlePartitions {
	return &idlePartitions{nc: nc, subjects: subjects, n: partitions, parked: map[int]chan struct{}{}}
}

// park notes partition p as parked and returns a channel closed once a
// command may have come to it. The subscription is in place, on the
// connection the puller fetches on, when park returns: the server handles
// what comes after it on that connection, the puller's last look, after it.
func (ip *idlePartitions) park(p int) (<-chan struct{}, error) {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	if ip.sub == nil {
		sub, err := ip.nc.Subscribe(ip.subjects.Commands(), ip.heard)
		if err != nil {
			return nil, err
		}
		ip.sub = sub
	}
	ch, ok := ip.parked[p]
	if !ok {
		ch = make(chan struct{})
		ip.parked[p] = ch
	}
	return ch, nil
}

// isParked reports whether p's puller is parked.
func (ip *idlePartitions) isParked(p int) bool {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	_, ok := ip.parked[p]
	return ok
}

// unpark forgets p: its puller pulls again.
func (ip *idlePartitions) unpark(p int) {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	ip.wakeLocked(p)
}

// sleepParked waits, with no request of this instance waiting on the server,
// until parked is closed (a command may have come), ctx ends, or grant
// no longer lets its partition be pulled. The leases change, and changed
// is closed, at every renewal of any of them: only a change of this grant
// ends the sleep.
func sleepParked(ctx context.Context, o owner, grant ownership.Grant, parked, changed <-chan struct{}) {
	for {
		select {
		case <-parked:
			return
		case <-ctx.Done():
			return
		case <-changed:
			g, ok, ch := o.MayPull(grant.Partition)
			if !ok || g != grant {
				return
			}
			changed = ch
		}
	}
}

// heard wakes the partition of the cart a command was published for.
func (ip *idlePartitions) heard(msg *nats.Msg) {
	cartID, _, ok := ip.subjects.ParseCommand(msg.Subject)
	if !ok {
		return
	}
	ip.unpark(command.CartPartition(cartID, ip.n))
}

// wakeLocked wakes p, if parked, and drops the subscription once nothing
// is parked: a busy instance hears nothing. ip.mu is held.
func (ip *idlePartitions) wakeLocked(p int) {
	if ch, ok := ip.parked[p]; ok {
		close(ch)
		delete(ip.parked, p)
	}
	if len(ip.parked) == 0 && ip.sub != nil {
		// An error means the connection is closed, which ends the
		// subscription anyway.
		_ = ip.sub.Unsubscribe()
		ip.sub = nil
	}
}

// watch wakes every parked partition, every idleRecheck, when the command
// stream has stored anything since its last look, until ctx ends; then it
// drops the subscription.
func (ip *idlePartitions) watch(ctx context.Context, js jetstream.JetStream) {
	t := time.NewTicker(idleRecheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			ip.mu.Lock()
			for p := range ip.parked {
				ip.wakeLocked(p)
			}
			ip.mu.Unlock()
			return
		case <-t.C:
			ip.recheck(ctx, js)
		}
	}
}

// recheck is one look of watch's.
func (ip *idlePartitions) recheck(ctx context.Context, js jetstream.JetStream) {
	ip.mu.Lock()
	none := len(ip.parked) == 0
	ip.mu.Unlock()
	if none {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	state, err := streamState(ctx, js, command.StreamCommands)
	if err != nil {
		return // the next look, or the puller's own errors, tell
	}
	ip.mu.Lock()
	defer ip.mu.Unlock()
	if state.LastSeq != ip.stored {
		ip.stored = state.LastSeq
		for p := range ip.parked {
			ip.wakeLocked(p)
		}
	}
}
