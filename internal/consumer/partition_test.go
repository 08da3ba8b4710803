package consumer_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/consumer"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/internal/testkit"
)

// The tests in this file hold the rule that a cart's commands apply in
// stream order on any number of instances, through a crash and a
// migration from an unpartitioned stream.

// scan publishes n add-items to each cart, each publish acknowledged before
// the next, and returns the item codes per cart in stream order.
func (e *env) scan(t *testing.T, carts []string, n int, prefix string) map[string][]string {
	t.Helper()
	want := map[string][]string{}
	for i := range n {
		for _, c := range carts {
			code := fmt.Sprintf("%s%02d", prefix, i)
			want[c] = append(want[c], code)
			e.publishCmd(t, addCmd(c+"-"+code, c, item(code, 1, "10", "01")))
		}
	}
	return want
}

func idsOf(want map[string][]string) []string {
	var ids []string
	for c, codes := range want {
		for _, code := range codes {
			ids = append(ids, c+"-"+code)
		}
	}
	return ids
}

// jitter delays each command a little, differently on every call, so that
// instances racing for one cart would apply its commands out of order.
func jitter(ctx context.Context, _ command.Command) error {
	return sleep(ctx, time.Duration(rand.IntN(3000))*time.Microsecond)
}

func TestCartOrderAcrossInstances(t *testing.T) {
	e := newEnv(t)
	var apps []*recApplier
	for range 3 {
		app := newApplier(e.svc, jitter)
		apps = append(apps, app)
		e.startWorker(t, consumer.Config{Concurrency: 4}, app)
	}
	// Four partitions over three instances: shares of two, two and none.
	e.waitLeases(t, 2)
	carts := []string{"o1", "o2", "o3", "o4", "o5", "o6", "o7", "o8"}
	for _, c := range carts {
		e.publishCmd(t, cacheCmd(c, ""))
	}
	want := e.scan(t, carts, 15, "I")
	e.events.waitApplied(t, idsOf(want)...)
	for _, c := range carts {
		require.Equal(t, want[c], e.lineCodes(t, c), "cart %s lines in stream order", c)
	}
	busy := 0
	for _, app := range apps {
		if _, _, calls := app.stats(); len(calls) > 0 {
			busy++
		}
	}
	require.Greater(t, busy, 1, "the work was shared")
	e.waitSettled(t)
	require.Zero(t, e.consumerInfo(t).NumRedelivered)
}

// A crashed instance's command is redelivered after AckWait to another, and
// the cart's later commands wait for it rather than overtake it.
func TestCrashedInstancesCartsResumeInOrder(t *testing.T) {
	e := newEnv(t)
	var stuck atomic.Bool
	crashing := newApplier(e.svc, func(ctx context.Context, cmd command.Command) error {
		if cmd.ID == "k1-I03" {
			stuck.Store(true)
			<-ctx.Done() // hangs as a crashed process would, until cleanup
			return ctx.Err()
		}
		return nil
	})
	doomed := e.startWorker(t, consumer.Config{AckWait: 2 * time.Second}, crashing)
	e.publishCmd(t, cacheCmd("k1", ""))
	e.events.waitApplied(t, "cache-k1")

	want := e.scan(t, []string{"k1"}, 3, "I") // I00..I02
	e.events.waitApplied(t, idsOf(want)...)
	e.publishCmd(t, addCmd("k1-I03", "k1", item("I03", 1, "10", "01")))
	eventually(t, func() bool { return stuck.Load() }, waitFor, tick, "the doomed worker took k1-I03")
	// The instance dies: its connection goes, with no ack and no Nak.
	doomed.nc.Close()

	survivor := e.startWorker(t, consumer.Config{AckWait: 2 * time.Second}, nil)
	_ = survivor
	crashedAt := time.Now()
	for i := 4; i < 10; i++ {
		code := fmt.Sprintf("I%02d", i)
		e.publishCmd(t, addCmd("k1-"+code, "k1", item(code, 1, "10", "01")))
	}
	var ids []string
	for i := 3; i < 10; i++ {
		ids = append(ids, fmt.Sprintf("k1-I%02d", i))
	}
	e.events.waitApplied(t, ids...)
	t.Logf("the crashed instance's cart resumed %s after the crash (AckWait 2s)", time.Since(crashedAt).Round(time.Millisecond))
	var codes []string
	for i := range 10 {
		codes = append(codes, fmt.Sprintf("I%02d", i))
	}
	require.Equal(t, codes, e.lineCodes(t, "k1"), "stream order through the crash")
	e.waitSettled(t)
}

