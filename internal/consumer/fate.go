package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/internal/telemetry"
)

// This file decides the fate of every delivery: Ack, Nak, NakWithDelay, or
// Term with a copy in the dead-letter stream. decide is the decision table;
// the functions below it carry a decision out. The delays are in retry.go.

// Outcome labels passed to Observer.CommandDone.
const (
	LabelApplied     = "applied"
	LabelDuplicate   = "duplicate"
	LabelRejected    = "rejected"
	LabelDeadLetter  = "dead_letter"
	LabelRetry       = "retry"
	LabelBreakerOpen = "breaker_open"
	LabelNotReady    = "not_ready"
	LabelShutdown    = "shutdown"
	// LabelInvalid: a delivery that is no JetStream message (it has no
	// metadata), so it can be neither settled nor dead-lettered.
	LabelInvalid = "invalid"
)

// fate is what becomes of a delivery.
type fate uint8

const (
	// fateAck: applied or a duplicate. Ack after the applied event.
	fateAck fate = iota
	// fateReject: the cart refuses the command, which no retry changes.
	// Ack after the rejected event.
	fateReject
	// fateDeadLetter: the command can never be applied. Copy it to the
	// dead-letter stream, Term it, send the rejected event.
	fateDeadLetter
	// fateRetry: a transient failure of the command alone, after its cart
	// was saved (its event was lost). Count it; NakWithDelay with backoff,
	// or dead-letter it as max_deliveries once it has failed MaxDeliver
	// times. A transient failure of the read-modify-write itself is
	// retried in place by apply, in handle.go, which keeps the cart's later
	// commands behind it, and reaches here only as an exhaustedError.
	fateRetry
	// fateNak: not the command's doing (shutdown, or an instance that is
	// not ready handing it back). Nak at once; nothing is counted.
	fateNak
)

// verdict is a row of the decision table.
type verdict struct {
	fate fate
	// code is the rejection or dead-letter code (command.Code*).
	code string
	// outcome is the metric label of a fateNak.
	outcome string
}

// decisions maps what decoding or applying a command returned to its fate. The first
// row whose error matches wins; an error no row matches is transient, unless
// shutdown has cancelled the work, which is no failure of the command.
var decisions = []struct {
	err error
	verdict
}{
	{cart.ErrCartNotFound, verdict{fate: fateReject, code: command.CodeCartNotFound}},
	{cart.ErrInvalidState, verdict{fate: fateReject, code: command.CodeInvalidState}},
	{cart.ErrUnknownTaxCode, verdict{fate: fateReject, code: command.CodeUnknownTaxCode}},
	{cart.ErrAmountOverflow, verdict{fate: fateReject, code: command.CodeAmountOverflow}},
	// The stored cart cannot be read: no retry makes it readable.
	{cart.ErrInvalidCart, verdict{fate: fateDeadLetter, code: command.CodeInvalidCart}},
	// Decode refuses unknown types, so only an Applier that knows fewer
	// types than command does gets here; no retry teaches it more.
	{cart.ErrUnknownType, verdict{fate: fateDeadLetter, code: command.CodeUnknownType}},
	// Dapr refused what this command produced: no retry can change it.
	{statepool.ErrBadRequest, verdict{fate: fateDeadLetter, code: command.CodeStateRejected}},
	// Shutdown began while the command waited for its environment.
	{errPaused, verdict{fate: fateNak, outcome: LabelShutdown}},
	// This instance is not ready: let a healthy one have it now.
	{errHandBack, verdict{fate: fateNak, outcome: LabelNotReady}},
}

// decide returns the fate of a command whose decoding or apply returned err. stopping
// reports whether shutdown has cancelled the work: a command cut short by
// it is redelivered, and the applied-id list makes that safe.
func decide(err error, stopping bool) verdict {
	if err == nil {
		return verdict{fate: fateAck}
	}
	// A body that is no valid command never becomes one.
	var inv *command.InvalidError
	if errors.As(err, &inv) {
		return verdict{fate: fateDeadLetter, code: inv.Code}
	}
	// Transient failures, retried MaxDeliver times.
	var ex *exhaustedError
	if errors.As(err, &ex) {
		return verdict{fate: fateDeadLetter, code: command.CodeMaxDeliveries}
	}
	for _, d := range decisions {
		if errors.Is(err, d.err) {
			return d.verdict
		}
	}
	if stopping {
		return verdict{fate: fateNak, outcome: LabelShutdown}
	}
	return verdict{fate: fateRetry}
}

// exhaustedError is a transient failure after which a command has failed
// MaxDeliver times.
type exhaustedError struct {
	err    error
	failed int
}

