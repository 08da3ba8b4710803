package consumer

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// seqMsg is a stand-in message: the pool only passes messages through.
type seqMsg struct {
	jetstream.Msg
	key string
	seq int
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
	p := newKeyedPool(n, func(m jetstream.Msg) {
		sm := m.(seqMsg)
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
	p := newKeyedPool(2, func(m jetstream.Msg) {
		sm := m.(seqMsg)
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
