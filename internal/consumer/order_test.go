package consumer_test

// The tests in this file hold a cart's stream order through the ways a
// partition changes hands badly: an instance that crashes holding queued
// commands, one whose lease renewals stop reaching NATS, one that writes
// after it lost its partition, a NATS restart, and a step (an outcome
// event, a dead letter) that cannot be published at first. Where timing
// decides, the situation is arranged with hooks: an applier or a store that
// blocks until the test releases it, a TCP tap between an instance and NATS
// that sees and drops chosen publishes, a publisher that fails on purpose.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/consumer"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/internal/testkit"
)

// labelFenced is consumer.LabelFenced, spelt out so that this file also
// builds against versions without it.
const labelFenced = "fenced"

// fencedMessage is part of cartcache.ErrFenced's message: the store's
// refusal of a write at an older epoch.
const fencedMessage = "cart fenced"

// leaseWrites is the subject prefix of every write to the partitions'
// leases bucket: a create, a renewal or a delete of a lease.
var leaseWrites = "$KV." + command.LeasesBucket + "."

// pullRequests is the subject prefix of JetStream pull requests.
const pullRequests = "$JS.API.CONSUMER.MSG.NEXT."

// A doomed instance holds a cart's I03 in its apply (the store hangs) and
// I04..I08 queued behind it, each taken at its own time (one every 350 ms)
// and kept alive by its own heartbeats. Then the instance dies. JetStream
// redelivers what a dead instance held when each command's AckWait runs out,
// counted from its last heartbeat: in heartbeat order, not stream order.
// The survivor must apply I00..I08 in stream order all the same.
//
// The doomed instance talks to NATS through a tap that records when each
// heartbeat passed. The instance is killed at a moment when a later command's
// last heartbeat is clearly older than an earlier one's: the tap then drops
// everything it sends, and its connection is closed, with no ack and no Nak.
// A survivor that took redeliveries as they expired would apply the later
// command first.
func TestOrderCrashWithQueuedCommandsResumesInStreamOrder(t *testing.T) {
	e := newEnv(t)
	tap := startNATSTap(t, e.srv)
	beats := newBeatLog()
	tap.setFilter(beats.filter)

	var stuck atomic.Bool
	app := newApplier(e.svc, func(ctx context.Context, cmd command.Command) error {
		if cmd.ID == "q1-I03" {
			stuck.Store(true)
			<-ctx.Done() // the store hangs, until the instance is gone
			return ctx.Err()
		}
		return nil
	})
	doomed := e.launch(t, tap.connect(t, "doomed"), nil, nil,
		consumer.Config{AckWait: consumer.MinAckWait, ShutdownTimeout: 500 * time.Millisecond}, app)

	e.publishCmd(t, cacheCmd("q1", ""))
	e.events.waitApplied(t, "cache-q1")
	want := e.scan(t, []string{"q1"}, 3, "I") // I00..I02
	e.events.waitApplied(t, idsOf(want)...)

	codes := slices.Clone(want["q1"])
	var seqs []uint64 // stream sequences of I03..I08
	for i := 3; i <= 8; i++ {
		if i > 3 {
			time.Sleep(350 * time.Millisecond) // each taken at its own time
		}
		code := fmt.Sprintf("I%02d", i)
		codes = append(codes, code)
		ack := e.publishCmd(t, addCmd("q1-"+code, "q1", item(code, 1, "10", "01")))
		seqs = append(seqs, ack.Sequence)
		if i == 3 {
			eventually(t, stuck.Load, waitFor, tick, "the doomed instance took q1-I03")
		}
	}
	eventually(t, func() bool {
		info := e.consumerInfo(t)
		return info.NumPending == 0 && info.NumAckPending == len(seqs)
	}, waitFor, tick, "the doomed instance holds I03..I08")

	// Crash once the heartbeats are out of stream order.
	var schedule string
	eventually(t, func() bool {
		var ok bool
		schedule, ok = beats.freezeIfInverted(seqs, 150*time.Millisecond)
		return ok
	}, waitFor, tick, "the heartbeats never fell out of stream order: %s", beats)
	doomed.nc.Close()
	t.Logf("crashed with the last heartbeats (ms before the crash, I03..I08): %s", schedule)

	e.startWorker(t, consumer.Config{AckWait: consumer.MinAckWait}, nil)
	var ids []string
	for _, code := range codes[3:] {
		ids = append(ids, "q1-"+code)
	}
	e.events.waitApplied(t, ids...)
	require.Equal(t, codes, e.lineCodes(t, "q1"), "the survivor applies the crashed instance's commands in stream order")
	e.waitSettled(t)
}

