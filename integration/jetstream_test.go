//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/publisher"
)

// bus is a test's connection to NATS: JetStream, a Publisher and the
// outcome events seen since it connected.
type bus struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	pub    *publisher.Publisher
	events *eventLog
	subj   command.Subjects
	// partitions is the workers' WORKER_PARTITIONS: waitConsumer waits
	// for that many partition consumers. A test that sets it sets this too.
	partitions int
}

// connectBus connects to url, removes the streams (and so the worker's
// durable consumers) left by earlier tests, and starts recording events.
// Workers recreate the streams when they start. opts add to the connection's
// options, such as TLS and credentials.
func connectBus(ctx context.Context, t *testing.T, url string, opts ...nats.Option) *bus {
	t.Helper()
	b := joinBus(t, url, opts...)
	for _, s := range []string{command.StreamCommands, command.StreamDeadLetters} {
		if err := b.js.DeleteStream(ctx, s); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			require.NoError(t, err, "delete stream %s", s)
		}
	}
	return b
}

// joinBus is connectBus for a NATS whose streams a running worker made:
// it leaves them as they are.
func joinBus(t *testing.T, url string, opts ...nats.Option) *bus {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name("cartworker-integration-test")}, opts...)...)
	require.NoError(t, err, "connect to NATS at %s", url)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	pub, err := publisher.New(js, nc, publisher.WithWaitTimeout(30*time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	b := &bus{nc: nc, js: js, pub: pub, subj: pub.Subjects(), partitions: command.DefaultPartitions}
	b.events = recordEvents(t, nc, b.subj.Events())
	return b
}

// waitConsumer waits until a worker has created the streams and every
// durable consumer of the command stream, so that commands can be
// published and the consumers' counts read.
func (b *bus) waitConsumer(ctx context.Context, t *testing.T) {
	t.Helper()
	waitConsumers(ctx, t, b.js, b.partitions)
}

// waitSpread waits until n worker instances hold partition leases: the
// partitions have spread over them, as they do a few seconds after
// instances start.
func (b *bus) waitSpread(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	poll(ctx, t, 30*time.Second, "partitions spread over the instances", func() error {
		kv, err := b.js.KeyValue(ctx, command.LeasesBucket)
		if err != nil {
			return err
		}
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			return err
		}
		holders := map[string]bool{}
		for k := range keys.Keys() {
			if e, err := kv.Get(ctx, k); err == nil {
				holders[string(e.Value())] = true
			}
		}
		if len(holders) < n {
			return fmt.Errorf("%d holders", len(holders))
		}
		return nil
	})
}

// waitConsumers waits until CART_DLQ exists and CART_COMMANDS has the
// strays consumer and the consumers of partitions 0..partitions-1. The
// worker creates the strays consumer first, so finding it alone says
// nothing of the partitions.
func waitConsumers(ctx context.Context, t *testing.T, js jetstream.JetStream, partitions int) {
	t.Helper()
	want := []string{command.ConsumerName}
	for p := range partitions {
		want = append(want, command.PartitionConsumer(p))
	}
	poll(ctx, t, 30*time.Second, "the worker's JetStream setup", func() error {
		if _, err := js.Stream(ctx, command.StreamDeadLetters); err != nil {
			return err
		}
		infos, err := commandConsumers(ctx, js)
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, ci := range infos {
			have[ci.Name] = true
		}
		var missing []string
		for _, name := range want {
			if !have[name] {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d of %d consumers missing, e.g. %s", len(missing), len(want), missing[0])
		}
		return nil
	})
}

// commandConsumers returns the info of every consumer of CART_COMMANDS:
// the strays consumer and one per partition.
func commandConsumers(ctx context.Context, js jetstream.JetStream) ([]*jetstream.ConsumerInfo, error) {
	s, err := js.Stream(ctx, command.StreamCommands)
	if err != nil {
		return nil, err
	}
	l := s.ListConsumers(ctx)
	var out []*jetstream.ConsumerInfo
	for ci := range l.Info() {
		out = append(out, ci)
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("list the consumers of %s: %w", command.StreamCommands, err)
	}
	return out, nil
}

// consumerTotals sums the counts of every consumer of the command stream:
// a command waits in its partition's consumer, or in the strays consumer
// if it was stored before partitioning.
type consumerTotals struct {
	consumers   int
	pending     uint64 // not yet delivered
	ackPending  int    // delivered, not yet acknowledged
	redelivered int    // delivered more than once, unacknowledged
	// busy names the consumers with something pending or unacknowledged.
	busy []string
}

func (c consumerTotals) String() string {
	return fmt.Sprintf("%d consumers: %d pending, %d unacknowledged, %d redelivered (busy: %v)",
		c.consumers, c.pending, c.ackPending, c.redelivered, c.busy)
}

// totals reads consumerTotals.
func (b *bus) totals(ctx context.Context) (consumerTotals, error) {
	infos, err := commandConsumers(ctx, b.js)
	if err != nil {
		return consumerTotals{}, err
	}
	var out consumerTotals
	for _, ci := range infos {
		out.consumers++
		out.pending += ci.NumPending
		out.ackPending += ci.NumAckPending
		out.redelivered += ci.NumRedelivered
		if ci.NumPending != 0 || ci.NumAckPending != 0 {
			out.busy = append(out.busy, ci.Name)
		}
	}
	return out, nil
}

// consumerSettled reports whether the command stream's consumers have
// nothing left to deliver and nothing unacknowledged.
func (b *bus) consumerSettled(ctx context.Context) error {
	tot, err := b.totals(ctx)
	if err != nil {
		return err
	}
	if tot.consumers == 0 {
		return fmt.Errorf("%s has no consumer", command.StreamCommands)
	}
	if tot.pending != 0 || tot.ackPending != 0 {
		return errors.New(tot.String())
	}
	return nil
}

// publishRaw stores body on subject with its own Nats-Msg-Id, bypassing
// the Publisher's validation. Extra headers come as key, value pairs.
func (b *bus) publishRaw(ctx context.Context, subject string, body []byte, msgID string, headers ...string) error {
	m := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{}}
	m.Header.Set(command.HeaderMsgID, msgID)
	for i := 0; i+1 < len(headers); i += 2 {
		m.Header.Set(headers[i], headers[i+1])
	}
	ack, err := b.js.PublishMsg(ctx, m)
	if err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	if ack.Duplicate {
		return fmt.Errorf("publish %s: JetStream dropped Nats-Msg-Id %s as a duplicate", subject, msgID)
	}
	return nil
}

