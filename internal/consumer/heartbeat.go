package consumer

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// heartbeats keeps the commands an instance holds from reaching AckWait:
// every message it has taken from JetStream and not yet settled, running,
// queued behind its cart or parked while the gate is closed, gets an
// InProgress once it has been held for a third of AckWait. Work that outlives
// AckWait (a slow store, a paused instance) then never makes JetStream hand
// the command to someone else, which would spend a delivery and could apply
// a cart's commands out of order.
type heartbeats struct {
	mu   sync.Mutex
	msgs map[jetstream.Msg]time.Time // last touched
}

func newHeartbeats() *heartbeats {
	return &heartbeats{msgs: make(map[jetstream.Msg]time.Time)}
}

// add starts keeping msg alive.
func (h *heartbeats) add(msg jetstream.Msg) {
	h.mu.Lock()
	h.msgs[msg] = time.Now()
	h.mu.Unlock()
}

// remove stops keeping msg alive; call it once msg is settled.
func (h *heartbeats) remove(msg jetstream.Msg) {
	h.mu.Lock()
	delete(h.msgs, msg)
	h.mu.Unlock()
}

// oldest returns, for each partition, when the oldest message of it still
// held was taken.
func (h *heartbeats) oldest() map[int]time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[int]time.Time{}
	for m := range h.msgs {
		in, ok := m.(*inbound)
		if !ok || in.grant.Partition < 0 {
			continue
		}
		if t, seen := out[in.grant.Partition]; !seen || in.taken.Before(t) {
			out[in.grant.Partition] = in.taken
		}
	}
	return out
}

// run sends InProgress for every message untouched for every, until ctx ends.
func (h *heartbeats) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every / 2)
	defer t.Stop()
	var due []jetstream.Msg
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due = due[:0]
			h.mu.Lock()
			for m, last := range h.msgs {
				if now.Sub(last) >= every {
					h.msgs[m] = now
					due = append(due, m)
				}
			}
			h.mu.Unlock()
			for _, m := range due {
				// A message settled since it was picked answers
				// ErrMsgAlreadyAckd; the server ignores a late +WPI.
				_ = m.InProgress()
			}
		}
	}
}
