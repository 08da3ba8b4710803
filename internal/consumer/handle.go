package consumer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/statepool"
)

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

// handle decides the fate of one delivery. It is the only place where errors
// from decoding and applying a command are handled.
func (w *Worker) handle(r *run, msg jetstream.Msg) {
	ctx := r.work
	start := time.Now()
	typ, outcome := "unknown", LabelRetry
	defer func() { w.cfg.Observer.CommandDone(typ, outcome, time.Since(start)) }()

	subject := w.subject(msg)
	md, err := msg.Metadata()
	if err != nil {
		// Not a JetStream message: nothing to ack, redeliver or terminate,
		// and no stream sequence to dead-letter it under. The log line is
		// all that is left of it.
		w.log.Warn("message without metadata dropped", "subject", subject, "err", err)
		outcome = LabelInvalid
		return
	}
	if md.NumDelivered > 1 {
		w.cfg.Observer.Redelivered()
	}
	if ctx.Err() != nil {
		outcome = LabelShutdown
		w.settle(msg, msg.Nak(), "nak")
		return
	}

	cmd, err := w.cfg.Subjects.Decode(subject, msg.Data())
	if err != nil {
		var inv *command.InvalidError
		if !errors.As(err, &inv) {
			inv = &command.InvalidError{Code: command.CodeMalformedJSON, Reason: err.Error()}
		}
		_, subjType, _ := w.cfg.Subjects.ParseCommand(subject)
		if command.Type(subjType).Valid() {
			typ = subjType
		}
		// A publisher waits for the event under the body's id: use it
		// whenever the body has one to read.
		id := cmd.ID
		if id == "" {
			id = bodyID(msg.Data())
		}
		outcome = w.deadLetter(ctx, msg, md, id, inv.Code, inv.Reason)
		return
	}
	typ = string(cmd.Type)

	res, err := w.apply(r, cmd, typ)
	switch {
	case err == nil:
		outcome = LabelApplied
		if res.Duplicate {
			outcome = LabelDuplicate
		}
		ev := command.Event{CommandID: cmd.ID, Type: cmd.Type, CartID: cmd.CartID, Outcome: command.OutcomeApplied, Duplicate: res.Duplicate}
		if err := w.emit(ev); err != nil {
			outcome = w.retry(r, msg, md, cmd.ID, err)
			return
		}
		w.settle(msg, msg.Ack(), "ack")

	case errors.Is(err, cartcache.ErrCartNotFound):
		outcome = w.reject(r, msg, md, cmd, command.CodeCartNotFound, err)
	case errors.Is(err, cartcache.ErrInvalidState):
		outcome = w.reject(r, msg, md, cmd, command.CodeInvalidState, err)
	case errors.Is(err, cartcache.ErrUnknownTaxCode):
		outcome = w.reject(r, msg, md, cmd, command.CodeUnknownTaxCode, err)
	case errors.Is(err, cartcache.ErrAmountOverflow):
		outcome = w.reject(r, msg, md, cmd, command.CodeAmountOverflow, err)
	case errors.Is(err, cartcache.ErrInvalidCart):
		outcome = w.deadLetter(ctx, msg, md, cmd.ID, command.CodeInvalidCart, err.Error())
	case errors.Is(err, cartcache.ErrUnknownType):
		// Decode refuses unknown types, so only an Applier that knows fewer
		// types than command does gets here; no retry teaches it more.
		outcome = w.deadLetter(ctx, msg, md, cmd.ID, command.CodeUnknownType, err.Error())
	case errors.Is(err, statepool.ErrBadRequest):
		// Dapr refused what this command produced: no retry can change it.
		outcome = w.deadLetter(ctx, msg, md, cmd.ID, command.CodeStateRejected, err.Error())

	case errors.Is(err, errPaused):
		// Shutdown began while the command waited for its environment.
		outcome = LabelShutdown
		w.settle(msg, msg.Nak(), "nak")
	case errors.Is(err, errHandBack):
		// This instance is not ready: let a healthy one have it now. No
		// failure is counted, so the Nak costs the command nothing.
		outcome = LabelNotReady
		w.settle(msg, msg.Nak(), "nak")

	case ctx.Err() != nil:
		// Shutdown ran out of time mid-command; another delivery will
		// finish it, and the applied-id list makes that safe.
		outcome = LabelShutdown
		w.settle(msg, msg.Nak(), "nak")

	default:
		outcome = w.retry(r, msg, md, cmd.ID, err)
	}
}

