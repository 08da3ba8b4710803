// Package budget bounds the bytes an instance holds at once: the command
// bodies it has fetched and not yet settled, and the cart documents its
// applies are working on. The worker's one memory setting,
// WORKER_MAX_HELD_BYTES, is split between the two by Split.
package budget

import (
	"context"
	"fmt"
	"sync"
)

// DefaultTotal is the default of WORKER_MAX_HELD_BYTES: 16 MiB, of which
// Split gives 4 MiB to commands (about 3,000 of the usual few hundred
// bytes, more than WORKER_BUFFER lets in) and 12 MiB to carts (two carts
// at the 2 MiB size limit applied at once). With the Go runtime's own
// memory and the binary, the worker stays under 48 MiB of RSS (README,
// "Memory").
const DefaultTotal = 16 << 20

// MinTotal is the smallest budget the worker accepts: below it, commands
// of the usual size would run one at a time.
const MinTotal = 1 << 20

// Bytes is a budget of bytes that holders take from and give back. A take
// that would go over the budget waits until enough is given back, except
// that one take may always have the whole budget: a cart or command
// larger than the budget runs alone rather than never. Takes are served
// first come, first served, so a large one is not starved by small ones.
//
// The zero value is not usable; a nil *Bytes is an unbounded budget.
type Bytes struct {
	total int64
	mu    sync.Mutex
	held  int64
	// waiters are the takes waiting, oldest first.
	waiters []*waiter
}

type waiter struct {
	n     int64
	ready chan struct{}
}

// New returns a budget of total bytes, which must be positive.
func New(total int64) (*Bytes, error) {
	if total <= 0 {
		return nil, fmt.Errorf("budget: %d bytes: want a positive size", total)
	}
	return &Bytes{total: total}, nil
}

// Split divides total between the command bodies an instance holds (a
// quarter) and the cart documents its applies hold (the rest). The two are
// separate budgets so that commands waiting for their apply can never
// take what the apply needs to run.
func Split(total int64) (commands, carts *Bytes, err error) {
	if total < 4 {
		return nil, nil, fmt.Errorf("budget: %d bytes: want at least 4", total)
	}
	commands, _ = New(total / 4)
	carts, _ = New(total - total/4)
	return commands, carts, nil
}

// Total is the budget's size, 0 for the unbounded nil budget.
func (b *Bytes) Total() int64 {
	if b == nil {
		return 0
	}
	return b.total
}

// Held is how many bytes are taken now.
func (b *Bytes) Held() int64 {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held
}

// Waiting is how many takes are waiting for bytes now.
func (b *Bytes) Waiting() int {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiters)
}

// Take takes n bytes, waiting while they would take the budget past its
// total; Give(n) gives them back. A take of more than the total waits for
// the whole budget and takes it. It fails only with ctx's error, having
// taken nothing.
func (b *Bytes) Take(ctx context.Context, n int64) error {
	if b == nil || n <= 0 {
		return nil
	}
	n = min(n, b.total)
	b.mu.Lock()
	if len(b.waiters) == 0 && b.held+n <= b.total {
		b.held += n
		b.mu.Unlock()
		return nil
	}
	w := &waiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		defer b.mu.Unlock()
		select {
		case <-w.ready:
			// Granted as ctx ended: give it back.
			b.held -= n
			b.grant()
		default:
			for i, o := range b.waiters {
				if o == w {
					b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
					break
				}
			}
			// The waiters behind this one may fit now.
			b.grant()
		}
		return ctx.Err()
	}
}

// Give gives back what a Take of n took, once that Take has returned nil.
func (b *Bytes) Give(n int64) {
	if b == nil || n <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held -= min(n, b.total)
	b.grant()
}

// grant hands the budget to the waiters at the head of the queue that fit;
// b.mu is held.
func (b *Bytes) grant() {
	for len(b.waiters) > 0 {
		w := b.waiters[0]
		if b.held+w.n > b.total {
			return
		}
		b.held += w.n
		b.waiters = b.waiters[1:]
		close(w.ready)
	}
}
