package consumer_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/consumer"
)

// workerGoroutines are the functions whose goroutines belong to a running
// worker: its own (Run, the lanes, the shutdown watcher) and its JetStream
// pull iterator's.
var workerGoroutines = []string{
	"github.com/cartworker/cartworker/internal/consumer.",
	"github.com/nats-io/nats.go/jetstream.(*pullSubscription)",
	"github.com/nats-io/nats.go/jetstream.(*pullConsumer).Messages",
}

func TestPerCartOrder(t *testing.T) {
	const carts, perCart, n = 5, 20, 8
	e := newEnv(t)
	app := newApplier(e.svc, func(ctx context.Context, _ command.Command) error {
		return sleep(ctx, time.Millisecond)
	})
	r := e.startWorker(t, consumer.Config{Concurrency: n}, app)
	ids := cartsOnDistinctLanes(t, r.w, "po", n, carts)

	var cacheIDs []string
	for _, c := range ids {
		e.publishCmd(t, cacheCmd(c, ""))
		cacheIDs = append(cacheIDs, "cache-"+c)
	}
	e.events.waitApplied(t, cacheIDs...)

	var addIDs []string
	want := map[string][]string{}
	for i := range perCart {
		for _, c := range ids {
			code := fmt.Sprintf("I%02d", i)
			id := c + "-" + code
			addIDs = append(addIDs, id)
			want[c] = append(want[c], code)
			e.publishCmd(t, addCmd(id, c, item(code, 1, "10", "01")))
		}
	}
	e.events.waitApplied(t, addIDs...)
	for _, c := range ids {
		require.Equal(t, want[c], e.lineCodes(t, c), "cart %s lines in publish order", c)
		require.InDelta(t, perCart*11, e.cart(t, c)["sales"].(map[string]any)["total_amount_with_tax"], 1e-9)
	}
	maxInFlight, perCartMax, _ := app.stats()
	require.Greater(t, maxInFlight, 1, "different carts run in parallel")
	require.LessOrEqual(t, maxInFlight, n)
	require.Equal(t, 1, perCartMax, "one cart's commands never run concurrently")
	e.waitSettled(t)
}

func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	const shutdownTimeout = 3 * time.Second
	e := newEnv(t)
	obs1 := newObserver()
	// Each command takes long enough that the first worker's last fetch
	// (at most a second) ends before it has them all.
	slow := newApplier(e.svc, func(ctx context.Context, _ command.Command) error {
		return sleep(ctx, 400*time.Millisecond)
	})
	// One partition and a buffer of two: the first worker holds two
	// commands at a time, so shutdown finds some it never took.
	first := e.startWorker(t, consumer.Config{Concurrency: 2, Buffer: 2, Partitions: 1, ShutdownTimeout: shutdownTimeout, Observer: obs1}, slow)

	var ids []string
	for i := range 10 {
		c := fmt.Sprintf("s%d", i)
		ids = append(ids, "cache-"+c)
		e.publishCmd(t, cacheCmd(c, ""))
	}
	waitClosed(t, slow.started, "the first command to start")
	err, ok := first.stop(shutdownTimeout + 5*time.Second)
	require.True(t, ok, "Run must return after its context ends")
	require.NoError(t, err)
	require.Less(t, first.elapsed, shutdownTimeout, "Run returns within ShutdownTimeout")
	requireNoGoroutines(t, workerGoroutines...)

	// What the first worker started it finished: nothing was cut short.
	require.Zero(t, obs1.count("", consumer.LabelShutdown))
	doneByFirst := obs1.count(string(command.TypeCache), consumer.LabelApplied)
	require.GreaterOrEqual(t, doneByFirst, 1)
	require.Less(t, doneByFirst, 10, "the first worker stopped pulling")
	t.Logf("first worker applied %d of 10 before stopping in %s", doneByFirst, first.elapsed)

	// A new instance picks up the rest; each command is applied once.
	obs2 := newObserver()
	e.startWorker(t, consumer.Config{Partitions: 1, Observer: obs2}, nil)
	e.events.waitApplied(t, ids...)
	for i := range 10 {
		applied := e.cart(t, fmt.Sprintf("s%d", i))[cart.AppliedIDsField].([]any)
		require.Equal(t, []any{ids[i]}, applied)
	}
	e.waitSettled(t)
	require.Empty(t, e.deadLetters(t))
	require.Equal(t, 10, doneByFirst+obs2.count(string(command.TypeCache), consumer.LabelApplied))
}

