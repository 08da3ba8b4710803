package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
)

// failures counts each command's transient failures, keyed by its stream
// sequence, in a key-value bucket every instance shares. The retry policy
// (retry.go) checks MaxDeliver (WORKER_MAX_DELIVER) against this count, not
// against JetStream's delivery count: a command handed back because its
// instance was not ready, or Nak'ed at shutdown, was redelivered but never
// failed, and must not come closer to a dead letter for it.
type failures struct {
	kv jetstream.KeyValue
}

// ensureFailures creates or updates the bucket. Its entries live as long as
// the commands they count.
func (w *Worker) ensureFailures(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := w.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      command.FailuresBucket,
		Description: "cartworker: transient failures per command, by stream sequence",
		TTL:         w.cfg.CommandMaxAge,
		Replicas:    w.cfg.Replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, w.explain(fmt.Errorf("key-value bucket %s: %w", command.FailuresBucket, err))
	}
	return kv, nil
}

// count returns how many failures the command at seq has had.
func (f failures) count(ctx context.Context, seq uint64) (int, error) {
	e, err := f.kv.Get(ctx, strconv.FormatUint(seq, 10))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, _ := strconv.Atoi(string(e.Value()))
	return n, nil
}

// casRounds bounds the compare-and-set of a failure count: the rounds in
// which another writer may change it between its read and its write.
const casRounds = 3

// add records one more failure of the command at seq and returns how many
// it has had, by compare-and-set: a write that lost to another writer reads
// the count again and sets it again. That is concurrency control, not a
// retry of a failure: an error of the bucket ends it at once. Only one
// instance handles a partition's command at a time, so it guards against a
// race that should not happen, and a few rounds are enough.
func (f failures) add(ctx context.Context, seq uint64) (int, error) {
	key := strconv.FormatUint(seq, 10)
	for range casRounds {
		e, err := f.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err = f.kv.Create(ctx, key, []byte("1")); err == nil {
				return 1, nil
			}
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue
			}
			return 0, err
		}
		if err != nil {
			return 0, err
		}
		n, err := strconv.Atoi(string(e.Value()))
		if err != nil {
			n = 0
		}
		n++
		if _, err = f.kv.Update(ctx, key, []byte(strconv.Itoa(n)), e.Revision()); err == nil {
			return n, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, err
		}
	}
	return 0, fmt.Errorf("failure count of %s kept changing", key)
}

// countFailure records one more transient failure of every delivery, the
// attempt-th in this hold, and returns the most any of them has had.
// Without the shared count, JetStream's delivery count plus the attempts
// here is the closest bound: never retry forever.
func (w *Worker) countFailure(r *run, ds []*delivery, attempt int) int {
	// The work context may be cancelled already; the count must still get
	// out.
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	most := 0
	for _, d := range ds {
		failed, err := r.failures.add(ctx, d.md.Sequence.Stream)
		if err != nil {
			failed = int(d.md.NumDelivered) - 1 + attempt
			w.log.Warn("failure count not stored; counting deliveries", "subject", w.subject(d.msg), "err", err)
		}
		most = max(most, failed)
	}
	return most
}