// An instance whose lease renewals stop reaching NATS, while everything
// else it sends still does, must stop applying and settling the commands it
// holds once its lease may have lapsed: another instance takes the
// partition then.
//
// Mechanism: the stale instance A talks to NATS through a tap. While A
// holds I03 in its apply (the store call hangs) and I04..I08 queued behind
// it, the tap starts dropping A's writes to the leases bucket, and only
// those: A's renewals never arrive, its heartbeats, acks and pulls do. Once
// A's lease is gone from the bucket (it expired: A's local fence has
// passed), the hung store call fails. A must neither try I03 again nor
// apply I04..I08 (its store sees nothing more), and settle none of them;
// B, which holds the partition now, applies I03..I09 in stream order, each
// exactly once.
func TestOrderStaleHolderStopsAtItsFence(t *testing.T) {
	e := newEnv(t)
	tap := startNATSTap(t, e.srv)
	store := &storeLog{next: e.svc}
	release := make(chan struct{})
	var stuck atomic.Bool
	app := newApplier(store, func(ctx context.Context, cmd command.Command) error {
		if cmd.ID == "f1-I03" && stuck.CompareAndSwap(false, true) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return errors.New("test: the state store call timed out")
		}
		return nil
	})
	obsA := newObserver()
	e.launch(t, tap.connect(t, "stale"), nil, nil, consumer.Config{
		Partitions: 1, AckWait: consumer.MinAckWait, ShutdownTimeout: time.Second, Observer: obsA,
	}, app)
	e.waitLeases(t, 1)
	staleID := e.leaseHolder(t, 0)
	e.startWorker(t, consumer.Config{Partitions: 1, AckWait: consumer.MinAckWait}, nil)

	e.publishCmd(t, cacheCmd("f1", ""))
	want := e.scan(t, []string{"f1"}, 3, "I") // I00..I02
	e.events.waitApplied(t, append(idsOf(want), "cache-f1")...)
	codes := slices.Clone(want["f1"])
	for i := 3; i <= 8; i++ {
		code := fmt.Sprintf("I%02d", i)
		codes = append(codes, code)
		e.publishCmd(t, addCmd("f1-"+code, "f1", item(code, 1, "10", "01")))
		if i == 3 {
			eventually(t, stuck.Load, waitFor, tick, "A took f1-I03")
		}
	}
	eventually(t, func() bool {
		info := e.consumerInfo(t)
		return info.NumPending == 0 && info.NumAckPending == 6
	}, waitFor, tick, "A holds I03..I08")

	tap.setFilter(dropPrefixes(leaseWrites))
	eventually(t, func() bool {
		holder, ok := e.tryLeaseHolder(0)
		return ok && holder != staleID
	}, waitFor, tick, "A's lease never lapsed")

	before := store.count()
	settledBefore := settledAddItems(obsA)
	close(release)
	eventually(t, func() bool { return obsA.count("", labelFenced) >= 6 || store.count() > before },
		waitFor, tick, "A never dropped what it held; A's observer: %s", obsA)
	require.Empty(t, store.since(before), "A applied commands after its lease lapsed")
	require.Equal(t, 6, obsA.count(string(command.TypeAddItem), labelFenced), "A dropped I03..I08 unsettled; observer: %s", obsA)

	codes = append(codes, "I09")
	e.publishCmd(t, addCmd("f1-I09", "f1", item("I09", 1, "10", "01")))
	var ids []string
	for _, code := range codes[3:] {
		ids = append(ids, "f1-"+code)
	}
	e.events.waitApplied(t, ids...)
	require.Equal(t, codes, e.lineCodes(t, "f1"), "the new holder applies everything in stream order")
	require.Empty(t, store.since(before), "A wrote nothing after the takeover")
	require.Equal(t, settledBefore, settledAddItems(obsA), "A settled nothing after the takeover; observer: %s", obsA)
	tap.setFilter(nil)
	e.waitSettled(t)
}

