package consumer

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/budget"
	"github.com/cartworker/cartworker/internal/setting"
)

// Defaults of Config, and the bounds Validate holds its fields to.
const (
	DefaultConcurrency      = 4
	MaxConcurrency          = 4096
	DefaultBuffer           = 2048
	MaxBuffer               = 1 << 16
	DefaultBatchMax         = 64
	DefaultBatchMaxBytes    = 256 << 10
	DefaultBatchCarts       = 16
	MaxBatchCarts           = 128
	DefaultAckWait          = 5 * time.Second
	MinAckWait              = 2 * time.Second
	DefaultMaxDeliver       = 10
	DefaultRetryBaseDelay   = 100 * time.Millisecond
	DefaultRetryMaxDelay    = 5 * time.Second
	DefaultProbeInterval    = 500 * time.Millisecond
	DefaultShutdownTimeout  = 20 * time.Second
	DefaultCommandMaxAge    = 24 * time.Hour
	DefaultDeadLetterMaxAge = 14 * 24 * time.Hour
	DefaultSetupTimeout     = 30 * time.Second
	DefaultReplicas         = 1
	MaxReplicas             = 5
	// MinDuplicateWindow is the default and the least of DuplicateWindow:
	// a publisher retrying for up to a minute or two must be de-duplicated.
	MinDuplicateWindow = 2 * time.Minute
)

