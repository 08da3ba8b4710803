package consumer

import (
	"fmt"
	"sync"
	"time"

	"github.com/cartworker/cartworker/command"
)

// stalls tracks the consumers this instance pulls whose fetches keep
// failing: a stream or consumer without a leader, say. It only reports
// (Worker.Ready names the stream): closing the gate or handing the
// partitions away would not help, since a stream without a leader is no
// fault of this instance, and giving its partitions to another would only
// move the stall.
type stalls struct {
	mu sync.Mutex
	// since is when each consumer's fetches started failing without a
	// success in between; why is the last failure.
	since map[string]time.Time
	why   map[string]error
}

func newStalls() *stalls {
	return &stalls{since: map[string]time.Time{}, why: map[string]error{}}
}

// failed records a failed fetch of consumer name.
func (s *stalls) failed(name string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.since[name]; !ok {
		s.since[name] = time.Now()
	}
	s.why[name] = err
}

// ok records a fetch of consumer name that worked, or that this instance
// stopped pulling it.
func (s *stalls) ok(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.since, name)
	delete(s.why, name)
}

// err names a consumer whose fetches have failed for longer than limit, or
// returns nil.
func (s *stalls) err(limit time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var worst string
	for name, since := range s.since {
		if time.Since(since) > limit && (worst == "" || since.Before(s.since[worst])) {
			worst = name
		}
	}
	if worst == "" {
		return nil
	}
	return fmt.Errorf("stream %s: cannot fetch from consumer %s for %s (no stream or consumer leader?): %w",
		command.StreamCommands, worst, time.Since(s.since[worst]).Round(time.Second), s.why[worst])
}