func (e *exhaustedError) Error() string {
	return fmt.Sprintf("failed %d times, last: %v", e.failed, e.err)
}

func (e *exhaustedError) Unwrap() error { return e.err }

// conclude carries out the fate of a delivery whose decoding or apply
// returned err, and returns its outcome label. d.cmd is what could be
// decoded.
func (w *Worker) conclude(r *run, d *delivery, res cartcache.Result, err error) string {
	msg, md, cmd := d.msg, d.md, d.cmd
	v := decide(err, r.work.Err() != nil)
	switch v.fate {
	case fateAck:
		ev := command.Event{CommandID: cmd.ID, Type: cmd.Type, CartID: cmd.CartID, Outcome: command.OutcomeApplied, Duplicate: res.Duplicate}
		if err := w.emit(traced(r.work, d), ev); err != nil {
			return w.retry(r, d, err)
		}
		w.settle(msg, msg.Ack(), "ack")
		if res.Duplicate {
			return LabelDuplicate
		}
		return LabelApplied
	case fateReject:
		return w.reject(r, d, v.code, err)
	case fateDeadLetter:
		reason := err.Error()
		if inv := (*command.InvalidError)(nil); errors.As(err, &inv) {
			reason = inv.Reason
		}
		if ex := (*exhaustedError)(nil); errors.As(err, &ex) && uint64(ex.failed) > md.NumDelivered {
			// Retried in place: it was tried more often than delivered.
			tried := *md
			tried.NumDelivered = uint64(ex.failed)
			md = &tried
		}
		return w.deadLetter(traced(r.work, d), msg, md, cmd.ID, v.code, reason)
	case fateNak:
		w.settle(msg, msg.Nak(), "nak")
		return v.outcome
	default:
		return w.retry(r, d, err)
	}
}

// retry counts a transient failure of the command and Naks it with
// exponential backoff, or dead-letters it once it has failed MaxDeliver
// times.
func (w *Worker) retry(r *run, d *delivery, err error) string {
	// The work context may be cancelled already; the dead letter must
	// still get out.
	ctx, cancel := context.WithTimeout(traced(context.Background(), d), settleTimeout)
	defer cancel()
	failed := w.countFailure(r, []*delivery{d}, 1)
	if failed >= w.cfg.MaxDeliver {
		return w.deadLetter(ctx, d.msg, d.md, d.cmd.ID, command.CodeMaxDeliveries,
			fmt.Sprintf("failed %d times, last: %v", failed, err))
	}
	delay := w.backoff(uint64(failed))
	w.log.Warn("command failed, will retry",
		"subject", w.subject(d.msg), "command_id", d.cmd.ID, "failures", failed, "delivery", d.md.NumDelivered, "retry_in", delay, "err", err)
	w.settle(d.msg, d.msg.NakWithDelay(delay), "nak")
	return LabelRetry
}

// reject acks a valid command that the cart refuses and tells the publisher.
func (w *Worker) reject(r *run, d *delivery, code string, cause error) string {
	msg, cmd := d.msg, d.cmd
	ev := command.Event{
		CommandID: cmd.ID, Type: cmd.Type, CartID: cmd.CartID, Outcome: command.OutcomeRejected,
		Error: &command.EventError{Code: code, Message: cause.Error()},
	}
	if err := w.emit(traced(r.work, d), ev); err != nil {
		return w.retry(r, d, err)
	}
	w.log.Info("command rejected", "cart_id", cmd.CartID, "command_id", cmd.ID, "type", cmd.Type, "code", code, "err", cause)
	w.settle(msg, msg.Ack(), "ack")
	return LabelRejected
}