// A stale writer is refused by the store itself. Instance A reads cart w1
// for I03 and blocks just before its save (the store holds the Save). A
// then stalls as far as NATS can tell: a tap drops its lease renewals and
// its pull requests, while its heartbeats still keep I03 its own. Its lease
// expires and B takes the partition, applying I03 (from the partition's ack
// floor) and the later I04 and I05. Then A's save goes through: it must be
// refused, by the store, for B's newer epoch, so that the cart's lines stay
// in stream order and A settles nothing.
func TestOrderStaleWriterIsFencedByTheStore(t *testing.T) {
	e := newEnv(t)
	tap := startNATSTap(t, e.srv)
	blocked := newBlockingStore(e.store, "w1")
	store := &storeLog{next: cartcache.New(blocked, cartcache.Config{})}
	obsA := newObserver()
	e.launch(t, tap.connect(t, "stale"), nil, nil, consumer.Config{
		Partitions: 1, AckWait: consumer.MinAckWait, ShutdownTimeout: time.Second, Observer: obsA,
	}, store)
	e.waitLeases(t, 1)
	staleID := e.leaseHolder(t, 0)
	e.startWorker(t, consumer.Config{Partitions: 1, AckWait: consumer.MinAckWait}, nil)

	e.publishCmd(t, cacheCmd("w1", ""))
	want := e.scan(t, []string{"w1"}, 3, "I") // I00..I02
	e.events.waitApplied(t, append(idsOf(want), "cache-w1")...)
	codes := slices.Clone(want["w1"])

	blocked.arm()
	codes = append(codes, "I03")
	e.publishCmd(t, addCmd("w1-I03", "w1", item("I03", 1, "10", "01")))
	waitClosed(t, blocked.entered, "A's save of w1 to block")

	tap.setFilter(dropPrefixes(leaseWrites, pullRequests))
	eventually(t, func() bool {
		holder, ok := e.tryLeaseHolder(0)
		return ok && holder != "" && holder != staleID
	}, waitFor, tick, "B never took the partition")
	for _, code := range []string{"I04", "I05"} {
		codes = append(codes, code)
		e.publishCmd(t, addCmd("w1-"+code, "w1", item(code, 1, "10", "01")))
	}
	e.events.waitApplied(t, "w1-I04", "w1-I05")

	blocked.unblock()
	var res storeCall
	eventually(t, func() bool {
		var ok bool
		res, ok = store.find("w1-I03")
		return ok
	}, waitFor, tick, "A's apply of I03 never returned")
	eventually(t, func() bool { return len(e.events.forCommand("w1-I03")) > 0 }, waitFor, tick, "no event for w1-I03")
	require.Equal(t, codes, e.lineCodes(t, "w1"), "the stale write kept out of the cart")
	require.Error(t, res.err, "A's write of I03 must be refused")
	require.Contains(t, res.err.Error(), fencedMessage, "the store refused A's write for a newer epoch")
	require.Equal(t, []error{statepool.ErrETagMismatch}, blocked.results(),
		"A's held save met B's writes, and A wrote nothing after it")
	eventually(t, func() bool { return obsA.count(string(command.TypeAddItem), labelFenced) == 1 },
		waitFor, tick, "A dropped I03 unsettled; observer: %s", obsA)
	e.events.waitApplied(t, "w1-I03", "w1-I04", "w1-I05")
	tap.setFilter(nil)
	e.waitSettled(t)
}