func TestShutdownTimeoutNaksInFlight(t *testing.T) {
	const shutdownTimeout = 300 * time.Millisecond
	e := newEnv(t)
	obs1 := newObserver()
	stuck := newApplier(nil, func(ctx context.Context, _ command.Command) error {
		<-ctx.Done()
		return ctx.Err()
	})
	// AckWait far beyond the test's deadlines: a redelivery can only come
	// from the Nak.
	first := e.startWorker(t, consumer.Config{
		Concurrency: 1, ShutdownTimeout: shutdownTimeout, AckWait: time.Minute, Observer: obs1,
	}, stuck)

	e.publishCmd(t, cacheCmd("c1", ""))
	waitClosed(t, stuck.started, "the command to start")
	err, ok := first.stop(5 * time.Second)
	require.True(t, ok, "Run must return")
	require.NoError(t, err)
	require.GreaterOrEqual(t, first.elapsed, shutdownTimeout-50*time.Millisecond, "in-flight work gets ShutdownTimeout")
	// The pull requests it sent must be gone before it hands its
	// partitions over: 2.25 s with this AckWait.
	require.Less(t, first.elapsed, 3*time.Second, "Run returns soon after ShutdownTimeout, once its pull requests are gone")
	requireNoGoroutines(t, workerGoroutines...)
	eventually(t, func() bool { return obs1.count(string(command.TypeCache), consumer.LabelShutdown) == 1 }, waitFor, tick, "observer: %s", obs1)
	require.Empty(t, e.events.all(), "nothing was applied or rejected")

	redeliveredAt := time.Now()
	obs2 := newObserver()
	e.startWorker(t, consumer.Config{AckWait: time.Minute, Observer: obs2}, nil)
	e.events.waitApplied(t, "cache-c1")
	// The second worker takes the partition and rewinds it: the Nak'ed
	// command comes back at once, as a first delivery since the rewind.
	require.Less(t, time.Since(redeliveredAt), 10*time.Second, "redelivered by the Nak and the rewind, not by AckWait")
	e.waitSettled(t)
}

func TestSetupCreatesStreamsAndConsumer(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := consumer.Config{Partitions: 3, Buffer: 300, AckWait: 7 * time.Second, DuplicateWindow: 5 * time.Minute}
	w, _ := e.newWorker(t, cfg, nil)

	cons, err := w.Setup(ctx)
	require.NoError(t, err)
	require.Len(t, cons.Partitions, 3)
	want := map[string]string{command.ConsumerName: subjects.Commands()}
	for p := range 3 {
		want[command.PartitionConsumer(p)] = subjects.Partition(p)
	}
	for i, c := range append([]jetstream.Consumer{cons.Strays}, cons.Partitions...) {
		cc := c.CachedInfo().Config
		require.Equal(t, want[cc.Durable], cc.FilterSubject, cc.Durable)
		delete(want, cc.Durable)
		require.Equal(t, jetstream.AckExplicitPolicy, cc.AckPolicy)
		if i == 0 {
			require.Equal(t, 1, cc.MaxAckPending, "the strays: one command in flight, on any instance")
			require.Equal(t, jetstream.PriorityPolicyNone, cc.PriorityPolicy)
		} else {
			require.Equal(t, 100, cc.MaxAckPending, "a partition's share of the buffer: one instance pulls it, by lease")
		}
		require.Equal(t, 7*time.Second, cc.AckWait)
		require.Equal(t, -1, cc.MaxDeliver, "the worker, not the server, gives up")
		require.Equal(t, jetstream.DeliverAllPolicy, cc.DeliverPolicy)
	}
	require.Empty(t, want)
	tr := e.streamInfo(t, command.StreamCommands).Config.SubjectTransform
	require.NotNil(t, tr)
	require.Equal(t, "cart.cmd.*.*", tr.Source)
	require.Equal(t, "cart.pcmd.{{partition(3,1)}}.{{wildcard(1)}}.{{wildcard(2)}}", tr.Destination)

	tests := []struct {
		stream  string
		subject string
		maxAge  time.Duration
	}{
		{command.StreamCommands, "cart.cmd.>", 24 * time.Hour},
		{command.StreamDeadLetters, "cart.dlq.>", 14 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.stream, func(t *testing.T) {
			sc := e.streamInfo(t, tt.stream).Config
			require.Equal(t, []string{tt.subject}, sc.Subjects)
			require.Equal(t, jetstream.FileStorage, sc.Storage)
			require.Equal(t, jetstream.LimitsPolicy, sc.Retention)
			require.GreaterOrEqual(t, sc.Duplicates, 2*time.Minute)
			require.Equal(t, 5*time.Minute, sc.Duplicates)
			require.Equal(t, tt.maxAge, sc.MaxAge)
			require.Equal(t, 1, sc.Replicas)
		})
	}

	// Commands stored before a second Setup survive it.
	e.publishCmd(t, cacheCmd("c1", ""))
	_, err = w.Setup(ctx)
	require.NoError(t, err, "Setup is idempotent")
	second, _ := e.newWorker(t, cfg, nil)
	_, err = second.Setup(ctx)
	require.NoError(t, err, "a second instance's Setup succeeds")
	require.EqualValues(t, 1, e.streamInfo(t, command.StreamCommands).State.Msgs)
	require.EqualValues(t, 1, e.consumerInfo(t).NumPending)

	names := e.js.StreamNames(ctx)
	var got []string
	for n := range names.Name() {
		got = append(got, n)
	}
	require.NoError(t, names.Err())
	require.ElementsMatch(t, []string{command.StreamCommands, command.StreamDeadLetters, "KV_" + command.FailuresBucket, "KV_" + command.MembersBucket, "KV_" + command.LeasesBucket}, got)
}

