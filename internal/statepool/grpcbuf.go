package statepool

import (
	"fmt"
	"math/bits"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// grpcBuffers is the gRPC channel's buffer pool, for its transport and for
// its codec (protoCodec). gRPC's default pool clears every buffer it hands
// out, over its whole capacity: a bulk read's answer, or a bulk save of
// 16 carts, clears a buffer of up to 256 KiB at every call. That clearing
// was 5 % of the worker's CPU at saturation. This pool does not clear:
// gRPC, and protoCodec, fill the length they ask for before they read it,
// and the buffers never leave this process. It keeps a tier per power of
// two, so a buffer is less than twice what it holds.
type grpcBuffers struct {
	// tiers[i] holds buffers of capacity 1<<(i+minTierShift).
	tiers [maxTierShift - minTierShift + 1]sync.Pool
}

// The tiers: 256 B to 4 MiB, daprd's default max-body-size. A larger
// buffer is allocated and let go.
const (
	minTierShift = 8
	maxTierShift = 22
)

var _ mem.BufferPool = (*grpcBuffers)(nil)

// tier is the index of the smallest tier that holds n bytes, or -1 past
// the largest.
func tier(n int) int {
	shift := max(minTierShift, bits.Len(uint(max(n, 1)-1)))
	if shift > maxTierShift {
		return -1
	}
	return shift - minTierShift
}

// Get implements mem.BufferPool.
func (p *grpcBuffers) Get(length int) *[]byte {
	i := tier(length)
	if i < 0 {
		b := make([]byte, length)
		return &b
	}
	if b, ok := p.tiers[i].Get().(*[]byte); ok {
		*b = (*b)[:length]
		return b
	}
	b := make([]byte, length, 1<<(i+minTierShift))
	return &b
}

// Put implements mem.BufferPool. A buffer whose capacity is no tier's is
// let go.
func (p *grpcBuffers) Put(b *[]byte) {
	c := cap(*b)
	if i := tier(c); i >= 0 && c == 1<<(i+minTierShift) {
		p.tiers[i].Put(b)
	}
}

// protoCodec is gRPC's proto codec over grpcBuffers rather than gRPC's
// default pool, which its own codec always uses.
type protoCodec struct{ pool *grpcBuffers }

var _ encoding.CodecV2 = protoCodec{}

// Marshal implements encoding.CodecV2.
func (c protoCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("proto: cannot marshal %T, want proto.Message", v)
	}
	// UseCachedSize reuses the size just computed: the message does not
	// change meanwhile.
	buf := c.pool.Get(proto.Size(m))
	if _, err := (proto.MarshalOptions{UseCachedSize: true}).MarshalAppend((*buf)[:0], m); err != nil {
		c.pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

// Unmarshal implements encoding.CodecV2. proto.Unmarshal copies what it
// keeps, so the buffer goes back to the pool at once.
func (c protoCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("proto: cannot unmarshal into %T, want proto.Message", v)
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// Name implements encoding.CodecV2: it is the proto codec, to daprd too.
func (protoCodec) Name() string { return "proto" }
