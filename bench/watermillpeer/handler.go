package main

import (
	"errors"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/statepool"
)

// metaSubject is the metadata key of the subject a command was published on.
const metaSubject = "cart-subject"

// subjectUnmarshaler is watermill-nats' NATSMarshaler, which turns headers
// into metadata, plus the subject the command was published on (the stream
// stores it partitioned): the subject names the cart and the type, which
// command.Decode checks against the body.
type subjectUnmarshaler struct {
	wmnats.NATSMarshaler
	subjects command.Subjects
}

func (u subjectUnmarshaler) Unmarshal(m *nats.Msg) (*message.Message, error) {
	msg, err := u.NATSMarshaler.Unmarshal(m)
	if err != nil {
		return nil, err
	}
	if msg.UUID == "" {
		msg.UUID = m.Header.Get(nats.MsgIdHdr)
	}
	msg.Metadata.Set(metaSubject, u.subjects.Published(m.Subject))
	return msg, nil
}

// handler applies one command per call.
type handler struct {
	carts    *cartcache.Carts
	subjects command.Subjects
	pub      message.Publisher
}

// handle is the router's handler: nil acks the message, an error is
// retried by the Retry middleware and then Nack'ed. Only transient failures
// (the state store, an event that could not be sent) are errors; a command
// that can never apply is answered with a rejected event and acked.
func (h *handler) handle(msg *message.Message) error {
	cmd, err := h.subjects.Decode(msg.Metadata.Get(metaSubject), msg.Payload)
	if err != nil {
		var inv *command.InvalidError
		code := command.CodeMalformedJSON
		if errors.As(err, &inv) {
			code = inv.Code
		}
		if cmd.CartID == "" || !command.ValidCartID(cmd.CartID) {
			// No cart to answer on: drop it, as there is nowhere to send
			// the rejection.
			return nil
		}
		return h.emit(rejected(cmd, code, err))
	}
	res, err := h.carts.Apply(msg.Context(), cmd)
	if err != nil {
		if code := rejection(err); code != "" {
			return h.emit(rejected(cmd, code, err))
		}
		return err
	}
	return h.emit(command.Event{
		CommandID: cmd.ID, Type: cmd.Type, CartID: cmd.CartID,
		Outcome: command.OutcomeApplied, Duplicate: res.Duplicate,
	})
}

// rejection is the event code of an error no retry changes, "" for a
// transient one.
func rejection(err error) string {
	for _, r := range []struct {
		err  error
		code string
	}{
		{cart.ErrCartNotFound, command.CodeCartNotFound},
		{cart.ErrInvalidState, command.CodeInvalidState},
		{cart.ErrUnknownTaxCode, command.CodeUnknownTaxCode},
		{cart.ErrAmountOverflow, command.CodeAmountOverflow},
		{cart.ErrCartTooLarge, command.CodeCartTooLarge},
		{cart.ErrInvalidCart, command.CodeInvalidCart},
		{cart.ErrUnknownType, command.CodeUnknownType},
		{statepool.ErrBadRequest, command.CodeStateRejected},
	} {
		if errors.Is(err, r.err) {
			return r.code
		}
	}
	return ""
}

func rejected(cmd command.Command, code string, err error) command.Event {
	return command.Event{
		CommandID: cmd.ID, Type: cmd.Type, CartID: cmd.CartID, Outcome: command.OutcomeRejected,
		Error: &command.EventError{Code: code, Message: err.Error()},
	}
}

// emit publishes an outcome event on cart.evt.<cart>.<outcome>.
func (h *handler) emit(ev command.Event) error {
	b, err := command.MarshalEvent(ev)
	if err != nil {
		return err
	}
	return h.pub.Publish(h.subjects.Event(ev.CartID, ev.Outcome), message.NewMessage(watermill.NewUUID(), b))
}
