package consumer

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/ownership"
	"github.com/cartworker/cartworker/internal/statepool"
)

// delivery is one message of a batch on its way through handleBatch.
type delivery struct {
	msg jetstream.Msg
	md  *jetstream.MsgMetadata
	cmd command.Command
	// typ is the command type for metrics, or "unknown".
	typ string
	// outcome is the metric label once the delivery is settled, "" before.
	outcome string
	// span is the delivery's consumer span (trace.go).
	span trace.Span
	// grant is the partition grant the message was pulled under.
	grant ownership.Grant
}

// handleGroup takes the deliveries of one or more carts, each cart's in
// stream order, through decoding (command.Decode) and one apply of every
// cart's valid commands together (the Applier, held while the environment
// is at fault or retried after a transient failure); conclude, in fate.go,
// then decides what becomes of each delivery, in its cart's order, as soon
// as its cart is done.
func (w *Worker) handleGroup(r *run, batches [][]jetstream.Msg) {
	start := time.Now()
	all := make([][]*delivery, len(batches))
	defer func() {
		for _, ds := range all {
			for _, d := range ds {
				w.cfg.Observer.CommandDone(d.typ, cmp.Or(d.outcome, LabelRetry), time.Since(start))
				w.endDelivery(d, len(ds), cmp.Or(d.outcome, LabelRetry))
			}
		}
	}()
	var valid [][]*delivery
	for i, msgs := range batches {
		all[i] = w.decodeBatch(r, msgs)
		var v []*delivery
		for _, d := range all[i] {
			if d.outcome == "" {
				v = append(v, d)
			}
		}
		if len(v) > 0 {
			valid = append(valid, v)
		}
	}
	if len(valid) == 0 {
		return
	}
	w.apply(r, valid, func(i int, outs []cartcache.Outcome, err error) {
		for j, d := range valid[i] {
			res, derr := cartcache.Result{}, err
			if err == nil {
				res, derr = outs[j].Result, outs[j].Err
			}
			d.outcome = w.conclude(r, d, res, derr)
		}
	})
}

// decodeBatch decodes one cart's deliveries, in order, and settles at once
// those that are no valid command: they never change their cart, so
// settling them before the valid ones around them keeps order. The valid
// ones are left with no outcome.
func (w *Worker) decodeBatch(r *run, msgs []jetstream.Msg) []*delivery {
	ds := make([]*delivery, 0, len(msgs))
	for _, msg := range msgs {
		d := &delivery{msg: msg, typ: "unknown", span: w.startDelivery(msg), grant: grantOf(msg)}
		ds = append(ds, d)
		subject := w.subject(msg)
		md, err := msg.Metadata()
		if err != nil {
			// Not a JetStream message: nothing to ack, redeliver or
			// terminate, and no stream sequence to dead-letter it under.
			// The log line is all that is left of it.
			w.log.Warn("message without metadata dropped", "subject", subject, "err", err)
			d.outcome = LabelInvalid
			continue
		}
		d.md = md
		if md.NumDelivered > 1 {
			w.cfg.Observer.Redelivered()
		}
		if r.work.Err() != nil {
			// Shutdown began before the command was looked at.
			d.outcome = w.conclude(r, d, cartcache.Result{}, errPaused)
			continue
		}
		d.cmd, err = w.cfg.Subjects.Decode(subject, msg.Data())
		if _, subjType, _ := w.cfg.Subjects.ParseCommand(subject); command.Type(subjType).Valid() {
			d.typ = subjType
		}
		if err != nil {
			var inv *command.InvalidError
			if !errors.As(err, &inv) {
				err = &command.InvalidError{Code: command.CodeMalformedJSON, Reason: err.Error()}
			}
			// A publisher waits for the event under the body's id: use it
			// whenever the body has one to read.
			if d.cmd.ID == "" {
				d.cmd.ID = bodyID(msg.Data())
			}
			d.outcome = w.conclude(r, d, cartcache.Result{}, err)
			continue
		}
		if err := w.exhaustedBefore(r, msg, md); err != nil {
			d.outcome = w.conclude(r, d, cartcache.Result{}, err)
		}
	}
	return ds
}