// The coordination buckets survive a NATS restart: after it, an instance
// that stops hands its partitions to the other, which owns every partition
// within 10 s and applies their commands.
func TestOrderCoordinationSurvivesNATSRestart(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	opts := func(o *server.Options) {
		o.ServerName = "cartworker-restart"
		o.Port = port
		o.StoreDir = dir
	}
	e := newEnvOn(t, testkit.StartJetStream(t, opts))
	const partitions = 4
	cfg := consumer.Config{Partitions: partitions, AckWait: consumer.MinAckWait}
	leaving := e.startWorker(t, cfg, nil)
	staying := e.startWorker(t, cfg, nil)
	e.waitLeases(t, 2)

	// A cart in every partition.
	var carts []string
	covered := map[int]bool{}
	for i := 0; i < 64 && len(covered) < partitions; i++ {
		c := fmt.Sprintf("r%02d", i)
		ack := e.publishCmd(t, cacheCmd(c, ""))
		p := e.partitionOf(t, ack.Sequence)
		if !covered[p] {
			covered[p] = true
			carts = append(carts, c)
		}
	}
	require.Len(t, covered, partitions, "a cart in every partition")
	e.waitSettled(t)

	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	e.srv = testkit.StartJetStream(t, opts)
	eventually(t, func() bool {
		return e.nc.IsConnected() && leaving.nc.IsConnected() && staying.nc.IsConnected()
	}, waitFor, tick, "the connections never came back")
	eventually(t, func() bool { return leaving.w.Ready() == nil && staying.w.Ready() == nil },
		waitFor, tick, "both instances ready after the restart")

	err, ok := leaving.stop(waitFor)
	require.True(t, ok, "the leaving instance stops")
	require.NoError(t, err)
	stopped := time.Now()
	within := stopped.Add(10 * time.Second)

	// A command in every partition is applied within 10 s of the stop, and
	// the remaining instance holds every lease.
	var ids []string
	for _, c := range carts {
		ids = append(ids, c+"-A")
		e.publishCmd(t, addCmd(c+"-A", c, item("A", 1, "10", "01")))
	}
	leases := lazy(func() string {
		holders, err := e.leaseHolders(partitions)
		if err != nil {
			return err.Error()
		}
		return fmt.Sprint(holders)
	})
	eventually(t, func() bool {
		for _, id := range ids {
			if len(e.events.forCommand(id)) == 0 {
				return false
			}
		}
		return true
	}, time.Until(within), tick, "a command in every partition applied within 10s of the other instance's stop; leases: %s", leases)
	eventually(t, func() bool {
		holders, err := e.leaseHolders(partitions)
		if err != nil {
			return false
		}
		for p := range partitions {
			if holders[p] == "" || holders[p] != holders[0] {
				return false
			}
		}
		return true
	}, time.Until(within), tick, "one instance owns every partition within 10s of the other's stop; leases: %s", leases)
	t.Logf("every partition owned and serving %s after the other instance's stop", time.Since(stopped).Round(time.Millisecond))
	e.events.waitApplied(t, ids...)
	e.waitSettled(t)
	// The restarted server's cleanup runs before the workers': stop the
	// remaining one while NATS is still up, so that its fetches end.
	err, ok = staying.stop(waitFor)
	require.True(t, ok, "the remaining instance stops")
	require.NoError(t, err)
}

// A step after the apply that cannot be done yet (publishing the outcome
// event, storing the dead letter) is retried in its cart's place: the
// cart's later commands wait, and the command keeps the outcome it had.
func TestOrderFailedEventPublishKeepsTheCartsPlace(t *testing.T) {
	t.Run("outcome event", func(t *testing.T) {
		e := newEnv(t)
		cfg := consumer.Config{AckWait: consumer.MinAckWait}
		e.setupStreams(t, cfg)
		// X on a cart that does not exist yet (refused: cart_not_found),
		// then the cache creating it, then Y: all stored before the
		// worker starts, so that it takes them together.
		x := addCmd("n1-X", "n1", item("X", 1, "10", "01"))
		y := addCmd("n1-Y", "n1", item("Y", 1, "10", "01"))
		e.publishCmd(t, x)
		e.publishCmd(t, cacheCmd("n1", ""))
		e.publishCmd(t, y)

		nc := e.connect(t, "worker")
		pub := &flakyPublisher{nc: nc, cmdID: x.ID, outcome: command.OutcomeRejected, failures: 3}
		e.launch(t, nc, nil, pub, cfg, nil)

		e.events.waitApplied(t, "cache-n1", y.ID)
		eventually(t, func() bool { return len(e.events.forCommand(x.ID)) > 0 }, waitFor, tick, "no event for %s", x.ID)
		e.waitSettled(t)
		require.Equal(t, []string{"Y"}, e.lineCodes(t, "n1"), "X stays refused; Y applies after the cache")
		evs := e.events.forCommand(x.ID)
		require.Len(t, evs, 1, "exactly one outcome for X: %+v", evs)
		require.Equal(t, command.OutcomeRejected, evs[0].Outcome, "%+v", evs[0])
		require.NotNil(t, evs[0].Error)
		require.Equal(t, command.CodeCartNotFound, evs[0].Error.Code)
		require.False(t, evs[0].Duplicate)
		require.Equal(t, 3, pub.failed(), "the rejected event failed to publish three times")
		require.Empty(t, e.deadLetters(t))
	})

	t.Run("dead letter", func(t *testing.T) {
		e := newEnv(t)
		cfg := consumer.Config{AckWait: consumer.MinAckWait}
		e.setupStreams(t, cfg)
		// A body that can never be applied, on cart n2, then the cache
		// creating the cart and Y.
		e.publish(t, subjects.Command("n2", command.TypeAddItem), []byte(`{"id":"n2-bad",`), "n2-bad")
		e.publishCmd(t, cacheCmd("n2", ""))
		y := addCmd("n2-Y", "n2", item("Y", 1, "10", "01"))
		e.publishCmd(t, y)

		nc := e.connect(t, "worker")
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		dlq := &dlqBlockedJS{JetStream: js}
		dlq.blocked.Store(true)
		app := newApplier(e.svc, nil)
		e.launch(t, nc, dlq, nil, cfg, app)

		// CART_DLQ refuses the dead letter twice (it is being
		// re-created, say): the cart's later commands wait meanwhile.
		eventually(t, func() bool { return dlq.failures.Load() >= 2 }, waitFor, tick, "the dead letter was not tried again")
		require.Empty(t, e.events.forCart("n2"), "nothing of cart n2 settled before its dead letter was stored")
		_, _, calls := app.stats()
		require.Empty(t, calls, "nothing of cart n2 applied before its dead letter was stored")

		dlq.blocked.Store(false)
		e.events.waitApplied(t, "cache-n2", y.ID)
		e.waitSettled(t)
		require.Equal(t, []string{"Y"}, e.lineCodes(t, "n2"))
		dls := e.deadLetters(t)
		require.Len(t, dls, 1)
		require.Equal(t, command.CodeMalformedJSON, dls[0].Header.Get(command.HeaderDLQCode))
		evs := e.events.forCommand("n2-bad")
		require.Len(t, evs, 1, "%+v", evs)
		require.Equal(t, command.OutcomeRejected, evs[0].Outcome)
	})
}

