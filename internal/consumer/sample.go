package consumer

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
)

// sample reports, every sampleEvery until ctx ends, the lag of the
// partitions this instance owns, the age of the oldest command it holds in
// each, and the depth of the dead-letter stream.
// Both are sampled rather than counted: JetStream knows them, and another
// instance or an operator changes them too.
func (w *Worker) sample(ctx context.Context, r *run, cons Consumers) {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		w.sampleOnce(ctx, r, cons)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Worker) sampleOnce(ctx context.Context, r *run, cons Consumers) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	owned := r.owner.Owned(len(cons.Partitions))
	oldest, now := r.beats.oldest(), time.Now()
	ages := make(map[int]time.Duration, len(owned))
	for _, p := range owned {
		ages[p] = 0
		if t, ok := oldest[p]; ok {
			ages[p] = now.Sub(t)
		}
	}
	w.cfg.Observer.OldestUnacked(ages)
	var lag uint64
	ok := true
	for _, p := range owned {
		if r.idle != nil && r.idle.isParked(p) {
			// Its last fetch found nothing, and a command since wakes
			// it: asking the server would cost an idle instance a
			// request a partition.
			continue
		}
		info, err := cons.Partitions[p].Info(ctx)
		if err != nil {
			ok = false
			break
		}
		lag += info.NumPending
	}
	if ok {
		w.cfg.Observer.Lag(lag)
	}
	if err := w.sampleDeadLetters(ctx); err != nil && ctx.Err() == nil {
		w.log.Debug("dead-letter stream depth not sampled", "stream", command.StreamDeadLetters, "err", err)
	}
}

func (w *Worker) sampleDeadLetters(ctx context.Context) error {
	state, err := streamState(ctx, w.js, command.StreamDeadLetters)
	if err != nil {
		return err
	}
	w.cfg.Observer.DeadLetterDepth(state.Msgs)
	return nil
}

// streamState is the state of stream name, in one request: js.Stream reads
// the stream's info already, which a second call of Info would read again.
func streamState(ctx context.Context, js jetstream.JetStream, name string) (jetstream.StreamState, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	return s.CachedInfo().State, nil
}
