package publisher

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// DefaultWaitTimeout bounds PublishAndWait when its context has no deadline,
// so that a lost event cannot block a caller for ever.
const DefaultWaitTimeout = 10 * time.Second

// Option configures a Publisher in New.
type Option func(*options) error

type options struct {
	prefix      string
	newID       func() string
	waitTimeout time.Duration
	tracer      trace.TracerProvider
	propagator  propagation.TextMapPropagator
}

func defaultOptions() options {
	return options{
		// nuid ids are unique, URL and header safe, and cheap to make,
		// which matters to load generators.
		newID:       nuid.Next,
		waitTimeout: DefaultWaitTimeout,
		tracer:      noop.NewTracerProvider(),
		propagator:  propagation.TraceContext{},
	}
}

// WithPrefix sets the subject prefix, the CART_SUBJECT_PREFIX of the worker.
// Default command.DefaultPrefix ("cart"). It must be one or more
// dot-separated tokens without wildcards or white space.
func WithPrefix(prefix string) Option {
	return func(o *options) error {
		if !validPrefix(prefix) {
			return fmt.Errorf("%w: subject prefix %q", ErrInvalidOption, prefix)
		}
		o.prefix = prefix
		return nil
	}
}

// WithIDGenerator sets the function that makes ids for commands published
// without one. It must be safe for concurrent use and return ids unique
// across every publisher of the system: JetStream drops a repeated id
// published within the stream's duplicate window, on any cart, and the worker
// ignores a repeated id on the same cart for as long as the cart remembers
// it. Default: nuid.Next.
func WithIDGenerator(gen func() string) Option {
	return func(o *options) error {
		if gen == nil {
			return fmt.Errorf("%w: nil id generator", ErrInvalidOption)
		}
		o.newID = gen
		return nil
	}
}

// WithWaitTimeout sets how long PublishAndWait waits when its context has no
// deadline. A context deadline always wins. Default DefaultWaitTimeout.
func WithWaitTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: wait timeout %s must be positive", ErrInvalidOption, d)
		}
		o.waitTimeout = d
		return nil
	}
}

// WithTracerProvider makes a producer span ("send <prefix>.cmd.{cart_id}.{type}")
// of every publish, a child of the span in the context given to Publish,
// and sends that span's trace context with the command instead. Default: no
// span; the context's own span context, if any, is sent.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) error {
		if tp == nil {
			return fmt.Errorf("%w: nil tracer provider", ErrInvalidOption)
		}
		o.tracer = tp
		return nil
	}
}

// WithPropagator sets how trace context is written into the command's
// headers. The worker reads W3C Trace Context (traceparent, tracestate) and
// forwards it to Dapr and onto outcome events and dead letters; a composite
// propagator may add more, which the worker ignores. Default
// propagation.TraceContext{}.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(o *options) error {
		if p == nil {
			return fmt.Errorf("%w: nil propagator", ErrInvalidOption)
		}
		o.propagator = p
		return nil
	}
}

// validPrefix reports whether p can start a subject: non-empty tokens, no
// wildcards, no white space.
func validPrefix(p string) bool {
	if p == "" {
		return false
	}
	for _, tok := range strings.Split(p, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return false
		}
	}
	return true
}
