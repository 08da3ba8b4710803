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
)

// delivery is one message of a batch on its way through handle.
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
	// started is when handle began; applied when its cart's apply
	// returned (Observer.Acked).
	started, applied time.Time
}

// handle is the pool's handler: it takes the batches of one or more carts,
// each cart's in stream order, through decoding (decode) and one apply of
// every cart's valid commands together (apply, which holds them while the
// environment is at fault and retries them after a transient failure, and
// settles each cart as soon as it is done). Then it lets go of their
// messages, settled or dropped: they leave the metrics' in-flight count,
// the heartbeats and their partition's count of what this instance holds.
func (w *Worker) handle(r *run, batches [][]jetstream.Msg) {
	start := time.Now()
	var valid [][]*delivery
	all := make([][]*delivery, len(batches))
	for i, msgs := range batches {
		all[i] = w.decode(r, msgs, start)
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
	if len(valid) > 0 {
		w.apply(r, valid)
	}
	for _, ds := range all {
		w.cfg.Observer.InFlight(-len(ds))
		for _, d := range ds {
			w.cfg.Observer.CommandDone(d.typ, cmp.Or(d.outcome, LabelRetry), time.Since(start))
			w.endDelivery(d, len(ds), cmp.Or(d.outcome, LabelRetry))
			r.beats.remove(d.msg)
			if d.grant.Partition >= 0 {
				r.owner.Settled(d.grant.Partition)
			}
		}
	}
}

// decode decodes one cart's deliveries, which handle began at start, in
// order, and settles at once those that are no valid command: they never
// change their cart, so settling them before the valid ones around them
// keeps order. The valid ones are left with no outcome.
func (w *Worker) decode(r *run, msgs []jetstream.Msg, start time.Time) []*delivery {
	ds := make([]*delivery, 0, len(msgs))
	for _, msg := range msgs {
		d := &delivery{msg: msg, typ: "unknown", span: w.startDelivery(msg), grant: grantOf(msg), started: start}
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
// and settles each cart (judge, settleCart) as soon as it is done. It
// holds the carts while the environment is at fault: they are tried again
// once the gate reopens, and handed back for another instance if this one
// stays not ready for handBackAfter. Neither counts as a failure, so a
// wrong token, a missing store, an absent sidecar or an open breaker never
// brings a command closer to a dead letter.
//
// A transient failure is counted against each command it failed (every
// command of a cart whose read-modify-write failed, or the one whose step
// failed) and retried here, in place, after the retry policy's delay
// (retry.go), rather than Nak'ed: the cart's later commands, already held
// by this instance, must not overtake them. Once the policy gives up, the
// cart settles with an exhaustedError, which fate dead-letters as
// max_deliveries.
//
// Each attempt applies only the carts whose partition grant still holds,
// and the store refuses a cart last written under a later grant: a cart
// settles with errLapsed or cartcache.ErrFenced then, and its commands are
// dropped unsettled for the partition's next holder.
func (w *Worker) apply(r *run, carts [][]*delivery) {
	cmds := make([][]command.Command, len(carts))
	pending := make([]int, len(carts))
	for i, ds := range carts {
		pending[i] = i
		cmds[i] = make([]command.Command, len(ds))
		for j, d := range ds {
			cmds[i][j] = d.cmd
		}
	}
	for attempt := 1; ; attempt++ {
		if err := w.gate.waitOrHandBack(r.stop); err != nil {
			w.settleCarts(r, carts, pending, err)
			return
		}
		if pending = w.heldCarts(r, carts, pending); len(pending) == 0 {
			return
		}
		// One call for every cart left, fenced by each cart's partition
		// grant, traced as one apply span (trace.go).
		batches := make([]cartcache.CartBatch, len(pending))
		for k, i := range pending {
			batches[k] = cartcache.CartBatch{CartID: cmds[i][0].CartID, Cmds: cmds[i], Epoch: epochOf(carts[i][0].grant)}
		}
		w.cfg.Observer.Apply(len(pending))
		start := time.Now()
		ctx, end := w.startApply(r.work, carts, pending)
		results := w.app.ApplyCarts(ctx, batches)
		end(results)
		applied := time.Now()
		// Settle each cart that is done; judge the others: settled, or
		// tried again once the longest delay the retry policy asks for has
		// passed, or once the environment fault that holds them is gone.
		var delay time.Duration
		var fault error
		again := make([]int, 0, len(pending))
		for k, i := range pending {
			res, ds := results[k], carts[i]
			for _, d := range ds {
				d.applied = applied
			}
			failing, err := ds, res.Err
			if err == nil {
				failing, err = transientSteps(ds, res.Outcomes)
			}
			if err == nil || (res.Err == nil && r.work.Err() != nil) {
				// Done, or shutdown cut a failing step short: fate Naks it.
				w.cfg.Observer.Batch(len(ds))
				w.settleCart(r, ds, res.Outcomes, nil)
				continue
			}
			retry, wait, held := w.judge(r, ds, failing, res, err, attempt, start)
			if retry {
				again = append(again, i)
				delay, fault = max(delay, wait), cmp.Or(held, fault)
			}
		}
		switch pending = again; {
		case len(pending) == 0:
			return
		case fault != nil:
			// The gate holds every cart left until the environment is
			// back; a transient failure among them waits for it too.
			w.gate.fail(fault)
		case !sleepCtx(r.stop, delay):
			w.settleCarts(r, carts, pending, errPaused)
			return
		}
	}
}

// judge settles cart ds, whose attempt failed with err (res.Err, or the
// first transient failure of its failing steps), or reports that the cart
// must be tried again (retry): once delay has passed after a transient
// failure, or once fault, the fault of the environment that holds it, is
// gone.
//
// A transient failure is that of the cart's read-modify-write, or of one of
// its steps (the steps before and after it applied): either way the cart is
// tried again in place, its applied steps then reading as duplicates, until
// the retry policy gives up on its failing commands.
func (w *Worker) judge(r *run, ds, failing []*delivery, res cartcache.CartResult, err error, attempt int, start time.Time) (
	retry bool, delay time.Duration, fault error) {
	switch {
	case r.work.Err() != nil:
		w.settleCart(r, ds, nil, err)
		return false, 0, nil
	case EnvironmentFault(err), errors.Is(err, breaker.ErrOpen):
		label := LabelNotReady
		if errors.Is(err, breaker.ErrOpen) {
			label = LabelBreakerOpen
		}
		for _, d := range ds {
			w.cfg.Observer.CommandDone(d.typ, label, time.Since(start))
		}
		return true, 0, err
	case !transient(err):
		w.settleCart(r, ds, nil, err)
		return false, 0, nil
	}
	failed := w.countFailure(r, failing, attempt)
	delay, gaveUp := w.afterFailure(failure{step: stepApply, d: failing[0], batch: len(ds), n: failed, err: err})
	if gaveUp != nil {
		outs, cause := givenUp(res, gaveUp)
		w.settleCart(r, ds, outs, cause)
		return false, 0, nil
	}
	for _, d := range ds {
		w.cfg.Observer.CommandDone(d.typ, LabelRetry, time.Since(start))
	}
	return true, delay, nil
}

// transientSteps returns the first transient error among a cart's step
// outcomes, with the deliveries that failed transiently, or nil.
func transientSteps(ds []*delivery, outs []cartcache.Outcome) ([]*delivery, error) {
	var first error
	var failing []*delivery
	for j, o := range outs {
		if transient(o.Err) {
			first = cmp.Or(first, o.Err)
			failing = append(failing, ds[j])
		}
	}
	return failing, first
}

// givenUp is what a cart settles with once the retry policy gave up on it
// with err: err for the whole cart when its read-modify-write failed, else
// its step outcomes, each transient failure among them replaced by err.
func givenUp(res cartcache.CartResult, err error) ([]cartcache.Outcome, error) {
	if res.Err != nil {
		return nil, err
	}
	outs := slices.Clone(res.Outcomes)
	for j := range outs {
		if transient(outs[j].Err) {
			outs[j].Err = err
		}
	}
	return outs, nil
}

// heldCarts returns the carts at pending whose partition grant still holds,
// and settles the others with errLapsed.
func (w *Worker) heldCarts(r *run, carts [][]*delivery, pending []int) []int {
	held := pending[:0:0]
	for _, i := range pending {
		if r.owner.Holds(carts[i][0].grant) {
			held = append(held, i)
			continue
		}
		w.settleCart(r, carts[i], nil, errLapsed)
	}
	return held
}

// settleCarts settles every cart at pending with err.
func (w *Worker) settleCarts(r *run, carts [][]*delivery, pending []int, err error) {
	for _, i := range pending {
		w.settleCart(r, carts[i], nil, err)
	}
}

// settleCart concludes (fate.go) each of a cart's deliveries ds, in order,
// from what its apply made of them: outs, an outcome per delivery, or err
// for the whole cart.
func (w *Worker) settleCart(r *run, ds []*delivery, outs []cartcache.Outcome, err error) {
	for j, d := range ds {
		res, derr := cartcache.Result{}, err
		if err == nil {
			res, derr = outs[j].Result, outs[j].Err
		}
		d.outcome = w.conclude(r, d, res, derr)
	}
}
