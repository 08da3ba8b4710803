package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// heapEvery is how often a drain's heap profile is read: often enough to
// catch a drain of a few seconds more than once, rarely enough that the
// profiling costs the consumer little.
const heapEvery = 2 * time.Second

// heapProfiles reads a consumer's heap profile every heapEvery during a
// drain and keeps the one read at the largest RSS: the live heap at the
// drain's worst moment, as the last garbage collection before it saw it.
type heapProfiles struct {
	stop func()
	mu   sync.Mutex
	best []byte
	rss  int64
}

// startHeapProfiles starts reading url (a /debug/pprof/heap) until stop is
// called; with url empty it reads nothing.
func startHeapProfiles(ctx context.Context, url string, pid int) *heapProfiles {
	h := &heapProfiles{stop: func() {}}
	if url == "" {
		return h
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	h.stop = func() {
		cancel()
		wg.Wait()
	}
	wg.Go(func() {
		t := time.NewTicker(heapEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rss, err := loadkit.ProcRSSKiB(pid)
			if err != nil {
				return
			}
			h.mu.Lock()
			worse := rss > h.rss
			h.mu.Unlock()
			if !worse {
				continue
			}
			body, err := getBody(ctx, url+"?gc=0")
			if err != nil {
				continue // not ready yet, or pprof is off: the next tick says
			}
			h.mu.Lock()
			h.best, h.rss = []byte(body), rss
			h.mu.Unlock()
		}
	})
	return h
}

// write saves the profile kept to path.
func (h *heapProfiles) write(path string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.best == nil {
		return errors.New("none was read (is the consumer's pprof on, and -heap-url right?)")
	}
	return writeFileAtomic(path, h.best)
}