// deadLetter copies the message to the dead-letter stream, emits a rejected
// event when the subject names a valid cart, and terminates the original.
// If the copy cannot be stored the original is Nak'ed instead: a command is
// never dropped without a dead letter. cmdID is the body's id when it could
// be decoded; the Nats-Msg-Id header stands in otherwise.
func (w *Worker) deadLetter(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, cmdID, code, reason string) string {
	subject := w.subject(msg)
	cartID, typ, _ := w.cfg.Subjects.ParseCommand(subject)
	if !command.ValidCartID(cartID) {
		cartID = command.UnknownCartID
	}
	if !command.Type(typ).Valid() {
		typ = "unknown"
	}
	dl := &nats.Msg{
		Subject: w.cfg.Subjects.DeadLetter(cartID, typ),
		Data:    msg.Data(),
		Header:  nats.Header{},
	}
	for k, v := range msg.Headers() {
		// JetStream's own headers (Nats-Expected-Stream and friends) are
		// instructions for the original publish; on the copy they would
		// make CART_DLQ refuse it.
		if !strings.HasPrefix(k, "Nats-") {
			dl.Header[k] = v
		}
	}
	// The dead letter continues the delivery's trace.
	telemetry.Inject(ctx, dl.Header)
	dl.Header.Set(command.HeaderDLQCode, code)
	dl.Header.Set(command.HeaderDLQReason, truncate(reason, 512))
	dl.Header.Set(command.HeaderDLQSubject, subject)
	dl.Header.Set(command.HeaderDLQDeliveries, strconv.FormatUint(md.NumDelivered, 10))
	if id := msg.Headers().Get(command.HeaderMsgID); id != "" {
		dl.Header.Set(command.HeaderDLQMsgID, id)
	}
	// Keyed on the stream sequence so that a retried dead-lettering is
	// stored once.
	dl.Header.Set(command.HeaderMsgID, "dlq-"+strconv.FormatUint(md.Sequence.Stream, 10))
	dl.Header.Set(command.HeaderDLQSequence, strconv.FormatUint(md.Sequence.Stream, 10))
	if cmdID == "" {
		cmdID = msg.Headers().Get(command.HeaderMsgID)
	}

	if err := w.storeDeadLetter(ctx, dl); err != nil {
		w.log.Error("dead letter not stored, will retry",
			"subject", subject, "cart_id", cartID, "command_id", cmdID, "code", code, "err", err)
		w.settle(msg, msg.NakWithDelay(deadLetterRetryDelay), "nak")
		return LabelRetry
	}
	w.cfg.Observer.DeadLettered()
	w.log.Warn("command dead-lettered",
		"subject", subject, "cart_id", cartID, "command_id", cmdID, "dlq_subject", dl.Subject,
		"code", code, "reason", reason, "delivery", md.NumDelivered)

	if cartID != command.UnknownCartID {
		ev := command.Event{
			CommandID: cmdID, Type: command.Type(typ), CartID: cartID,
			Outcome: command.OutcomeRejected, Error: &command.EventError{Code: code, Message: reason},
		}
		// The dead letter is stored; a lost event must not resurrect the
		// command, so a failure here is only logged.
		if err := w.emit(ctx, ev); err != nil {
			w.log.Warn("rejected event not sent", "subject", subject, "err", err)
		}
	}
	w.settle(msg, msg.TermWithReason(code), "term")
	return LabelDeadLetter
}

// storeDeadLetter publishes dl to the dead-letter stream. A dead letter must
// always fit: when the copy is too large for the server or the stream (the
// added headers can push a body near the limit over it), the body is left
// out, and then the copied headers too, with a header saying so. The
// original stays readable in CART_COMMANDS at HeaderDLQSequence.
func (w *Worker) storeDeadLetter(ctx context.Context, dl *nats.Msg) error {
	_, err := w.js.PublishMsg(ctx, dl)
	if !tooLarge(err) {
		return err
	}
	omitted := strconv.Itoa(len(dl.Data)) + " bytes"
	dl.Data = nil
	dl.Header.Set(command.HeaderDLQBodyOmitted, omitted)
	if _, err = w.js.PublishMsg(ctx, dl); !tooLarge(err) {
		return err
	}
	for k := range dl.Header {
		if !strings.HasPrefix(k, "Cartworker-") && k != command.HeaderMsgID && !telemetry.IsTraceHeader(k) {
			delete(dl.Header, k)
		}
	}
	dl.Header.Set(command.HeaderDLQBodyOmitted, omitted+", and the original headers")
	_, err = w.js.PublishMsg(ctx, dl)
	return err
}

// tooLarge reports whether a publish failed only because of its size.
func tooLarge(err error) bool {
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum)
}

// emit publishes ev with the trace context of ctx.
func (w *Worker) emit(ctx context.Context, ev command.Event) error {
	b, err := command.MarshalEvent(ev)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: w.cfg.Subjects.Event(ev.CartID, ev.Outcome), Data: b, Header: telemetry.Header(ctx)}
	if err := w.pub.PublishMsg(msg); err != nil {
		return fmt.Errorf("publish %s event: %w", ev.Outcome, err)
	}
	return nil
}

// settle reports a failed ack/nak/term. There is nothing else to do: the
// server redelivers after AckWait, and the applied-id list absorbs it.
func (w *Worker) settle(msg jetstream.Msg, err error, what string) {
	if err != nil {
		w.log.Warn(what+" failed", "subject", w.subject(msg), "err", err)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// subject is the subject msg's command was published on: JetStream stores
// a partitioned command under its partition's subject.
func (w *Worker) subject(msg jetstream.Msg) string {
	return w.cfg.Subjects.Published(msg.Subject())
}