// bodyID returns the top-level "id" string of a command body that failed
// to decode, or "" when it has none to read. Decode gets to the id only when
// the body is valid JSON and the subject checks pass; a body refused before
// that, or malformed after its first value, may still name its command.
func bodyID(data []byte) string {
	if len(data) > command.MaxBodyBytes {
		// The limit exists so that such a body is never parsed.
		return ""
	}
	var v struct {
		ID string `json:"id"`
	}
	// Only the first JSON value is read, so trailing data does not hide the
	// id. The error does not matter: whatever was read of v is all there is.
	_ = json.NewDecoder(bytes.NewReader(data)).Decode(&v)
	return v.ID
}

// Errors of apply that are no outcome of the command itself.
var (
	// errPaused: shutdown began while the command waited for the gate.
	errPaused = errors.New("shutdown while waiting for the state store")
	// errHandBack: the instance stayed not ready for handBackAfter.
	errHandBack = errors.New("not ready: handing the command back")
)

// apply applies cmd, holding it while the environment is at fault: the
// command is tried again once the gate reopens, and handed back for another
// instance if this one stays not ready for handBackAfter. Neither counts as
// a failure, so a wrong token, a missing store, an absent sidecar or an open
// breaker never brings a command closer to a dead letter.
func (w *Worker) apply(r *run, cmd command.Command, typ string) (cartcache.Result, error) {
	for {
		if err := w.gate.waitOrHandBack(r.stop); err != nil {
			return cartcache.Result{}, err
		}
		start := time.Now()
		res, err := w.app.Apply(r.work, cmd)
		label := ""
		switch {
		case err == nil:
		case environmentFault(err):
			label = LabelNotReady
		case errors.Is(err, breaker.ErrOpen):
			label = LabelBreakerOpen
		}
		if label == "" || r.work.Err() != nil {
			return res, err
		}
		w.cfg.Observer.CommandDone(typ, label, time.Since(start))
		w.gate.fail(err)
	}
}

// environmentFault reports whether err is the fault of the instance's own
// configuration or surroundings rather than the command's: daprd refused our
// token, has no such store, or cannot be reached.
func environmentFault(err error) bool {
	return errors.Is(err, statepool.ErrUnauthorized) ||
		errors.Is(err, statepool.ErrStoreNotFound) ||
		errors.Is(err, statepool.ErrUnreachable)
}

// retry counts a transient failure of the command and Naks it with
// exponential backoff, or dead-letters it once it has failed MaxDeliver
// times.
func (w *Worker) retry(r *run, msg jetstream.Msg, md *jetstream.MsgMetadata, cmdID string, err error) string {
	// The work context may be cancelled already; the count and the dead
	// letter must still get out.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	failed, cerr := r.failures.add(ctx, md.Sequence.Stream)
	if cerr != nil {
		// Without the shared count, JetStream's delivery count is the
		// closest bound: never retry forever.
		failed = int(md.NumDelivered)
		w.log.Warn("failure count not stored; counting deliveries", "subject", w.subject(msg), "err", cerr)
	}
	if failed >= w.cfg.MaxDeliver {
		return w.deadLetter(ctx, msg, md, cmdID, command.CodeMaxDeliveries,
			fmt.Sprintf("failed %d times, last: %v", failed, err))
	}
	delay := w.backoff(uint64(failed))
	w.log.Warn("command failed, will retry",
		"subject", w.subject(msg), "command_id", cmdID, "failures", failed, "delivery", md.NumDelivered, "retry_in", delay, "err", err)
	w.settle(msg, msg.NakWithDelay(delay), "nak")
	return LabelRetry
}

// reject acks a valid command that the cart refuses and tells the publisher.
func (w *Worker) reject(r *run, msg jetstream.Msg, md *jetstream.MsgMetadata, cmd command.Command, code string, cause error) string {
	ev := command.Event{
		CommandID: cmd.ID, Type: cmd.Type, CartID: cmd.CartID, Outcome: command.OutcomeRejected,
		Error: &command.EventError{Code: code, Message: cause.Error()},
	}
	if err := w.emit(ev); err != nil {
		return w.retry(r, msg, md, cmd.ID, err)
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
		if err := w.emit(ev); err != nil {
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
		if !strings.HasPrefix(k, "Cartworker-") && k != command.HeaderMsgID {
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

func (w *Worker) emit(ev command.Event) error {
	b, err := command.MarshalEvent(ev)
	if err != nil {
		return err
	}
	if err := w.pub.Publish(w.cfg.Subjects.Event(ev.CartID, ev.Outcome), b); err != nil {
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