// exhaustedBefore returns an exhaustedError for a replayed command (one a
// rewind delivers again) that was dead-lettered as max_deliveries before,
// so that it is dead-lettered again rather than applied: a replay gets the
// outcome it had. Only replays are looked up, so a first delivery costs
// nothing; a count that cannot be read lets the command through, as
// countFailure does.
func (w *Worker) exhaustedBefore(r *run, msg jetstream.Msg, md *jetstream.MsgMetadata) error {
	if in, ok := msg.(*inbound); !ok || !in.replay || r.failures.kv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(r.work, settleTimeout)
	defer cancel()
	failed, err := r.failures.count(ctx, md.Sequence.Stream)
	if err != nil || failed < w.cfg.MaxDeliver {
		return nil
	}
	return &exhaustedError{err: errors.New("dead-lettered before, replayed by a rewind"), failed: failed}
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
	// errLapsed: the partition's lease may have lapsed, or was lost, since
	// the command was pulled. Another instance may own the partition now
	// and replays it from its ack floor.
	errLapsed = errors.New("the partition's lease lapsed: dropping the command for its next holder")
)

// apply applies the commands of carts, each cart's deliveries in order, in
// one read-modify-write per cart and one call to the Applier for them all,
// and calls settle with each cart's outcomes, or its error, as soon as that
// cart is done. It holds the carts while the environment is at fault: they
// are tried again once the gate reopens, and handed back for another
// instance if this one stays not ready for handBackAfter. Neither counts as
// a failure, so a wrong token, a missing store, an absent sidecar or an open
// breaker never brings a command closer to a dead letter.
//
// A transient failure of a cart is counted against each of its commands
// and retried here, after a backoff, rather than Nak'ed: the cart's later
// commands, already held by this instance, must not overtake them. Once a
// command has failed MaxDeliver times, its cart settles with an error that
// fate dead-letters as max_deliveries.
//
// Each attempt applies only the carts whose partition grant still holds,
// and the store refuses a cart last written under a later grant: a cart
// settles with errLapsed or cartcache.ErrFenced then, and its commands are
// dropped unsettled for the partition's next holder.
func (w *Worker) apply(r *run, carts [][]*delivery, settle func(i int, outs []cartcache.Outcome, err error)) {
	cmds := make([][]command.Command, len(carts))
	pending := make([]int, len(carts))
	for i, ds := range carts {
		pending[i] = i
		cmds[i] = make([]command.Command, len(ds))
		for j, d := range ds {
			cmds[i][j] = d.cmd
		}
	}
	settleAll := func(err error) {
		for _, i := range pending {
			settle(i, nil, err)
		}
	}
	for attempt := 1; ; attempt++ {
		if err := w.gate.waitOrHandBack(r.stop); err != nil {
			settleAll(err)
			return
		}
		pending = w.heldCarts(r, carts, pending, settle)
		if len(pending) == 0 {
			return
		}
		start := time.Now()
		w.cfg.Observer.Apply(len(pending))
		results := w.applyCarts(r.work, carts, cmds, pending)
		var held error
		most, next := 0, make([]int, 0, len(pending))
		for k, i := range pending {
			failed, fault := w.judge(r, carts[i], results[k], attempt, start, func(outs []cartcache.Outcome, err error) {
				settle(i, outs, err)
			})
			switch {
			case failed < 0:
				continue
			case fault != nil:
				held = fault
			default:
				most = max(most, failed)
			}
			next = append(next, i)
		}
		pending = next
		switch {
		case len(pending) == 0:
			return
		case held != nil:
			// The gate holds every cart left until the environment is
			// back; a transient failure among them waits for it too.
			w.gate.fail(held)
		case !sleepCtx(r.stop, w.backoff(most)):
			settleAll(errPaused)
			return
		}
	}
}