// republish stores cmd again under a new Nats-Msg-Id, as a publisher
// retrying after JetStream's duplicate window would.
func (b *bus) republish(ctx context.Context, cmd command.Command, msgID string) error {
	body, err := command.Marshal(cmd)
	if err != nil {
		return err
	}
	return b.publishRaw(ctx, b.subj.Command(cmd.CartID, cmd.Type), body, msgID)
}

// deadLetters returns every message of the dead-letter stream.
func (b *bus) deadLetters(ctx context.Context, t *testing.T) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := b.js.Stream(ctx, command.StreamDeadLetters)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(t, err)
		out = append(out, m)
	}
	return out
}

// deadLetterCount returns how many messages the dead-letter stream holds.
func (b *bus) deadLetterCount(ctx context.Context) (uint64, error) {
	s, err := b.js.Stream(ctx, command.StreamDeadLetters)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// eventLog records every outcome event published under a subject.
type eventLog struct {
	mu     sync.Mutex
	events []command.Event
	// firstApplied is when each command (cart + id) was first applied.
	firstApplied map[string]time.Time
	// firstOutcome is when each command had its first event, whatever
	// its outcome.
	firstOutcome map[string]time.Time
}

func recordEvents(t *testing.T, nc *nats.Conn, subject string) *eventLog {
	t.Helper()
	l := &eventLog{firstApplied: map[string]time.Time{}, firstOutcome: map[string]time.Time{}}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		var ev command.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			ev = command.Event{CommandID: "undecodable: " + string(m.Data)}
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		l.events = append(l.events, ev)
		k := ev.CartID + "/" + ev.CommandID
		if _, ok := l.firstOutcome[k]; !ok {
			l.firstOutcome[k] = time.Now()
		}
		if ev.Outcome == command.OutcomeApplied {
			if _, ok := l.firstApplied[k]; !ok {
				l.firstApplied[k] = time.Now()
			}
		}
	})
	require.NoError(t, err)
	require.NoError(t, sub.SetPendingLimits(-1, -1))
	require.NoError(t, nc.Flush())
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

// outcomeAt returns when the first event of a command was seen.
func (l *eventLog) outcomeAt(cartID, commandID string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.firstOutcome[cartID+"/"+commandID]
	return at, ok
}

// all returns a copy of the events seen so far.
func (l *eventLog) all() []command.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]command.Event(nil), l.events...)
}

// appliedCount is how many distinct commands were applied so far.
func (l *eventLog) appliedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.firstApplied)
}

// of returns the events of one command on one cart.
func (l *eventLog) of(cartID, commandID string) []command.Event {
	var out []command.Event
	for _, ev := range l.all() {
		if ev.CartID == cartID && ev.CommandID == commandID {
			out = append(out, ev)
		}
	}
	return out
}

// waitFor waits for the first event of a command that matches pred.
func (l *eventLog) waitFor(ctx context.Context, t *testing.T, cartID, commandID string, pred func(command.Event) bool) command.Event {
	t.Helper()
	var found command.Event
	poll(ctx, t, 30*time.Second, "event of "+commandID, func() error {
		evs := l.of(cartID, commandID)
		for _, ev := range evs {
			if pred(ev) {
				found = ev
				return nil
			}
		}
		return fmt.Errorf("events so far: %+v", evs)
	})
	return found
}

// waitApplied waits until every command in ids (cart → ids) has an applied
// event.
func (l *eventLog) waitApplied(ctx context.Context, t *testing.T, timeout time.Duration, want map[string][]string) {
	t.Helper()
	total := 0
	for _, ids := range want {
		total += len(ids)
	}
	poll(ctx, t, timeout, fmt.Sprintf("%d applied events", total), func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		missing := 0
		example := ""
		for cart, ids := range want {
			for _, id := range ids {
				if _, ok := l.firstApplied[cart+"/"+id]; !ok {
					missing++
					example = cart + "/" + id
				}
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d commands not applied yet (e.g. %s)", missing, total, example)
		}
		return nil
	})
}