// Helpers of this file.

// settledAddItems counts the add-items an observer saw settled: applied,
// duplicates or rejected.
func settledAddItems(o *recObserver) int {
	n := 0
	for _, l := range []string{consumer.LabelApplied, consumer.LabelDuplicate, consumer.LabelRejected} {
		n += o.count(string(command.TypeAddItem), l)
	}
	return n
}

// lazy is a message argument computed when a failure is reported.
type lazy func() string

func (f lazy) String() string { return f() }

// launch runs a worker on nc as startWorker does; nil js, pub or app mean
// nc's JetStream, nc itself and the real cartcache service.
func (e *env) launch(t *testing.T, nc *nats.Conn, js jetstream.JetStream, pub consumer.Publisher,
	cfg consumer.Config, app consumer.Applier) *running {
	t.Helper()
	var err error
	if js == nil {
		js, err = jetstream.New(nc)
		require.NoError(t, err)
	}
	if pub == nil {
		pub = nc
	}
	if app == nil {
		app = e.svc
	}
	w, err := consumer.New(js, pub, app, e.config(cfg))
	require.NoError(t, err)
	return runWorker(t, w, nc)
}

// setupStreams creates the streams and consumers, so that commands can be
// stored before any worker runs.
func (e *env) setupStreams(t *testing.T, cfg consumer.Config) {
	t.Helper()
	w, err := consumer.New(e.js, e.nc, e.svc, e.config(cfg))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = w.Setup(ctx)
	require.NoError(t, err)
}

// newEnvOn is newEnv on a server the test started.
func newEnvOn(t *testing.T, srv *server.Server) *env {
	t.Helper()
	e := &env{srv: srv, log: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))}
	e.fake = daprfake.New()
	t.Cleanup(e.fake.Close)
	var err error
	e.client, err = statepool.New(statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: e.fake.URL()})
	require.NoError(t, err)
	t.Cleanup(e.client.Close)
	e.store, err = breaker.New(e.client, breaker.Settings{})
	require.NoError(t, err)
	e.svc = cartcache.New(e.store, cartcache.Config{})
	e.nc = e.connect(t, "test")
	e.js, err = jetstream.New(e.nc)
	require.NoError(t, err)
	e.events = newEventLog(t, e.nc)
	return e
}

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// partitionOf returns the partition the command stored at seq went to.
func (e *env) partitionOf(t *testing.T, seq uint64) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := e.stream(t, command.StreamCommands).GetMsg(ctx, seq)
	require.NoError(t, err)
	p, ok := subjects.PartitionOf(m.Subject)
	require.True(t, ok, "stored subject %s names no partition", m.Subject)
	return p
}

