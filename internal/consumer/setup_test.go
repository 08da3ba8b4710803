package consumer_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/consumer"
	"github.com/cartworker/cartworker/internal/testkit"
)

// The tests below each fail against the former Setup, which called
// CreateOrUpdateStream with the worker's own configuration at every start:
// it rewrote an existing stream's description, MaxAge, MaxMsgs and
// Duplicates to the worker's, replaced its subjects, and failed on a stream
// whose storage differed.

// operatorStream is CART_COMMANDS as an operator might pre-create it: its
// own description, a week of retention, a message cap and a wider
// duplicate window than the worker's.
func operatorStream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        command.StreamCommands,
		Description: "POS commands, owned by the platform team",
		Subjects:    []string{"cart.cmd.>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      7 * 24 * time.Hour,
		MaxMsgs:     1_000_000,
		Duplicates:  5 * time.Minute,
		Replicas:    1,
	}
}

// logTo returns a logger writing text lines to a buffer the test reads.
func logTo(buf *testkit.SyncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// createStream creates cfg as an operator would, before any worker runs,
// and returns the configuration the server stored.
func (e *env) createStream(t *testing.T, cfg jetstream.StreamConfig) jetstream.StreamConfig {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	_, err := e.js.CreateStream(ctx, cfg)
	require.NoError(t, err, "operator creates %s", cfg.Name)
	return e.streamInfo(t, cfg.Name).Config
}

// partitioned is cfg with the partition transform the worker adds to a
// command stream without one, for the test env's 4 partitions: the one
// change it makes to an operator's stream.
func partitioned(cfg jetstream.StreamConfig) jetstream.StreamConfig {
	src, dst := subjects.PartitionTransform(4)
	cfg.SubjectTransform = &jetstream.SubjectTransformConfig{Source: src, Destination: dst}
	return cfg
}

// setup runs one worker's Setup with cfg.
func (e *env) setup(t *testing.T, cfg consumer.Config) error {
	t.Helper()
	w, _ := e.newWorker(t, cfg, nil)
	_, err := w.Setup(testkit.Context(t, 10*time.Second))
	return err
}

func TestSetupCreatesMissingStreams(t *testing.T) {
	e := newEnv(t)
	var logs testkit.SyncBuffer
	first := consumer.Config{CommandMaxAge: 48 * time.Hour, DuplicateWindow: 3 * time.Minute, Logger: logTo(&logs)}
	require.NoError(t, e.setup(t, first))

	tests := []struct {
		stream, subject, description string
		maxAge                       time.Duration
	}{
		{command.StreamCommands, "cart.cmd.>", "cart commands, consumed by cartworker", 48 * time.Hour},
		{command.StreamDeadLetters, "cart.dlq.>", "cart commands that can never be applied", 14 * 24 * time.Hour},
	}
	created := map[string]jetstream.StreamConfig{}
	for _, tt := range tests {
		sc := e.streamInfo(t, tt.stream).Config
		created[tt.stream] = sc
		require.Equal(t, tt.description, sc.Description, tt.stream)
		require.Equal(t, []string{tt.subject}, sc.Subjects, tt.stream)
		require.Equal(t, jetstream.FileStorage, sc.Storage, tt.stream)
		require.Equal(t, jetstream.LimitsPolicy, sc.Retention, tt.stream)
		require.Equal(t, tt.maxAge, sc.MaxAge, tt.stream)
		require.Equal(t, 3*time.Minute, sc.Duplicates, tt.stream)
		require.Equal(t, 1, sc.Replicas, tt.stream)
	}
	require.Contains(t, logs.String(), "created stream")
	strays, err := e.js.Consumer(t.Context(), command.StreamCommands, command.ConsumerName)
	require.NoError(t, err)
	require.Equal(t, subjects.Commands(), strays.CachedInfo().Config.FilterSubject)

	// Another instance with other settings (a rolling deploy, say) finds
	// the streams there and keeps them as the first one made them.
	require.NoError(t, e.setup(t, consumer.Config{}))
	for _, tt := range tests {
		require.Equal(t, created[tt.stream], e.streamInfo(t, tt.stream).Config, "%s after a second instance's Setup", tt.stream)
	}
}

func TestSetupNeverChangesAnOperatorsStream(t *testing.T) {
	for _, manage := range []bool{false, true} {
		name := "default"
		if manage {
			name = "ManageStreams"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			before := e.createStream(t, operatorStream())
			var logs testkit.SyncBuffer
			require.NoError(t, e.setup(t, consumer.Config{ManageStreams: manage, Logger: logTo(&logs)}))

			after := e.streamInfo(t, command.StreamCommands).Config
			require.Equal(t, partitioned(before), after, "the operator's stream is exactly as it was, but partitioned")
			require.Equal(t, 7*24*time.Hour, after.MaxAge)
			require.EqualValues(t, 1_000_000, after.MaxMsgs)
			require.Equal(t, 5*time.Minute, after.Duplicates)
			require.Equal(t, "POS commands, owned by the platform team", after.Description)

			out := logs.String()
			require.Contains(t, out, "using existing stream")
			require.Contains(t, out, "max_age=168h0m0s")
			require.Contains(t, out, "replicas=1")
			require.Contains(t, out, "storage=File")
			require.NotContains(t, out, "raised stream")
			// The dead-letter stream was missing, so it was created, and the
			// worker's consumer sits on the operator's stream.
			require.Equal(t, []string{"cart.dlq.>"}, e.streamInfo(t, command.StreamDeadLetters).Config.Subjects)
			_, err := e.js.Consumer(t.Context(), command.StreamCommands, command.ConsumerName)
			require.NoError(t, err)
		})
	}
}