// Config tunes a Worker. Zero fields take the documented defaults.
type Config struct {
	// Subjects places commands, events and dead letters. Default prefix "cart".
	Subjects command.Subjects
	// Concurrency is the number of goroutines handling commands. Each
	// handles the batches of up to BatchCarts carts at a time, in one apply,
	// and a cart's batch holds up to BatchMax of its commands: so it is the
	// most applies in flight in this instance, not the most commands.
	// Default DefaultConcurrency, at most MaxConcurrency.
	Concurrency int
	// Buffer is the most messages this instance holds: running, queued
	// behind their cart, or on their way. A cart's backlog forms into one
	// read-modify-write only if the instance holds it. Each partition lets
	// its instance hold Buffer/Partitions of its messages, so it must be at
	// least Partitions, and at least Concurrency. Default DefaultBuffer,
	// at most MaxBuffer.
	Buffer int
	// BatchMax and BatchMaxBytes bound one read-modify-write of a cart: at
	// most BatchMax commands and, past the first, BatchMaxBytes of command
	// bodies. BatchMax 1 applies each command on its own. Defaults
	// DefaultBatchMax and DefaultBatchMaxBytes.
	BatchMax      int
	BatchMaxBytes int
	// BatchCarts is the most carts applied together, in one bulk read and
	// one bulk save of the state store, when several carts have commands
	// waiting: under load, fewer calls do the same work. It never delays a
	// command to wait for others. 1 applies each cart on its own. Default
	// DefaultBatchCarts, at most MaxBatchCarts.
	BatchCarts int
	// Partitions is how many partitions the command stream's carts are
	// spread over; each is consumed by the one instance that owns it
	// (internal/ownership), which holds up to Buffer/Partitions of its
	// commands and runs each cart's in order. It bounds the instances that
	// can share the work. Changing it needs the
	// stream drained. Default command.DefaultPartitions.
	Partitions int
	// AckWait is how long JetStream waits for an ack before redelivering
	// to the partition's holder. A command this instance holds gets an
	// InProgress heartbeat once it has been held for a third of AckWait,
	// and every third after, so that it never reaches it. A takeover does
	// not wait for it: the new owner rewinds the partition. Default
	// DefaultAckWait, at least MinAckWait.
	AckWait time.Duration
	// MaxDeliver is how many transient failures of a command's apply
	// dead-letter it, as max_deliveries: it counts failures, not
	// deliveries (the consumers' own MaxDeliver is unlimited). A failure is
	// counted for every command of a cart whose read-modify-write failed,
	// or for the one command whose step failed, in the cartworker_failures
	// bucket, across deliveries and instances; only when that count cannot
	// be stored does JetStream's delivery count, plus the attempts of this
	// hold, stand in for it. What is not the command's failure never
	// counts: an attempt held by an open breaker or a fault of the
	// environment, a hand-back or a Nak at shutdown, and a publish of its
	// event or dead letter that fails (retried in place without limit). A
	// command dead-lettered so and replayed by a rewind is dead-lettered
	// again without an apply. The retry policy is in retry.go. Default
	// DefaultMaxDeliver.
	MaxDeliver int
	// RetryBaseDelay and RetryMaxDelay bound the exponential backoff of
	// what is retried in place (retry.go): a transient failure, an event or
	// a dead letter that could not be published. Defaults
	// DefaultRetryBaseDelay and DefaultRetryMaxDelay.
	RetryBaseDelay time.Duration
	RetryMaxDelay  time.Duration
	// Probe checks that the instance's environment can serve commands: the
	// sidecar answers, accepts the token and has the store, and the breaker
	// is not open. The worker pulls nothing until it passes, and runs it
	// again whenever a command fails for such a reason; its error, which
	// should name the setting to fix, is the instance's readiness. Default:
	// always passes.
	Probe func(context.Context) error
	// ProbeInterval is the first wait between probes while the environment
	// is at fault; it doubles up to 2s. Default DefaultProbeInterval.
	ProbeInterval time.Duration
	// ShutdownTimeout bounds how long Run finishes in-flight commands after
	// its context ends; what is left is Nak'ed. Default
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// DuplicateWindow is JetStream's publish de-duplication window on the
	// command stream. Default and minimum MinDuplicateWindow.
	DuplicateWindow time.Duration
	// CommandMaxAge is how long the command stream keeps messages. Default
	// DefaultCommandMaxAge.
	CommandMaxAge time.Duration
	// DeadLetterMaxAge is how long dead letters are kept. Default
	// DefaultDeadLetterMaxAge.
	DeadLetterMaxAge time.Duration
	// SetupTimeout bounds the retries of the start-up JetStream setup. The
	// connection is already up by then, so this only waits out a JetStream
	// cluster that is still electing its leaders. Default
	// DefaultSetupTimeout.
	SetupTimeout time.Duration
	// Replicas of the streams Setup creates (1 for a single server), 1..5;
	// with ManageStreams also the floor of existing ones. Default
	// DefaultReplicas, at most MaxReplicas.
	Replicas int
	// ManageStreams lets Setup raise an existing stream's replicas, limits,
	// duplicate window and subjects to at least its own; it never lowers
	// anything nor changes storage. Off, an existing stream is only checked.
	ManageStreams bool
	// Logger receives the worker's log lines: among them one per rejected
	// or dead-lettered command, one per transient failure of an apply
	// retried in place, and the first and every tenth of a publish that
	// keeps failing. Default slog.Default().
	Logger *slog.Logger
	// Observer receives metrics. Default: none.
	Observer Observer
	// TracerProvider makes a consumer span of every delivery and a span of
	// every apply of a cart's batch (trace.go). Default (nil, or a no-op
	// provider): no span, but the trace context a command arrived with is
	// still forwarded to the state store, its outcome event and its dead
	// letter.
	TracerProvider trace.TracerProvider
	// Held bounds the bytes of the commands this instance holds, running
	// or queued behind their cart: each counts its body, subject and
	// headers and HeldOverhead, from when it is handed to the pool until it
	// is settled, and a puller with more to hand over waits while it
	// would take Held past its total (as it waits for Buffer). The worker
	// gives it a quarter of WORKER_MAX_HELD_BYTES. Default (nil):
	// unbounded but for Buffer.
	Held *budget.Bytes
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	dur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Concurrency, DefaultConcurrency)
	def(&c.BatchMax, DefaultBatchMax)
	def(&c.BatchMaxBytes, DefaultBatchMaxBytes)
	def(&c.BatchCarts, DefaultBatchCarts)
	def(&c.Partitions, command.DefaultPartitions)
	def(&c.Buffer, max(DefaultBuffer, c.Concurrency, c.Partitions))
	def(&c.MaxDeliver, DefaultMaxDeliver)
	def(&c.Replicas, DefaultReplicas)
	dur(&c.AckWait, DefaultAckWait)
	dur(&c.SetupTimeout, DefaultSetupTimeout)
	dur(&c.RetryBaseDelay, DefaultRetryBaseDelay)
	dur(&c.RetryMaxDelay, DefaultRetryMaxDelay)
	dur(&c.ProbeInterval, DefaultProbeInterval)
	if c.Probe == nil {
		c.Probe = func(context.Context) error { return nil }
	}
	dur(&c.ShutdownTimeout, DefaultShutdownTimeout)
	dur(&c.DuplicateWindow, MinDuplicateWindow)
	dur(&c.CommandMaxAge, DefaultCommandMaxAge)
	dur(&c.DeadLetterMaxAge, DefaultDeadLetterMaxAge)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c
}