func TestRunRetriesSetupThenGivesUp(t *testing.T) {
	tests := []struct {
		name         string
		setupTimeout time.Duration
		cancelAfter  time.Duration // 0: never cancel
		minElapsed   time.Duration
		maxElapsed   time.Duration
	}{
		// Retries are a second apart; the attempt after the deadline is the last.
		{"until SetupTimeout", 1500 * time.Millisecond, 0, 1500 * time.Millisecond, 5 * time.Second},
		{"until its context ends", time.Minute, 300 * time.Millisecond, 300 * time.Millisecond, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			// Another stream already owns the command subjects, so creating
			// CART_COMMANDS fails for as long as it is there.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "SQUATTER", Subjects: []string{"cart.cmd.>"}})
			require.NoError(t, err)

			w, _ := e.newWorker(t, consumer.Config{SetupTimeout: tt.setupTimeout}, nil)
			runCtx, stop := context.WithCancel(context.Background())
			defer stop()
			exited := make(chan error, 1)
			start := time.Now()
			go func() { exited <- w.Run(runCtx) }()
			if tt.cancelAfter > 0 {
				timer := time.AfterFunc(tt.cancelAfter, stop)
				defer timer.Stop()
			}
			limit := time.NewTimer(10 * time.Second)
			defer limit.Stop()
			select {
			case err := <-exited:
				require.Error(t, err, "Run must report a setup it could not do")
				require.Contains(t, err.Error(), command.StreamCommands)
			case <-limit.C:
				stop()
				require.True(t, waitErr(exited, 5*time.Second), "Run ignored its context")
				t.Fatal("Run kept retrying Setup")
			}
			elapsed := time.Since(start)
			require.GreaterOrEqual(t, elapsed, tt.minElapsed)
			require.Less(t, elapsed, tt.maxElapsed)
			_, err = e.js.Stream(ctx, command.StreamCommands)
			require.ErrorIs(t, err, jetstream.ErrStreamNotFound)
		})
	}
}

// waitErr waits up to d for a value on ch.
func waitErr(ch <-chan error, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ch:
		return true
	case <-timer.C:
		return false
	}
}

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  consumer.Config
		ok   bool
	}{
		{"zero value takes defaults", consumer.Config{}, true},
		{"negative concurrency", consumer.Config{Concurrency: -1}, false},
		{"concurrency above 4096", consumer.Config{Concurrency: 4097}, false},
		{"no partitions", consumer.Config{Partitions: -1}, false},
		{"too many partitions", consumer.Config{Partitions: command.MaxPartitions + 1}, false},
		{"ack wait below 1s", consumer.Config{AckWait: 500 * time.Millisecond}, false},
		{"max deliver negative", consumer.Config{MaxDeliver: -1}, false},
		{"duplicate window below 2m", consumer.Config{DuplicateWindow: time.Minute}, false},
		{"retry max below base", consumer.Config{RetryBaseDelay: time.Second, RetryMaxDelay: time.Millisecond}, false},
		{"negative ack wait", consumer.Config{AckWait: -time.Second}, false},
		{"negative shutdown timeout", consumer.Config{ShutdownTimeout: -time.Second}, false},
		{"negative retry delay", consumer.Config{RetryBaseDelay: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.ok, tt.cfg.Validate() == nil, "Validate: %v", tt.cfg.Validate())
			_, err := consumer.New(nil, nil, nil, tt.cfg)
			require.Equal(t, tt.ok, err == nil, "New: %v", err)
		})
	}
}