// tryLeaseHolder returns the instance holding partition p's lease, "" when
// no lease is stored; ok is false when the bucket cannot be read.
func (e *env) tryLeaseHolder(p int) (holder string, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, command.LeasesBucket)
	if err != nil {
		return "", false
	}
	en, err := kv.Get(ctx, "p"+strconv.Itoa(p))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return "", true
	case err != nil:
		return "", false
	}
	return string(en.Value()), true
}

// leaseHolder returns the instance holding partition p's lease.
func (e *env) leaseHolder(t *testing.T, p int) string {
	t.Helper()
	holder, ok := e.tryLeaseHolder(p)
	require.True(t, ok)
	require.NotEmpty(t, holder, "partition %d has no lease", p)
	return holder
}

// leaseHolders returns the holder of each of the first n partitions ("" for
// none), or why the leases bucket cannot be read.
func (e *env) leaseHolders(n int) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, command.LeasesBucket)
	if err != nil {
		return nil, fmt.Errorf("leases bucket: %w", err)
	}
	out := make([]string, n)
	for p := range n {
		en, err := kv.Get(ctx, "p"+strconv.Itoa(p))
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return nil, fmt.Errorf("lease of partition %d: %w", p, err)
		default:
			out[p] = string(en.Value())
		}
	}
	return out, nil
}

// storeCall is a command that reached the store through a storeLog, with
// its cart's error.
type storeCall struct {
	id  string
	err error
}

// storeLog is an Applier in front of the store that records every command
// that reached it, with its cart's result.
type storeLog struct {
	next  consumer.Applier
	mu    sync.Mutex
	calls []storeCall
}

func (s *storeLog) ApplyCarts(ctx context.Context, batches []cartcache.CartBatch) []cartcache.CartResult {
	res := s.next.ApplyCarts(ctx, batches)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, b := range batches {
		for _, cmd := range b.Cmds {
			s.calls = append(s.calls, storeCall{id: cmd.ID, err: res[i].Err})
		}
	}
	return res
}

func (s *storeLog) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// since returns the ids of the commands recorded after the first n.
func (s *storeLog) since(n int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, c := range s.calls[n:] {
		ids = append(ids, c.id)
	}
	return ids
}

// find returns the first record of command id.
func (s *storeLog) find(id string) (storeCall, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.calls {
		if c.id == id {
			return c, true
		}
	}
	return storeCall{}, false
}

// blockingStore is a cartcache.Store that, once armed, holds the next Save
// of one key until unblock, then records what every later Save of that key
// returns.
type blockingStore struct {
	cartcache.Store
	key     string
	armed   atomic.Bool
	entered chan struct{} // closed when the Save is held
	release chan struct{}
	held    atomic.Bool // a Save was held and released: record from then on

	mu    sync.Mutex
	saves []error
}

func newBlockingStore(s cartcache.Store, key string) *blockingStore {
	return &blockingStore{Store: s, key: key, entered: make(chan struct{}), release: make(chan struct{})}
}

func (s *blockingStore) arm()     { s.armed.Store(true) }
func (s *blockingStore) unblock() { close(s.release) }

func (s *blockingStore) Save(ctx context.Context, key string, value []byte, opts statepool.SaveOptions) error {
	if key != s.key {
		return s.Store.Save(ctx, key, value, opts)
	}
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
		s.held.Store(true)
	}
	err := s.Store.Save(ctx, key, value, opts)
	if s.held.Load() {
		s.mu.Lock()
		s.saves = append(s.saves, err)
		s.mu.Unlock()
	}
	return err
}

// results returns what the Saves of the key returned from the held one on.
func (s *blockingStore) results() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]error, len(s.saves))
	for i, err := range s.saves {
		if errors.Is(err, statepool.ErrETagMismatch) {
			err = statepool.ErrETagMismatch
		}
		out[i] = err
	}
	return out
}

// flakyPublisher publishes events on nc, but fails the event with outcome
// of command cmdID its first failures times.
type flakyPublisher struct {
	nc      *nats.Conn
	cmdID   string
	outcome command.Outcome

	mu       sync.Mutex
	failures int
	n        int
}

func (p *flakyPublisher) PublishMsg(m *nats.Msg) error {
	var ev command.Event
	if json.Unmarshal(m.Data, &ev) == nil && ev.CommandID == p.cmdID && ev.Outcome == p.outcome {
		p.mu.Lock()
		fail := p.n < p.failures
		if fail {
			p.n++
		}
		p.mu.Unlock()
		if fail {
			return errors.New("test: event not published")
		}
	}
	return p.nc.PublishMsg(m)
}