// judge settles what one attempt made of cart ds, or reports that the cart
// must be tried again: held by fault, a fault of the environment, or after
// a transient failure, the failed-th of its commands. failed is -1 once the
// cart is settled.
//
// A transient failure is that of the cart's read-modify-write, or of one of
// its steps (the steps before and after it applied): either way the cart is
// tried again in place, its applied steps then reading as duplicates, until
// its failing commands have failed MaxDeliver times.
func (w *Worker) judge(r *run, ds []*delivery, res cartcache.CartResult, attempt int, start time.Time,
	settle func([]cartcache.Outcome, error)) (failed int, fault error) {
	err, failing := res.Err, ds
	if err == nil {
		if failing, err = transientSteps(ds, res.Outcomes); err == nil || r.work.Err() != nil {
			// Shutdown cut a failing step short: fate Naks it.
			w.cfg.Observer.Batch(len(ds))
			settle(res.Outcomes, nil)
			return -1, nil
		}
	}
	switch {
	case r.work.Err() != nil:
		settle(nil, err)
		return -1, nil
	case environmentFault(err), errors.Is(err, breaker.ErrOpen):
		label := LabelNotReady
		if errors.Is(err, breaker.ErrOpen) {
			label = LabelBreakerOpen
		}
		for _, d := range ds {
			w.cfg.Observer.CommandDone(d.typ, label, time.Since(start))
		}
		return 0, err
	case decide(err, false).fate != fateRetry:
		settle(nil, err)
		return -1, nil
	}
	failed = w.countFailure(r, failing, attempt)
	if failed >= w.cfg.MaxDeliver {
		exhausted := &exhaustedError{err: err, failed: failed}
		if res.Err != nil {
			settle(nil, exhausted)
			return -1, nil
		}
		outs := slices.Clone(res.Outcomes)
		for j := range outs {
			if outs[j].Err != nil && decide(outs[j].Err, false).fate == fateRetry {
				outs[j].Err = exhausted
			}
		}
		settle(outs, nil)
		return -1, nil
	}
	w.log.Warn("command failed, will retry in place",
		"subject", w.subject(failing[0].msg), "cart_id", failing[0].cmd.CartID, "command_id", failing[0].cmd.ID, "batch", len(ds),
		"failures", failed, "retry_in", w.backoff(failed), "err", err)
	for _, d := range ds {
		w.cfg.Observer.CommandDone(d.typ, LabelRetry, time.Since(start))
	}
	return failed, nil
}

// transientSteps returns the first transient error among a cart's step
// outcomes, with the deliveries that failed transiently, or nil.
func transientSteps(ds []*delivery, outs []cartcache.Outcome) ([]*delivery, error) {
	var first error
	var failing []*delivery
	for j, o := range outs {
		if o.Err != nil && decide(o.Err, false).fate == fateRetry {
			first = cmp.Or(first, o.Err)
			failing = append(failing, ds[j])
		}
	}
	return failing, first
}

// heldCarts returns the carts at pending whose partition grant still holds,
// and settles the others with errLapsed.
func (w *Worker) heldCarts(r *run, carts [][]*delivery, pending []int, settle func(int, []cartcache.Outcome, error)) []int {
	held := pending[:0:0]
	for _, i := range pending {
		if r.owner.Holds(carts[i][0].grant) {
			held = append(held, i)
			continue
		}
		settle(i, nil, errLapsed)
	}
	return held
}

// countFailure records one more transient failure of every delivery, the
// attempt-th in this hold, and returns the most any of them has had.
// Without the shared count, JetStream's delivery count plus the attempts
// here is the closest bound: never retry forever.
func (w *Worker) countFailure(r *run, ds []*delivery, attempt int) int {
	// The work context may be cancelled already; the count must still get
	// out.
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	most := 0
	for _, d := range ds {
		failed, err := r.failures.add(ctx, d.md.Sequence.Stream)
		if err != nil {
			failed = int(d.md.NumDelivered) - 1 + attempt
			w.log.Warn("failure count not stored; counting deliveries", "subject", w.subject(d.msg), "err", err)
		}
		most = max(most, failed)
	}
	return most
}

// environmentFault reports whether err is the fault of the instance's own
// configuration or surroundings rather than the command's: daprd refused our
// token, has no such store, or cannot be reached.
func environmentFault(err error) bool {
	return errors.Is(err, statepool.ErrUnauthorized) ||
		errors.Is(err, statepool.ErrStoreNotFound) ||
		errors.Is(err, statepool.ErrUnreachable)
}
