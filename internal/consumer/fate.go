package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/internal/telemetry"
)

// This file decides the fate of every delivery: Ack, Nak, Term with a copy
// in the dead-letter stream, or nothing at all when the partition's grant
// lapsed. decide is the decision table; conclude and the functions below it
// carry a decision out. A publish that cannot be finished now (an event or
// a dead letter) is retried in place by inPlace, as the retry policy
// (retry.go) says, holding its cart's place.

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
	// LabelFenced: the partition's grant lapsed, or the cart was written
	// by the partition's newer holder, so the delivery was dropped
	// unsettled; the holder replays it from the partition's ack floor.
	LabelFenced = "fenced"
)

// fate is what becomes of a delivery.
type fate uint8

// The zero fate is none of them, so that a forgotten assignment never acks.
const (
	// fateAck: applied or a duplicate. Ack after the applied event.
	fateAck fate = iota + 1
	// fateReject: the cart refuses the command, which no retry changes.
	// Ack after the rejected event.
	fateReject
	// fateDeadLetter: the command can never be applied. Copy it to the
	// dead-letter stream, Term it, send the rejected event.
	fateDeadLetter
	// fateRetry: a transient failure (transient). apply, in handle.go,
	// counts it and retries it in place until the retry policy gives up
	// (retry.go), so it reaches conclude as an exhaustedError, which is a
	// fateDeadLetter. carryOut dead-letters one that gets there all the
	// same, as it does the zero fate: neither is ever acked.
	fateRetry
	// fateNak: not the command's doing (shutdown, or an instance that is
	// not ready handing it back). Nak at once; nothing is counted. The
	// partition is handed back then, and its next holder rewinds it.
	fateNak
	// fateDrop: the partition's grant lapsed or a newer holder wrote the
	// cart. Settle nothing: the partition's holder replays it in order.
	fateDrop
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
	{cart.ErrCartTooLarge, verdict{fate: fateReject, code: command.CodeCartTooLarge}},
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
	// Another instance holds the partition now.
	{errLapsed, verdict{fate: fateDrop, outcome: LabelFenced}},
	{cartcache.ErrFenced, verdict{fate: fateDrop, outcome: LabelFenced}},
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
	// A replay of a command the cart refused before: refused again, alike.
	var prior *cartcache.PriorRejection
	if errors.As(err, &prior) {
		return verdict{fate: fateReject, code: prior.Code}
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

// transient reports whether err is a transient failure, which decide
// leaves to the retry policy (retry.go).
func transient(err error) bool {
	return err != nil && decide(err, false).fate == fateRetry
}

// conclude decides the fate of a delivery whose decoding or apply returned
// res and err (decide), carries it out (carryOut) and returns its outcome
// label. d.cmd is what could be
// decoded. A delivery whose partition grant no longer holds is left
// unsettled, whatever its fate: an ack, a Nak or a Term of a stale holder
// could settle a command the partition's new holder has not applied yet.
func (w *Worker) conclude(r *run, d *delivery, res cartcache.Result, err error) string {
	if !r.owner.Holds(d.grant) {
		return LabelFenced
	}
	return w.carryOut(r, d, decide(err, r.work.Err() != nil), res, err)
}

// carryOut carries out verdict v of delivery d, whose decoding or apply
// returned res and err, and returns its outcome label.
func (w *Worker) carryOut(r *run, d *delivery, v verdict, res cartcache.Result, err error) string {
	switch v.fate {
	case fateAck:
		return w.ack(r, d, res.Duplicate)
	case fateReject:
		return w.reject(r, d, v.code, res.Duplicate, err)
	case fateDeadLetter:
		reason, md := err.Error(), d.md
		if inv := (*command.InvalidError)(nil); errors.As(err, &inv) {
			reason = inv.Reason
		}
		if ex := (*exhaustedError)(nil); errors.As(err, &ex) {
			// Retried in place, and maybe rewound, which restarts the
			// delivery count: the failure count is what it was tried.
			tried := *md
			tried.NumDelivered = uint64(ex.failed)
			md = &tried
		}
		return w.deadLetter(r, d, md, v.code, reason)
	case fateNak:
		w.settle(d.msg, d.msg.Nak(), "nak")
		return v.outcome
	case fateDrop:
		return v.outcome
	default:
		// fateRetry, or the zero fate of a verdict never assigned: the
		// cart rules failed in a way no row names. They are pure, so no
		// retry changes it, and an ack would lose the command.
		return w.deadLetter(r, d, d.md, command.CodeMaxDeliveries, fmt.Sprintf("the cart rules failed: %v", err))
	}
}

// ack acks an applied command (dup: applied before) after its applied
// event.
func (w *Worker) ack(r *run, d *delivery, dup bool) string {
	cmd := d.cmd
	ev := command.Event{CommandID: cmd.ID, Type: cmd.Type, CartID: cmd.CartID, Outcome: command.OutcomeApplied, Duplicate: dup}
	if err := w.inPlace(r, d, "outcome event", func() error { return w.emit(traced(r.work, d), ev) }); err != nil {
		return w.conclude(r, d, cartcache.Result{}, err)
	}
	w.settle(d.msg, d.msg.Ack(), "ack")
	w.cfg.Observer.Acked(stagesOf(d))
	if dup {
		return LabelDuplicate
	}
	return LabelApplied
}

// stagesOf is when d, acked now, passed each stage of its way.
func stagesOf(d *delivery) Stages {
	s := Stages{Stored: d.md.Timestamp, Started: d.started, Applied: d.applied, Acked: time.Now()}
	if in, ok := d.msg.(*inbound); ok {
		s.Fetched = in.taken
	}
	return s
}

// inPlace runs publish until it succeeds, waiting after each failure as
// the retry policy (afterFailure) says, so that the cart's later commands,
// queued behind d, keep their place. It stops only when d's grant lapses
// (errLapsed) or the work is cut off at shutdown (errPaused), and returns
// why; its caller concludes d with it, which leaves d for the partition's
// next holder or Naks it. A publish that fails is NATS's fault, not the
// command's: nothing is counted towards MaxDeliver.
func (w *Worker) inPlace(r *run, d *delivery, step string, publish func() error) error {
	for failures := 1; ; failures++ {
		err := publish()
		if err == nil {
			return nil
		}
		if !r.owner.Holds(d.grant) {
			return errLapsed
		}
		delay, err := w.afterFailure(failure{step: step, d: d, batch: 1, n: failures, err: err})
		if err != nil {
			return err
		}
		if !sleepCtx(r.work, delay) {
			return errPaused
		}
	}
}

// reject acks a valid command that the cart refuses and tells the
// publisher. A replay of a command refused before (dup) is refused alike,
// marked as a duplicate.
func (w *Worker) reject(r *run, d *delivery, code string, dup bool, cause error) string {
	msg, cmd := d.msg, d.cmd
	ev := command.Event{
		CommandID: cmd.ID, Type: cmd.Type, CartID: cmd.CartID, Outcome: command.OutcomeRejected, Duplicate: dup,
		Error: &command.EventError{Code: code, Message: cause.Error()},
	}
	if err := w.inPlace(r, d, "rejected event", func() error { return w.emit(traced(r.work, d), ev) }); err != nil {
		return w.conclude(r, d, cartcache.Result{}, err)
	}
	w.log.Info("command rejected", "cart_id", cmd.CartID, "command_id", cmd.ID, "type", cmd.Type, "code", code, "duplicate", dup, "err", cause)
	w.settle(msg, msg.Ack(), "ack")
	return LabelRejected
}

// deadLetter copies the message to the dead-letter stream, emits a rejected
// event when the subject names a valid cart, and terminates the original.
// A copy that cannot be stored is retried in place (inPlace): a command is
// never dropped without a dead letter, and never Nak'ed for later while its
// cart's later commands go on. The body's id names the command when it
// could be decoded; the Nats-Msg-Id header stands in otherwise. md is
// d's metadata, with the times it was tried.
func (w *Worker) deadLetter(r *run, d *delivery, md *jetstream.MsgMetadata, code, reason string) string {
	ctx, msg, cmdID := traced(r.work, d), d.msg, d.cmd.ID
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

	if err := w.inPlace(r, d, "dead letter", func() error { return w.storeDeadLetter(ctx, dl) }); err != nil {
		return w.conclude(r, d, cartcache.Result{}, err)
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