func (p *flakyPublisher) failed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// dlqBlockedJS is a JetStream whose publishes to the dead-letter subjects
// fail while blocked.
type dlqBlockedJS struct {
	jetstream.JetStream
	blocked  atomic.Bool
	failures atomic.Int32
}

func (j *dlqBlockedJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if j.blocked.Load() && strings.HasPrefix(m.Subject, strings.TrimSuffix(subjects.DeadLetters(), ">")) {
		j.failures.Add(1)
		return nil, errors.New("test: CART_DLQ unavailable")
	}
	return j.JetStream.PublishMsg(ctx, m, opts...)
}

// beatLog records when each heartbeat (an InProgress ack) of a stream
// sequence passed a tap, and, once frozen, drops everything.
type beatLog struct {
	mu     sync.Mutex
	last   map[uint64]time.Time
	frozen bool
}

func newBeatLog() *beatLog { return &beatLog{last: map[uint64]time.Time{}} }

// filter is the tap's filter.
func (b *beatLog) filter(subject string, payload []byte) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.frozen {
		return true
	}
	if string(payload) == "+WPI" {
		if seq, ok := ackStreamSeq(subject); ok {
			b.last[seq] = time.Now()
		}
	}
	return false
}

// freezeIfInverted freezes the log, so that nothing more passes, if every
// one of seqs has had a heartbeat and a later one's last is older than an
// earlier one's by more than gap. It returns the last heartbeats, in ms
// before now.
func (b *beatLog) freezeIfInverted(seqs []uint64, gap time.Duration) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	var ages []string
	for _, s := range seqs {
		at, ok := b.last[s]
		if !ok {
			return "", false
		}
		ages = append(ages, strconv.FormatInt(now.Sub(at).Milliseconds(), 10))
	}
	for i := range seqs {
		for j := i + 1; j < len(seqs); j++ {
			if b.last[seqs[j]].Add(gap).Before(b.last[seqs[i]]) {
				b.frozen = true
				return strings.Join(ages, " "), true
			}
		}
	}
	return "", false
}

func (b *beatLog) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return fmt.Sprint(b.last)
}

// ackStreamSeq returns the stream sequence of a JetStream ack subject,
// $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>, or
// its longer form with a domain and an account hash.
func ackStreamSeq(subject string) (uint64, bool) {
	tok := strings.Split(subject, ".")
	if len(tok) < 9 || tok[0] != "$JS" || tok[1] != "ACK" {
		return 0, false
	}
	i := 5
	if len(tok) >= 11 {
		i = 7
	}
	seq, err := strconv.ParseUint(tok[i], 10, 64)
	return seq, err == nil
}

// dropPrefixes returns a tap filter that drops the publishes to subjects
// with any of the prefixes.
func dropPrefixes(prefixes ...string) func(string, []byte) bool {
	return func(subject string, _ []byte) bool {
		for _, p := range prefixes {
			if strings.HasPrefix(subject, p) {
				return true
			}
		}
		return false
	}
}

// natsTap is a TCP proxy between clients and a NATS server that reads the
// client protocol and passes each publish (PUB, HPUB) through its filter,
// which may drop it. Everything else, and everything from the server, is
// forwarded as is. Its goroutines end at cleanup.
type natsTap struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu     sync.Mutex
	filter func(subject string, payload []byte) bool
	// reroute, when set, may send a publish to another subject instead.
	reroute func(subject string) (string, bool)
	conns   map[net.Conn]struct{}
	closed  bool
}

