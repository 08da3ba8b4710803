package consumer

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/budget"
)

// seqMsg is a stand-in message: the pool only passes messages through,
// weighing their bodies.
type seqMsg struct {
	jetstream.Msg
	key  string
	seq  int
	body []byte
}

func (m seqMsg) Data() []byte    { return m.body }
func (m seqMsg) Subject() string { return "cart.cmd." + m.key }
func (m seqMsg) Reply() string   { return "" }
func (m seqMsg) Headers() nats.Header {
	return nats.Header{"Nats-Msg-Id": {m.key + strconv.Itoa(m.seq)}}
}

func TestKeyedPoolOrderBoundAndParallelism(t *testing.T) {
	const n, keys, perKey = 4, 12, 25
	var (
		mu       sync.Mutex
		seen     = map[string][]int{}
		running  = map[string]bool{}
		inFlight atomic.Int32
		maxSeen  atomic.Int32
	)
	p := newKeyedPool(n, n, nil, 1, 1<<20, 1, func(bs [][]jetstream.Msg) {
		require.Len(t, bs, 1, "one cart at a time")
		b := bs[0]
		require.Len(t, b, 1, "batches of one")
		sm := b[0].(seqMsg)
		mu.Lock()
		require.False(t, running[sm.key], "two messages of %s at once", sm.key)
		running[sm.key] = true
		mu.Unlock()
		cur := inFlight.Add(1)
		for {
			old := maxSeen.Load()
			if cur <= old || maxSeen.CompareAndSwap(old, cur) {
				break
			}
		}
		time.Sleep(time.Millisecond) // hold the slot so that work overlaps
		inFlight.Add(-1)
		mu.Lock()
		running[sm.key] = false
		seen[sm.key] = append(seen[sm.key], sm.seq)
		mu.Unlock()
	})
	for i := range perKey {
		for k := range keys {
			key := "cart-" + strconv.Itoa(k)
			p.submit(key, seqMsg{key: key, seq: i})
		}
	}
	p.close()

	require.Len(t, seen, keys)
	for key, seqs := range seen {
		require.Len(t, seqs, perKey, key)
		for i, s := range seqs {
			require.Equal(t, i, s, "%s out of order", key)
		}
	}
	require.Equal(t, int32(n), maxSeen.Load(), "all slots busy, never more")
}

func TestKeyedPoolOneHotKeyDoesNotBlockOthers(t *testing.T) {
	release := make(chan struct{})
	done := make(chan string, 8)
	p := newKeyedPool(2, 2, nil, 1, 1<<20, 4, func(bs [][]jetstream.Msg) {
		sm := bs[0][0].(seqMsg)
		if sm.key == "hot" {
			<-release
		}
		done <- sm.key
	})
	p.submit("hot", seqMsg{key: "hot"})
	p.submit("cold", seqMsg{key: "cold"})
	select {
	case k := <-done:
		require.Equal(t, "cold", k)
	case <-time.After(5 * time.Second):
		t.Fatal("a cart waited behind another cart")
	}
	close(release)
	p.close()
}

// What queues up behind a running batch of a cart runs as the next batch,
// bounded by count and by bytes, in order; a buffer of n holds n messages.
func TestKeyedPoolBatchesWhatQueued(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	var (
		mu      sync.Mutex
		batches [][]int
	)
	p := newKeyedPool(1, 16, nil, 4, 30, 4, func(bs [][]jetstream.Msg) {
		b := bs[0]
		if b[0].(seqMsg).seq == 0 {
			close(started)
			<-release
		}
		var seqs []int
		for _, m := range b {
			seqs = append(seqs, m.(seqMsg).seq)
		}
		mu.Lock()
		batches = append(batches, seqs)
		mu.Unlock()
	})
	p.submit("c", seqMsg{key: "c", seq: 0, body: make([]byte, 10)})
	<-started
	for i := 1; i <= 9; i++ {
		size := 10
		if i == 6 {
			size = 25 // alone past the byte bound with any other
		}
		p.submit("c", seqMsg{key: "c", seq: i, body: make([]byte, size)})
	}
	close(release)
	p.close()
	require.Equal(t, [][]int{{0}, {1, 2, 3}, {4, 5}, {6}, {7, 8, 9}}, batches)
}

// A goroutine hands over, with its own cart, the carts waiting for a
// goroutine when it starts, at most keys of them, each once, each cart's
// batch in order; a cart whose queue empties leaves the call, and one with
// more goes on in the next.
func TestKeyedPoolHandsWaitingCartsOverTogether(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	var (
		mu    sync.Mutex
		calls [][]string
	)
	p := newKeyedPool(1, 64, nil, 2, 1<<20, 3, func(bs [][]jetstream.Msg) {
		if bs[0][0].(seqMsg).key == "first" {
			close(started)
			<-release
		}
		var call []string
		for _, b := range bs {
			for _, m := range b {
				sm := m.(seqMsg)
				call = append(call, sm.key+strconv.Itoa(sm.seq))
			}
		}
		mu.Lock()
		calls = append(calls, call)
		mu.Unlock()
	})
	p.submit("first", seqMsg{key: "first"})
	<-started
	for _, k := range []string{"a", "b", "c", "d"} {
		for i := range 3 {
			p.submit(k, seqMsg{key: k, seq: i})
		}
	}
	close(release)
	p.close()
	require.Equal(t, [][]string{
		{"first0"},
		{"a0", "a1", "b0", "b1", "c0", "c1"}, // three carts, two commands each
		{"a2", "b2", "c2"},
		{"d0", "d1"},
		{"d2"},
	}, calls)
}

// The bytes held bound the pool as its buffer does: a puller with a
// message that would take them past Config.Held waits until a batch is
// settled, and every byte taken is given back.
func TestKeyedPoolBoundsTheBytesHeld(t *testing.T) {
	msg := func(seq int) seqMsg { return seqMsg{key: "c", seq: seq, body: make([]byte, 1000)} }
	unbounded, _ := budget.New(1 << 40)
	one := (&keyedPool{held: unbounded}).heldBytes(msg(0))
	require.Greater(t, one, int64(1000+HeldOverhead), "body, overhead, subject and headers")
	held, err := budget.New(3 * one) // three messages of one-digit seqs
	require.NoError(t, err)
	started, release := make(chan struct{}), make(chan struct{})
	p := newKeyedPool(1, 64, held, 1, 1<<20, 1, func(bs [][]jetstream.Msg) {
		if bs[0][0].(seqMsg).seq == 0 {
			close(started)
			<-release
		}
	})
	p.submit("c", msg(0))
	<-started
	p.submit("c", msg(1))
	submitted := make(chan struct{})
	go func() {
		p.submit("c", msg(2)) // the third fits
		p.submit("c", msg(3)) // the fourth waits for the first to settle
		close(submitted)
	}()
	require.Eventually(t, func() bool { return held.Waiting() == 1 }, 5*time.Second, time.Millisecond,
		"the fourth message should wait for bytes")
	select {
	case <-submitted:
		t.Fatal("submitted past the bytes held")
	default:
	}
	close(release)
	<-submitted
	p.close()
	require.Zero(t, held.Held(), "every byte taken is given back")
}