// A stream made by an earlier version has no partitions: its backlog is
// applied first, by the strays consumer, then the partitioned commands.
func TestUnpartitionedStreamIsMigrated(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	_, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: command.StreamCommands, Subjects: []string{subjects.Commands()}, Duplicates: 2 * time.Minute,
	})
	require.NoError(t, err)
	_, err = e.js.CreateOrUpdateConsumer(ctx, command.StreamCommands, jetstream.ConsumerConfig{
		Durable: command.ConsumerName, FilterSubject: subjects.Commands(), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 30 * time.Second, MaxAckPending: 1024, MaxDeliver: -1,
	})
	require.NoError(t, err)
	carts := []string{"m1", "m2", "m3"}
	for _, c := range carts {
		e.publishCmd(t, cacheCmd(c, ""))
	}
	backlog := e.scan(t, carts, 8, "B")

	for range 2 {
		e.startWorker(t, consumer.Config{Concurrency: 4}, newApplier(e.svc, jitter))
	}
	fresh := e.scan(t, carts, 8, "N")
	e.events.waitApplied(t, append(idsOf(backlog), idsOf(fresh)...)...)
	for _, c := range carts {
		require.Equal(t, append(backlog[c], fresh[c]...), e.lineCodes(t, c), "cart %s: backlog first, in order", c)
	}
	sc := e.streamInfo(t, command.StreamCommands).Config
	require.NotNil(t, sc.SubjectTransform, "the stream was partitioned")
	strays, err := e.js.Consumer(ctx, command.StreamCommands, command.ConsumerName)
	require.NoError(t, err)
	require.Equal(t, 1, strays.CachedInfo().Config.MaxAckPending)
	e.waitSettled(t)
}

// An instance whose own sidecar refuses it (here: a wrong token) must not
// keep its partitions: only it pulls them, so a command it held would stall
// every cart of the partition. After handBackAfter it hands its commands
// back, uncounted, then its partitions, and the healthy instance applies
// them all, in order.
func TestSickInstanceHandsItsPartitionsBack(t *testing.T) {
	e := newEnv(t, withToken("right"))
	e.fake.SetToken("right")

	wrong := statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: e.fake.URL(), APIToken: "wrong"}
	sickClient, err := statepool.New(wrong)
	require.NoError(t, err)
	t.Cleanup(sickClient.Close)
	sickStore, err := breaker.New(sickClient, breaker.Settings{})
	require.NoError(t, err)
	sickApp := newApplier(cartcache.New(sickStore, cartcache.Config{}), nil)

	carts := []string{"h1", "h2", "h3", "h4", "h5", "h6"}
	healthyApp := newApplier(e.svc, nil)
	e.startWorker(t, consumer.Config{MaxDeliver: 1, Probe: e.probe}, healthyApp)
	for _, c := range carts {
		e.publishCmd(t, cacheCmd(c, ""))
	}
	e.events.waitApplied(t, "cache-h1", "cache-h2", "cache-h3", "cache-h4", "cache-h5", "cache-h6")

	// The sick instance joins; its first probe passes (the token is only
	// refused later, as after a rotation), so it pulls, then goes not
	// ready holding what it took.
	var refuse atomic.Bool
	sickProbe := func(ctx context.Context) error {
		if refuse.Load() {
			return sickClient.Check(ctx)
		}
		return nil
	}
	sick := e.startWorker(t, consumer.Config{MaxDeliver: 1, Probe: sickProbe}, sickApp)
	eventually(t, func() bool { return sick.w.Ready() == nil }, waitFor, tick, "the sick instance starts ready")
	e.waitLeases(t, 2)
	refuse.Store(true)
	start := time.Now()
	want := e.scan(t, carts, 10, "S")
	e.events.waitApplied(t, idsOf(want)...)
	_, _, sickCalls := sickApp.stats()
	require.NotEmpty(t, sickCalls, "the sick instance took commands")
	t.Logf("the sick instance took %d commands; all applied %s after the scan began",
		len(sickCalls), time.Since(start).Round(time.Millisecond))
	for _, c := range carts {
		require.Equal(t, want[c], e.lineCodes(t, c), "cart %s in stream order", c)
	}
	e.waitSettled(t)
	require.Empty(t, e.deadLetters(t), "handing back counts no failure")
	require.Error(t, sick.w.Ready(), "the sick instance is not ready")
}

