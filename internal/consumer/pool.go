package consumer

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/internal/budget"
)

// keyedPool runs a handler on at most workers goroutines, one batch of a key
// (a cart) at a time: a cart's messages run in arrival order, in batches of
// what has queued up behind each other, and different carts run in
// parallel. Unlike hashing carts onto fixed lanes, two carts never queue
// behind each other because their hashes collide, so every goroutine does
// work whenever that many carts have some.
//
// A goroutine hands the handler the batches of up to keys carts at once:
// its own, and whichever other carts are waiting for a goroutine at that
// moment and that no idle goroutine is there to take. It never waits for
// more to come, so a pool with goroutines to spare hands over one cart at a
// time, and a busy one, whose carts queue, hands over many.
//
// The messages held (queued or running) are bounded separately, by buffer
// and by bytes (held): a cart's backlog can only form into a batch if the
// instance holds it.
type keyedPool struct {
	handle func([][]jetstream.Msg)
	// limit bounds a batch: at most max messages and, past the first,
	// maxBytes of bodies.
	max, maxBytes int
	// keys bounds the carts of one handler call.
	keys int
	// idle counts the goroutines waiting for a key.
	idle atomic.Int32
	// slots bounds the messages held: queued or running; held, when set,
	// bounds their bytes (heldBytes).
	slots chan struct{}
	held  *budget.Bytes
	// ready hands a key with queued messages to a free goroutine. Every key
	// in it holds at least one slot, so a buffer's worth of places is
	// enough and submit never blocks on it.
	ready chan string
	mu    sync.Mutex
	// queues holds the keys being run or waiting to run, with the messages
	// not yet started.
	queues map[string][]jetstream.Msg
	wg     sync.WaitGroup
}

// newKeyedPool starts workers goroutines. buffer and held bound the
// messages held (held may be nil); batchMax and batchMaxBytes bound a
// cart's batch, keys the carts of one handler call.
func newKeyedPool(workers, buffer int, held *budget.Bytes, batchMax, batchMaxBytes, keys int, handle func([][]jetstream.Msg)) *keyedPool {
	p := &keyedPool{
		handle:   handle,
		held:     held,
		max:      batchMax,
		maxBytes: batchMaxBytes,
		keys:     max(1, keys),
		slots:    make(chan struct{}, buffer),
		ready:    make(chan string, buffer),
		queues:   make(map[string][]jetstream.Msg, workers),
	}
	// Every goroutine counts as idle from the start, before it runs, so
	// that one that has not yet been scheduled still gets its key.
	p.idle.Store(int32(workers))
	for range workers {
		p.wg.Go(func() {
			for key := range p.ready {
				p.idle.Add(-1)
				p.run(key)
				p.idle.Add(1)
			}
		})
	}
	return p
}

// submit queues msg under key, blocking while buffer messages, or held's
// total of bytes, are held. Every partition's puller calls it
// concurrently; it must not be called after close.
func (p *keyedPool) submit(key string, msg jetstream.Msg) {
	p.slots <- struct{}{}
	// Without a context this cannot fail: it waits for the handlers, which
	// settle what is held whatever happens.
	_ = p.held.Take(context.Background(), p.heldBytes(msg))
	p.mu.Lock()
	q, active := p.queues[key]
	p.queues[key] = append(q, msg)
	p.mu.Unlock()
	if !active {
		p.ready <- key
	}
}

// run handles key's messages, with those of other waiting keys, a batch of
// each at a time, until their queues are empty. The keys it holds are its
// own until then: no other goroutine runs them.
func (p *keyedPool) run(key string) {
	keys := append(make([]string, 0, p.keys), key)
	for len(keys) > 0 {
		keys = p.more(keys)
		batches := make([][]jetstream.Msg, len(keys))
		n, size := 0, int64(0)
		p.mu.Lock()
		for i, k := range keys {
			batches[i] = p.next(k)
			n += len(batches[i])
			for _, m := range batches[i] {
				size += p.heldBytes(m)
			}
		}
		p.mu.Unlock()
		p.handle(batches)
		for range n {
			<-p.slots
		}
		// One Give for the lot is what the Takes took: messages held
		// together sum to no more than held's total, so none of them was
		// a take larger than the budget, which waits to be held alone.
		p.held.Give(size)
		// Keep the keys with more queued; the rest are done.
		p.mu.Lock()
		left := keys[:0]
		for _, k := range keys {
			if len(p.queues[k]) == 0 {
				delete(p.queues, k)
				continue
			}
			left = append(left, k)
		}
		p.mu.Unlock()
		keys = left
	}
}

// more adds to keys, up to p.keys, the keys waiting for a goroutine, without
// waiting for any, and leaving one for each idle goroutine: a cart joins
// another's call only when no goroutine is free to run it at once.
func (p *keyedPool) more(keys []string) []string {
	for len(keys) < p.keys && len(p.ready) > int(p.idle.Load()) {
		select {
		case k, ok := <-p.ready:
			if !ok {
				return keys
			}
			keys = append(keys, k)
		default:
			return keys
		}
	}
	return keys
}

// next takes key's next batch off its queue, which is not empty; p.mu is
// held.
func (p *keyedPool) next(key string) []jetstream.Msg {
	q := p.queues[key]
	n, size := 1, len(q[0].Data())
	for n < len(q) && n < p.max && size+len(q[n].Data()) <= p.maxBytes {
		size += len(q[n].Data())
		n++
	}
	batch := make([]jetstream.Msg, n)
	copy(batch, q)
	clear(q[:n])
	p.queues[key] = q[n:]
	return batch
}

// close waits until every submitted message has been handled and the
// goroutines have exited.
func (p *keyedPool) close() {
	close(p.ready)
	p.wg.Wait()
}

// HeldOverhead is what a held message counts for beyond its body, subject
// and headers (Config.Held): the client's and the worker's structures
// around it.
const HeldOverhead = 1 << 10

// heldBytes is what msg counts for in Config.Held; nothing without one.
func (p *keyedPool) heldBytes(msg jetstream.Msg) int64 {
	if p.held == nil {
		return 0
	}
	n := len(msg.Data()) + len(msg.Subject()) + len(msg.Reply()) + HeldOverhead
	for k, vs := range msg.Headers() {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return int64(n)
}
