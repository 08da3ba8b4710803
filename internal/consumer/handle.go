package consumer

import (
	"bytes"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/statepool"
)

// handle takes one delivery through decoding (command.Decode) and applying
// (the Applier, held while the environment is at fault); conclude, in
// fate.go, decides what becomes of it.
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
		// Shutdown began before the command was looked at.
		outcome = w.conclude(r, msg, md, command.Command{}, cartcache.Result{}, errPaused)
		return
	}

	cmd, err := w.cfg.Subjects.Decode(subject, msg.Data())
	if err != nil {
		var inv *command.InvalidError
		if !errors.As(err, &inv) {
			err = &command.InvalidError{Code: command.CodeMalformedJSON, Reason: err.Error()}
		}
		if _, subjType, _ := w.cfg.Subjects.ParseCommand(subject); command.Type(subjType).Valid() {
			typ = subjType
		}
		// A publisher waits for the event under the body's id: use it
		// whenever the body has one to read.
		if cmd.ID == "" {
			cmd.ID = bodyID(msg.Data())
		}
		outcome = w.conclude(r, msg, md, cmd, cartcache.Result{}, err)
		return
	}
	typ = string(cmd.Type)

	res, err := w.apply(r, cmd, typ)
	outcome = w.conclude(r, msg, md, cmd, res, err)
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
