package consumer

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/cartcache"
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
		d := &delivery{msg: msg, typ: "unknown", span: w.startDelivery(msg)}
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
		}
	}
	return ds
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
		start := time.Now()
		w.cfg.Observer.Apply(len(pending))
		results := w.applyCarts(r.work, carts, cmds, pending)
		var held error
		most, next := 0, make([]int, 0, len(pending))
		for k, i := range pending {
			err := results[k].Err
			if err == nil {
				w.cfg.Observer.Batch(len(cmds[i]))
				settle(i, results[k].Outcomes, nil)
				continue
			}
			if r.work.Err() != nil {
				settle(i, nil, err)
				continue
			}
			label := ""
			switch {
			case environmentFault(err):
				label = LabelNotReady
			case errors.Is(err, breaker.ErrOpen):
				label = LabelBreakerOpen
			}
			if label != "" {
				for _, d := range carts[i] {
					w.cfg.Observer.CommandDone(d.typ, label, time.Since(start))
				}
				held = err
				next = append(next, i)
				continue
			}
			if decide(err, false).fate != fateRetry {
				settle(i, nil, err)
				continue
			}
			failed := w.countFailure(r, carts[i], attempt)
			if failed >= w.cfg.MaxDeliver {
				settle(i, nil, &exhaustedError{err: err, failed: failed})
				continue
			}
			ds := carts[i]
			w.log.Warn("command failed, will retry",
				"subject", w.subject(ds[0].msg), "cart_id", ds[0].cmd.CartID, "command_id", ds[0].cmd.ID, "batch", len(ds),
				"failures", failed, "retry_in", w.backoff(uint64(failed)), "err", err)
			for _, d := range ds {
				w.cfg.Observer.CommandDone(d.typ, LabelRetry, time.Since(start))
			}
			most = max(most, failed)
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
		case !sleepCtx(r.stop, w.backoff(uint64(most))):
			settleAll(errPaused)
			return
		}
	}
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
