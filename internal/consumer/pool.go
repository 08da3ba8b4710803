package consumer

import (
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// keyedPool runs a handler on at most n goroutines, one message of a key
// (a cart) at a time: a cart's messages run in arrival order, different carts
// in parallel. Unlike hashing carts onto n fixed lanes, two carts never queue
// behind each other because their hashes collide, so all n slots do work
// whenever n different carts have some.
type keyedPool struct {
	handle func(jetstream.Msg)
	// slots bounds the messages queued or running: the in-flight limit.
	slots chan struct{}
	// ready hands a key with queued messages to a free goroutine. Every key
	// in it holds at least one slot, so n places are enough and submit never
	// blocks on it.
	ready chan string
	mu    sync.Mutex
	// queues holds the keys being run or waiting to run, with the messages
	// not yet started.
	queues map[string][]jetstream.Msg
	wg     sync.WaitGroup
}

func newKeyedPool(n int, handle func(jetstream.Msg)) *keyedPool {
	p := &keyedPool{
		handle: handle,
		slots:  make(chan struct{}, n),
		ready:  make(chan string, n),
		queues: make(map[string][]jetstream.Msg, n),
	}
	for range n {
		p.wg.Go(func() {
			for key := range p.ready {
				p.run(key)
			}
		})
	}
	return p
}

// submit queues msg under key, blocking while n messages are in flight.
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

// run handles key's messages until its queue is empty.
func (p *keyedPool) run(key string) {
	for {
		p.mu.Lock()
		q := p.queues[key]
		if len(q) == 0 {
			delete(p.queues, key)
			p.mu.Unlock()
			return
		}
		msg := q[0]
		q[0] = nil
		p.queues[key] = q[1:]
		p.mu.Unlock()
		p.handle(msg)
		<-p.slots
	}
}

// close waits until every submitted message has been handled and the
// goroutines have exited.
func (p *keyedPool) close() {
	close(p.ready)
	p.wg.Wait()
}
