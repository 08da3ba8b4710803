package statepool

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Every buffer has the length asked for and the capacity of its tier, the
// least power of two that holds it (256 B at least); one past the largest
// tier is allocated as asked and never pooled.
func TestGRPCBuffersTiers(t *testing.T) {
	var p grpcBuffers
	for _, tc := range []struct{ length, capacity int }{
		{0, 256}, {1, 256}, {256, 256}, {257, 512}, {130_000, 1 << 17}, {1 << 22, 1 << 22}, {1<<22 + 1, 1<<22 + 1},
	} {
		b := p.Get(tc.length)
		require.Len(t, *b, tc.length, "length %d", tc.length)
		require.Equal(t, tc.capacity, cap(*b), "length %d", tc.length)
		p.Put(b)
	}
	// A buffer put back serves the next Get of its tier, cut to length.
	b := p.Get(1000)
	(*b)[0] = 7
	p.Put(b)
	again := p.Get(600)
	require.Len(t, *again, 600)
	require.Equal(t, 1024, cap(*again))
	// A buffer of no tier's capacity is not pooled.
	odd := make([]byte, 300, 300)
	p.Put(&odd)
	require.Equal(t, 512, cap(*p.Get(300)))
}
