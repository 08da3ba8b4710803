package consumer

import (
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// keyedPool runs a handler on at most workers goroutines, one batch of a key
// (a cart) at a time: a cart's messages run in arrival order, in batches of
// what has queued up behind each other, and different carts run in
// parallel. Unlike hashing carts onto fixed lanes, two carts never queue
// behind each other because their hashes collide, so every goroutine does
// work whenever that many carts have some.
//
// The messages held (queued or running) are bounded separately, by buffer:
// a cart's backlog can only form into a batch if the instance holds it.
type keyedPool struct {
	handle func([]jetstream.Msg)
	// limit bounds a batch: at most max messages and, past the first,
	// maxBytes of bodies.
	max, maxBytes int
	// slots bounds the messages held: queued or running.
	slots chan struct{}
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

// newKeyedPool starts workers goroutines. buffer bounds the messages held;
// batchMax and batchMaxBytes bound a batch.
func newKeyedPool(workers, buffer, batchMax, batchMaxBytes int, handle func([]jetstream.Msg)) *keyedPool {
	p := &keyedPool{
		handle:   handle,
		max:      batchMax,
		maxBytes: batchMaxBytes,
		slots:    make(chan struct{}, buffer),
		ready:    make(chan string, buffer),
		queues:   make(map[string][]jetstream.Msg, workers),
	}
	for range workers {
		p.wg.Go(func() {
			for key := range p.ready {
				p.run(key)
			}
		})
	}
	return p
}

// submit queues msg under key, blocking while buffer messages are held.
// Every partition's puller calls it concurrently; it must not be called
// after close.
func (p *keyedPool) submit(key string, msg jetstream.Msg) {
	p.slots <- struct{}{}
	p.mu.Lock()
	q, active := p.queues[key]
	p.queues[key] = append(q, msg)
	p.mu.Unlock()
	if !active {
		p.ready <- key
	}
}

// run handles key's messages, a batch at a time, until its queue is empty.
func (p *keyedPool) run(key string) {
	for {
		p.mu.Lock()
		q := p.queues[key]
		if len(q) == 0 {
			delete(p.queues, key)
			p.mu.Unlock()
			return
		}
		n, size := 1, len(q[0].Data())
		for n < len(q) && n < p.max && size+len(q[n].Data()) <= p.maxBytes {
			size += len(q[n].Data())
			n++
		}
		batch := make([]jetstream.Msg, n)
		copy(batch, q)
		clear(q[:n])
		p.queues[key] = q[n:]
		p.mu.Unlock()
		p.handle(batch)
		for range n {
			<-p.slots
		}
	}
}

// close waits until every submitted message has been handled and the
// goroutines have exited.
func (p *keyedPool) close() {
	close(p.ready)
	p.wg.Wait()
}