// A renewal cut short by shutdown may reach the server without its answer
// reaching the instance, whose lease revision is then one behind. The
// instance still renews its leases and, at shutdown, deletes them, rather
// than leaving them to hold the partitions from the next instance until
// they expire.
func TestLeaseRevisionMovedOnIsStillRenewedAndReleased(t *testing.T) {
	e := newEnv(t)
	r := e.startWorker(t, consumer.Config{}, nil)
	e.waitLeases(t, 1)
	ctx := context.Background()
	kv, err := e.js.KeyValue(ctx, command.LeasesBucket)
	require.NoError(t, err)
	keys, err := kv.ListKeys(ctx)
	require.NoError(t, err)
	var bumped []string
	for k := range keys.Keys() {
		en, err := kv.Get(ctx, k)
		require.NoError(t, err)
		// What the lost renewal did: the same holder, the next revision.
		_, err = kv.Update(ctx, k, en.Value(), en.Revision())
		require.NoError(t, err)
		bumped = append(bumped, k)
	}
	require.NotEmpty(t, bumped)
	// The next renewals find every lease still this instance's.
	deadline := time.Now().Add(waitFor)
	for _, k := range bumped {
		first, err := kv.Get(ctx, k)
		require.NoError(t, err)
		eventually(t, func() bool {
			en, err := kv.Get(ctx, k)
			return err == nil && en.Revision() > first.Revision()
		}, time.Until(deadline), tick, "lease %s not renewed", k)
	}

	for _, k := range bumped {
		en, err := kv.Get(ctx, k)
		require.NoError(t, err)
		_, err = kv.Update(ctx, k, en.Value(), en.Revision())
		require.NoError(t, err)
	}
	_, ok := r.stop(waitFor)
	require.True(t, ok)
	for _, k := range bumped {
		_, err := kv.Get(ctx, k)
		require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "lease %s left behind at shutdown", k)
	}
}

// An idle instance keeps no pull request waiting on the server: once a
// partition's fetch comes back empty its puller parks, and a command
// published for one of its carts wakes it (idle.go).
func TestIdlePartitionsKeepNoPullWaiting(t *testing.T) {
	const partitions = 4
	e := newEnv(t)
	e.startWorker(t, consumer.Config{Partitions: partitions}, nil)
	e.publishCmd(t, cacheCmd("c1", ""))
	e.events.waitApplied(t, "cache-c1")

	waiting := func() (n int) {
		ctx := testkit.Context(t, 5*time.Second)
		for p := range partitions {
			c, err := e.js.Consumer(ctx, command.StreamCommands, command.PartitionConsumer(p))
			require.NoError(t, err)
			info, err := c.Info(ctx)
			require.NoError(t, err)
			n += info.NumWaiting
		}
		return n
	}
	eventually(t, func() bool { return waiting() == 0 }, waitFor, 50*time.Millisecond, "pull requests waiting: %d", waiting())

	for i := range 3 {
		id := fmt.Sprintf("a%d", i)
		e.publishCmd(t, addCmd(id, "c1", item("I", 1, "10", "01")))
		e.events.waitApplied(t, id)
		eventually(t, func() bool { return waiting() == 0 }, waitFor, 50*time.Millisecond, "pull requests waiting: %d", waiting())
	}
	require.Equal(t, []string{"I", "I", "I"}, e.lineCodes(t, "c1"))
}
