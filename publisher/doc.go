// Package publisher sends cart commands to cartworker over NATS JetStream and,
// when asked, waits for their outcome.
//
// A Publisher fills in what the wire contract in package command requires of
// every publisher, so that callers cannot get it subtly wrong:
//
//   - the command is validated before it leaves the process, so a command
//     that the worker would only dead-letter is refused with a
//     *command.InvalidError instead;
//   - it gets an id when it has none, and the id is sent as the Nats-Msg-Id
//     header, so JetStream drops a republish within the stream's duplicate
//     window and the worker recognises a later one by the body's id;
//   - it is published on "<prefix>.cmd.<cart_id>.<type>";
//   - the trace context of the context given to Publish travels with it as
//     W3C Trace Context headers (Traceparent, Tracestate), which the worker
//     continues: its spans, daprd's, the outcome event and any dead letter
//     join the caller's trace. WithTracerProvider adds a producer span of
//     the publish itself.
//
// Publish returns once JetStream has stored the command. PublishAndWait also
// waits for the worker's outcome event. The event travels on core NATS, so it
// is only seen by someone already listening: PublishAndWait registers its
// interest before it publishes, through one wildcard subscription that the
// Publisher shares between all its calls and starts on first use.
//
// A Publisher is safe for concurrent use. It does not own the NATS connection
// it is given; Close stops only the Publisher's own subscription.
package publisher