// Validate reports every field that cannot work, each as a
// *setting.Error naming it. Zero values are valid: they take the defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, setting.Errorf(field, format, args...))
	}
	if c.Subjects.Prefix != "" && !command.ValidCartID(c.Subjects.Prefix) {
		bad("Subjects", "prefix %q: want one subject token of [A-Za-z0-9_-]", c.Subjects.Prefix)
	}
	if c.Concurrency < 1 || c.Concurrency > MaxConcurrency {
		bad("Concurrency", "%d: want 1..%d", c.Concurrency, MaxConcurrency)
	}
	if c.Buffer < max(c.Concurrency, c.Partitions) || c.Buffer > MaxBuffer {
		bad("Buffer", "%d: want at least Concurrency (%d) and Partitions (%d), at most %d", c.Buffer, c.Concurrency, c.Partitions, MaxBuffer)
	}
	if c.BatchMax < 1 {
		bad("BatchMax", "%d: want at least 1", c.BatchMax)
	}
	if c.BatchMaxBytes < 1 {
		bad("BatchMaxBytes", "%d: want at least 1", c.BatchMaxBytes)
	}
	if c.BatchCarts < 1 || c.BatchCarts > MaxBatchCarts {
		bad("BatchCarts", "%d: want 1..%d", c.BatchCarts, MaxBatchCarts)
	}
	if c.Partitions < 1 || c.Partitions > command.MaxPartitions {
		bad("Partitions", "%d: want 1..%d", c.Partitions, command.MaxPartitions)
	}
	if c.AckWait < MinAckWait {
		bad("AckWait", "%s: want at least %s, for the heartbeats every third of it", c.AckWait, MinAckWait)
	}
	if c.MaxDeliver < 1 {
		bad("MaxDeliver", "%d: want at least 1", c.MaxDeliver)
	}
	if c.Replicas < 1 || c.Replicas > MaxReplicas {
		bad("Replicas", "%d: want 1..%d (1 for a single server)", c.Replicas, MaxReplicas)
	}
	if c.DuplicateWindow < MinDuplicateWindow {
		bad("DuplicateWindow", "%s: want at least %s", c.DuplicateWindow, MinDuplicateWindow)
	}
	if c.RetryMaxDelay < c.RetryBaseDelay {
		bad("RetryMaxDelay", "%s is below RetryBaseDelay %s", c.RetryMaxDelay, c.RetryBaseDelay)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"AckWait", c.AckWait}, {"ShutdownTimeout", c.ShutdownTimeout}, {"ProbeInterval", c.ProbeInterval},
		{"RetryBaseDelay", c.RetryBaseDelay}, {"SetupTimeout", c.SetupTimeout},
		{"CommandMaxAge", c.CommandMaxAge}, {"DeadLetterMaxAge", c.DeadLetterMaxAge},
	} {
		if d.v < 0 {
			bad(d.field, "%s: want a positive duration such as 5s", d.v)
		}
	}
	return errors.Join(errs...)
}

// Observer receives the worker's metrics. Implementations must be safe for
// concurrent use.
type Observer interface {
	// CommandDone is called once per delivery when it is done with, with
	// the command type (or "unknown"), its outcome label and how long
	// handling took, and once more for every attempt at its apply that
	// failed transiently (retry) or was held by its environment
	// (breaker_open, not_ready). Outcomes: applied, duplicate, rejected,
	// dead_letter, shutdown and not_ready for a Nak, fenced for a delivery
	// dropped unsettled because its partition changed hands, and invalid
	// for a delivery that is no JetStream message, which is logged and
	// dropped.
	CommandDone(typ, outcome string, d time.Duration)
	// Redelivered is called for every delivery after the first since the
	// partition was last rewound (a rewind restarts the counts).
	Redelivered()
	// DeadLettered is called for every dead letter published.
	DeadLettered()
	// Batch is called for every read-modify-write of a cart whose commands
	// are then settled one by one (it went through, and none of its steps
	// failed transiently unless shutdown began), with the number of
	// commands it applied together.
	Batch(commands int)
	// Apply is called for every call to the Applier with the number of
	// carts it applied together.
	Apply(carts int)
	// InFlight is called with +1 for every command the instance takes
	// from NATS and with minus the count of a batch once the instance is
	// done with it: settled (acked, Nak'ed or terminated), or dropped
	// unsettled (fenced, invalid).
	InFlight(delta int)
	// Lag is called, every sampleEvery, with the commands not yet
	// delivered in the partitions this instance owns; a parked partition
	// (idle.go), whose last fetch found nothing, counts none.
	Lag(messages uint64)
	// DeadLetterDepth is called, every sampleEvery, with the number of
	// messages in the dead-letter stream.
	DeadLetterDepth(messages uint64)
	// OldestUnacked is called, every sampleEvery, with the age of the
	// oldest command this instance holds unsettled in each partition it
	// owns (0 for one it holds nothing of). A cart that is stuck holds up
	// its partition: its age grows while the partition's later commands
	// wait.
	OldestUnacked(ages map[int]time.Duration)
	// Acked is called for every command acked as applied (a duplicate
	// included), with when it passed each stage of its way, so that the
	// time from publish to ack can be told apart by stage.
	Acked(s Stages)
}

// Stages is when one command passed each stage of its way through an
// instance. Stored is JetStream's clock, the others the instance's.
type Stages struct {
	// Stored: JetStream stored the command.
	Stored time.Time
	// Fetched: a fetch of this instance received it.
	Fetched time.Time
	// Started: a goroutine of the pool began to handle its batch.
	Started time.Time
	// Applied: the read-modify-write of its cart returned.
	Applied time.Time
	// Acked: its outcome event was published and it was acked.
	Acked time.Time
}

type nopObserver struct{}

func (nopObserver) CommandDone(string, string, time.Duration) {}
func (nopObserver) Redelivered()                              {}
func (nopObserver) DeadLettered()                             {}
func (nopObserver) Batch(int)                                 {}
func (nopObserver) Apply(int)                                 {}
func (nopObserver) InFlight(int)                              {}
func (nopObserver) Lag(uint64)                                {}
func (nopObserver) DeadLetterDepth(uint64)                    {}
func (nopObserver) OldestUnacked(map[int]time.Duration)       {}
func (nopObserver) Acked(Stages)                              {}
