package cartcache_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/statepool"
)

// memStore is an in-memory Store so that the benchmarks measure the apply
// path alone, without HTTP.
type memStore struct {
	mu   sync.Mutex
	docs map[string][]byte
	ver  int
}

var _ statepool.Single = (*memStore)(nil)

func (m *memStore) Get(_ context.Context, key string) (statepool.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.docs[key]
	if !ok {
		return statepool.Entry{}, statepool.ErrNotFound
	}
	return statepool.Entry{Value: d, ETag: strconv.Itoa(m.ver)}, nil
}

func (m *memStore) Save(_ context.Context, key string, value []byte, _ statepool.SaveOptions) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.docs[key] = value
	m.ver++
	return nil
}

func (m *memStore) Delete(_ context.Context, key, _ string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.docs, key)
	return nil
}

func benchmarkAddItem(b *testing.B, lines int) {
	ctx := context.Background()
	store := &memStore{docs: map[string][]byte{}}
	svc := cartcache.New(statepool.OneByOne{Single: store}, cartcache.Config{})
	if _, err := svc.Apply(ctx, cacheCmd("c1", "")); err != nil {
		b.Fatal(err)
	}
	for i := range lines {
		if _, err := svc.Apply(ctx, addCmd("seed"+strconv.Itoa(i), "c1", item("A", 1, "120", "01"))); err != nil {
			b.Fatal(err)
		}
	}
	seeded := store.docs["c1"]
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		// Start every iteration from the same cart size.
		store.docs["c1"] = seeded
		i++
		if _, err := svc.Apply(ctx, addCmd("b"+strconv.Itoa(i), "c1", item("B", 2, "99.5", "11"))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(seeded)), "cart_bytes")
}

func BenchmarkApplyAddItem20Lines(b *testing.B)  { benchmarkAddItem(b, 20) }
func BenchmarkApplyAddItem200Lines(b *testing.B) { benchmarkAddItem(b, 200) }

// BenchmarkApplyAddItemRefusedAtTheLimit is an add-item to a cart of about
// 2 MiB that the size limit refuses: the slow path, which applies the batch
// a second time from a fresh parse with each step measured. It only runs
// for a cart at its limit.
func BenchmarkApplyAddItemRefusedAtTheLimit(b *testing.B) {
	ctx := context.Background()
	store := &memStore{docs: map[string][]byte{}}
	seed := cartcache.New(statepool.OneByOne{Single: store}, cartcache.Config{})
	if _, err := seed.Apply(ctx, cacheCmd("c1", "")); err != nil {
		b.Fatal(err)
	}
	batch := make([]command.Item, command.MaxItems)
	for i := range batch {
		batch[i] = item("A", 1, "120", "01")
	}
	for i := 0; len(store.docs["c1"]) < 2<<20-40<<10; i++ {
		if _, err := seed.Apply(ctx, addCmd("seed"+strconv.Itoa(i), "c1", batch...)); err != nil {
			b.Fatal(err)
		}
	}
	seeded := store.docs["c1"]
	svc := cartcache.New(statepool.OneByOne{Single: store}, cartcache.Config{MaxCartBytes: len(seeded)})
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		store.docs["c1"] = seeded
		i++
		if _, err := svc.Apply(ctx, addCmd("b"+strconv.Itoa(i), "c1", item("B", 2, "99.5", "11"))); !errors.Is(err, cart.ErrCartTooLarge) {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(seeded)), "cart_bytes")
}