func startNATSTap(t *testing.T, srv *server.Server) *natsTap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &natsTap{target: strings.TrimPrefix(srv.ClientURL(), "nats://"), ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// connect opens a client connection through the tap, closed on cleanup.
func (p *natsTap) connect(t *testing.T, name string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect("nats://"+p.ln.Addr().String(), nats.Name(name), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// setFilter sets the filter of publishes: true drops one. nil passes all.
func (p *natsTap) setFilter(f func(subject string, payload []byte) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.filter = f
}

// setReroute sets the rerouting of publishes: one for which f reports true
// goes to the subject it returns instead. nil reroutes none.
func (p *natsTap) setReroute(f func(subject string) (string, bool)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reroute = f
}

// rerouted returns the subject a publish to subject goes to.
func (p *natsTap) rerouted(subject []byte) []byte {
	p.mu.Lock()
	f := p.reroute
	p.mu.Unlock()
	if f == nil {
		return subject
	}
	if to, ok := f(string(subject)); ok {
		return []byte(to)
	}
	return subject
}

func (p *natsTap) drop(subject string, payload []byte) bool {
	p.mu.Lock()
	f := p.filter
	p.mu.Unlock()
	return f != nil && f(subject, payload)
}

func (p *natsTap) close() {
	p.mu.Lock()
	p.closed = true
	_ = p.ln.Close()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *natsTap) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = in.Close()
			_ = out.Close()
			return
		}
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.fromClient(out, in) })
		p.wg.Go(func() { p.pipe(in, out) })
	}
}

// fromClient forwards the client protocol from src to dst, dropping the
// publishes the filter refuses.
func (p *natsTap) fromClient(dst, src net.Conn) {
	defer p.hangUp(dst, src)
	r := bufio.NewReaderSize(src, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		f := bytes.Fields(line)
		if len(f) >= 3 && (bytes.EqualFold(f[0], []byte("PUB")) || bytes.EqualFold(f[0], []byte("HPUB"))) {
			n, err := strconv.Atoi(string(f[len(f)-1]))
			if err != nil || n < 0 {
				return
			}
			body := make([]byte, n+2) // the payload and its CRLF
			if _, err := io.ReadFull(r, body); err != nil {
				return
			}
			if p.drop(string(f[1]), body[:n]) {
				continue
			}
			if to := p.rerouted(f[1]); !bytes.Equal(to, f[1]) {
				f[1] = to
				line = append(bytes.Join(f, []byte(" ")), '\r', '\n')
			}
			line = append(line, body...)
		}
		if _, err := dst.Write(line); err != nil {
			return
		}
	}
}

// pipe copies from the server to the client.
func (p *natsTap) pipe(dst, src net.Conn) {
	defer p.hangUp(dst, src)
	_, _ = io.Copy(dst, src)
}

func (p *natsTap) hangUp(a, b net.Conn) {
	p.mu.Lock()
	delete(p.conns, a)
	delete(p.conns, b)
	p.mu.Unlock()
	_ = a.Close()
	_ = b.Close()
}

// An instance that holds a partition but cannot fetch from it (here a tap
// sends its pull requests where no consumer leader answers, as when the
// stream or its consumer has no leader) reports it: after one AckWait,
// Ready names the stream. It keeps its lease and its gate (a stream
// without a leader is no fault of this instance, and handing the
// partition away would only move the stall), and once fetching works
// again it is ready and applies what was published meanwhile.
func TestReadyNamesAStreamItCannotFetchFrom(t *testing.T) {
	e := newEnv(t)
	tap := startNATSTap(t, e.srv)
	r := e.launch(t, tap.connect(t, "stalled"), nil, nil, consumer.Config{Partitions: 1, AckWait: consumer.MinAckWait}, nil)
	e.waitLeases(t, 1)
	holder := e.leaseHolder(t, 0)
	eventually(t, func() bool { return r.w.Ready() == nil }, waitFor, tick, "ready at start")

	nowhere := pullRequests + command.StreamCommands + ".nobody-leads-this"
	tap.setReroute(func(subject string) (string, bool) {
		return nowhere, strings.HasPrefix(subject, pullRequests+command.StreamCommands+".")
	})
	stalled := time.Now()
	var notReady error
	eventually(t, func() bool { notReady = r.w.Ready(); return notReady != nil }, waitFor, tick,
		"never reported the stream it cannot fetch from")
	require.GreaterOrEqual(t, time.Since(stalled), consumer.MinAckWait, "reported before one AckWait of failed fetches")
	require.ErrorContains(t, notReady, "stream "+command.StreamCommands+": cannot fetch")
	require.Equal(t, holder, e.leaseHolder(t, 0), "the instance keeps its partition while it cannot fetch")
	e.publishCmd(t, cacheCmd("s1", ""))

	tap.setReroute(nil)
	e.events.waitApplied(t, "cache-s1")
	eventually(t, func() bool { return r.w.Ready() == nil }, waitFor, tick, "ready again once fetching works")
	require.Equal(t, holder, e.leaseHolder(t, 0))
	e.waitSettled(t)
}
