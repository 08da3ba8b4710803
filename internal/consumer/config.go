package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cartworker/cartworker/command"
)

// Config tunes a Worker. Zero fields take the documented defaults.
type Config struct {
	// Subjects places commands, events and dead letters. Default prefix "cart".
	Subjects command.Subjects
	// Concurrency is the most commands in flight in this instance; it is
	// also the number of goroutines handling commands. Default 16.
	Concurrency int
	// Partitions is how many partitions the command stream's carts are
	// spread over; each is consumed one command at a time, by whichever
	// instance pulls it. It bounds the instances that can share the work
	// and the commands in flight across all of them. Changing it needs the
	// stream drained. Default command.DefaultPartitions.
	Partitions int
	// AckWait is how long JetStream waits for an ack before redelivering,
	// which is how long a crashed instance's carts wait. Commands held
	// longer get InProgress heartbeats every AckWait/3. Default 5s.
	AckWait time.Duration
	// MaxDeliver is the delivery after which a command that keeps failing
	// transiently is dead-lettered. Deliveries refused by an open breaker
	// count towards it but never dead-letter by themselves. Default 10.
	MaxDeliver int
	// RetryBaseDelay and RetryMaxDelay bound the exponential NakWithDelay
	// backoff of transient failures. Defaults 100ms and 5s.
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
	// is at fault; it doubles up to 2s. Default 500ms.
	ProbeInterval time.Duration
	// ShutdownTimeout bounds how long Run finishes in-flight commands after
	// its context ends; what is left is Nak'ed. Default 20s.
	ShutdownTimeout time.Duration
	// DuplicateWindow is JetStream's publish de-duplication window on the
	// command stream. Default and minimum 2m.
	DuplicateWindow time.Duration
	// CommandMaxAge is how long the command stream keeps messages. Default 24h.
	CommandMaxAge time.Duration
	// DeadLetterMaxAge is how long dead letters are kept. Default 14 days.
	DeadLetterMaxAge time.Duration
	// SetupTimeout bounds the retries of the start-up JetStream setup. The
	// connection is already up by then, so this only waits out a JetStream
	// cluster that is still electing its leaders. Default 30s.
	SetupTimeout time.Duration
	// Replicas of the streams Setup creates (1 for a single server), 1..5;
	// with ManageStreams also the floor of existing ones. Default 1.
	Replicas int
	// ManageStreams lets Setup raise an existing stream's replicas, limits,
	// duplicate window and subjects to at least its own; it never lowers
	// anything nor changes storage. Off, an existing stream is only checked.
	ManageStreams bool
	// Logger receives one line per rejected, dead-lettered or failed command.
	// Default slog.Default().
	Logger *slog.Logger
	// Observer receives metrics. Default: none.
	Observer Observer
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
	def(&c.Concurrency, 16)
	def(&c.Partitions, command.DefaultPartitions)
	def(&c.MaxDeliver, 10)
	def(&c.Replicas, 1)
	dur(&c.AckWait, 5*time.Second)
	dur(&c.SetupTimeout, 30*time.Second)
	dur(&c.RetryBaseDelay, 100*time.Millisecond)
	dur(&c.RetryMaxDelay, 5*time.Second)
	dur(&c.ProbeInterval, 500*time.Millisecond)
	if c.Probe == nil {
		c.Probe = func(context.Context) error { return nil }
	}
	dur(&c.ShutdownTimeout, 20*time.Second)
	dur(&c.DuplicateWindow, minDuplicateWindow)
	dur(&c.CommandMaxAge, 24*time.Hour)
	dur(&c.DeadLetterMaxAge, 14*24*time.Hour)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Concurrency < 1 || c.Concurrency > 4096 {
		errs = append(errs, fmt.Errorf("concurrency %d: want 1..4096", c.Concurrency))
	}
	if c.Partitions < 1 || c.Partitions > command.MaxPartitions {
		errs = append(errs, fmt.Errorf("partitions %d: want 1..%d", c.Partitions, command.MaxPartitions))
	}
	if c.AckWait < time.Second {
		errs = append(errs, fmt.Errorf("ack wait %s: want at least 1s, for the heartbeats every third of it", c.AckWait))
	}
	if c.MaxDeliver < 1 {
		errs = append(errs, fmt.Errorf("max deliver %d: want at least 1", c.MaxDeliver))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas %d: want 1..5", c.Replicas))
	}
	if c.DuplicateWindow < minDuplicateWindow {
		errs = append(errs, fmt.Errorf("duplicate window %s: want at least 2m", c.DuplicateWindow))
	}
	if c.RetryMaxDelay < c.RetryBaseDelay {
		errs = append(errs, fmt.Errorf("retry max delay %s is below retry base delay %s", c.RetryMaxDelay, c.RetryBaseDelay))
	}
	for name, d := range map[string]time.Duration{
		"AckWait": c.AckWait, "ShutdownTimeout": c.ShutdownTimeout, "ProbeInterval": c.ProbeInterval,
		"RetryBaseDelay": c.RetryBaseDelay,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %s: must not be negative", name, d))
		}
	}
	return errors.Join(errs...)
}

// Observer receives the worker's metrics. Implementations must be safe for
// concurrent use.
type Observer interface {
	// CommandDone is called once per delivery with the command type (or
	// "unknown"), its outcome label and how long handling took. Outcomes:
	// applied, duplicate, rejected, dead_letter, retry, breaker_open,
	// not_ready, shutdown, and invalid for a delivery that is no JetStream
	// message, which is logged and dropped.
	CommandDone(typ, outcome string, d time.Duration)
	// Redelivered is called for every delivery after the first.
	Redelivered()
	// DeadLettered is called for every dead letter published.
	DeadLettered()
}

type nopObserver struct{}

func (nopObserver) CommandDone(string, string, time.Duration) {}
func (nopObserver) Redelivered()                              {}
func (nopObserver) DeadLettered()                             {}