func TestManageStreamsOnlyRaises(t *testing.T) {
	e := newEnv(t)
	op := operatorStream()
	op.Subjects = []string{"pos.legacy.>"}
	op.MaxAge = time.Hour
	op.Duplicates = time.Minute
	before := e.createStream(t, op)
	var logs testkit.SyncBuffer
	cfg := consumer.Config{ManageStreams: true, Logger: logTo(&logs)}
	require.NoError(t, e.setup(t, cfg))

	after := e.streamInfo(t, command.StreamCommands).Config
	require.Equal(t, 24*time.Hour, after.MaxAge, "raised to the worker's")
	require.Equal(t, 2*time.Minute, after.Duplicates, "raised to the worker's")
	require.Equal(t, []string{"pos.legacy.>", "cart.cmd.>"}, after.Subjects, "the worker's subjects are added, none removed")
	require.EqualValues(t, 1_000_000, after.MaxMsgs, "a limit the worker does not set is kept")
	require.Equal(t, before.Description, after.Description)
	require.Equal(t, before.Storage, after.Storage)
	require.Equal(t, before.Retention, after.Retention)
	require.Contains(t, logs.String(), "raised stream")

	// A second start has nothing left to raise.
	require.NoError(t, e.setup(t, cfg))
	require.Equal(t, after, e.streamInfo(t, command.StreamCommands).Config)
}

func TestSetupRefusesAnIncompatibleStream(t *testing.T) {
	tests := []struct {
		name     string
		subjects []string
		manage   bool
		want     string
	}{
		{"other subjects", []string{"other.>"}, false, "do not cover cart.cmd.>"},
		{"narrower subjects", []string{"cart.cmd.*"}, false, "do not cover cart.cmd.>"},
		// cart.> would also take the dead letters, and then CART_DLQ could
		// never be created next to it; no manage mode removes a subject.
		{"takes the dead letters", []string{"cart.>"}, false, "also takes cart.dlq.>, the subjects of stream CART_DLQ"},
		{"takes the dead letters, managed", []string{"cart.>"}, true, "also takes cart.dlq.>, the subjects of stream CART_DLQ"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			op := operatorStream()
			op.Subjects = tt.subjects
			before := e.createStream(t, op)

			// Run, not only Setup: waiting cannot fix the stream, so Run
			// fails at once instead of retrying for its SetupTimeout.
			w, _ := e.newWorker(t, consumer.Config{ManageStreams: tt.manage, SetupTimeout: time.Minute}, nil)
			ctx := testkit.Context(t, 15*time.Second)
			err := w.Run(ctx)
			require.ErrorIs(t, err, consumer.ErrStreamIncompatible)
			require.NoError(t, ctx.Err(), "Run returned by itself, not at the test's deadline")
			require.Contains(t, err.Error(), "stream CART_COMMANDS")
			require.Contains(t, err.Error(), tt.want)
			require.Contains(t, err.Error(), "left unchanged")
			t.Logf("error: %v", err)

			require.Equal(t, before, e.streamInfo(t, command.StreamCommands).Config, "the stream is unchanged")
			_, err = e.js.Stream(ctx, command.StreamDeadLetters)
			require.ErrorIs(t, err, jetstream.ErrStreamNotFound, "nothing was created either")
		})
	}
}

func TestSetupAcceptsCoveringSubjectsAndRetentions(t *testing.T) {
	tests := []struct {
		name      string
		subjects  []string
		retention jetstream.RetentionPolicy
	}{
		{"exact", []string{"cart.cmd.>"}, jetstream.LimitsPolicy},
		{"among others", []string{"pos.legacy.>", "cart.cmd.>"}, jetstream.LimitsPolicy},
		{"interest", []string{"cart.cmd.>"}, jetstream.InterestPolicy},
		{"workqueue", []string{"cart.cmd.>"}, jetstream.WorkQueuePolicy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			op := operatorStream()
			op.Subjects = tt.subjects
			op.Retention = tt.retention
			before := e.createStream(t, op)
			require.NoError(t, e.setup(t, consumer.Config{}))
			require.Equal(t, partitioned(before), e.streamInfo(t, command.StreamCommands).Config)

			// The worker's consumer works on it.
			e.startWorker(t, consumer.Config{}, nil)
			e.publishCmd(t, cacheCmd("c1", ""))
			e.events.waitApplied(t, "cache-c1")
		})
	}
}

func TestSetupKeepsMemoryStorage(t *testing.T) {
	for _, manage := range []bool{false, true} {
		name := "default"
		if manage {
			name = "ManageStreams"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			op := operatorStream()
			op.Storage = jetstream.MemoryStorage
			before := e.createStream(t, op)
			var logs testkit.SyncBuffer
			require.NoError(t, e.setup(t, consumer.Config{ManageStreams: manage, Logger: logTo(&logs)}))

			after := e.streamInfo(t, command.StreamCommands).Config
			require.Equal(t, jetstream.MemoryStorage, after.Storage)
			require.Equal(t, partitioned(before), after)
			require.Contains(t, logs.String(), "storage=Memory")
			if manage {
				require.Contains(t, logs.String(), "storage differs")
			}
		})
	}
}

func TestSetupWarnsAboutAShortDuplicateWindow(t *testing.T) {
	e := newEnv(t)
	op := operatorStream()
	op.Duplicates = 30 * time.Second
	before := e.createStream(t, op)
	var logs testkit.SyncBuffer
	require.NoError(t, e.setup(t, consumer.Config{Logger: logTo(&logs)}))
	require.Equal(t, partitioned(before), e.streamInfo(t, command.StreamCommands).Config, "warned about, not changed")
	require.Contains(t, logs.String(), "level=WARN")
	require.Contains(t, logs.String(), "duplicate window is below the 2m")
	require.Contains(t, logs.String(), "duplicates=30s")
}

func TestRunFailsAtOnceWithoutJetStream(t *testing.T) {
	srv := testkit.StartJetStream(t, func(o *server.Options) { o.JetStream = false })
	nc := testkit.Connect(t, srv, nats.Name("worker"))
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	w, err := consumer.New(js, nc, newApplier(nil, nil), consumer.Config{SetupTimeout: time.Minute})
	require.NoError(t, err)

	ctx := testkit.Context(t, 15*time.Second)
	err = w.Run(ctx)
	require.Error(t, err)
	require.NoError(t, ctx.Err(), "Run returned by itself, not after its SetupTimeout")
	require.Contains(t, err.Error(), "JetStream is not enabled")
	require.Contains(t, err.Error(), "NATS_URL "+srv.ClientURL())
	t.Logf("error: %v", err)
}
