package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"github.com/dapr/go-sdk/service/common"
	"google.golang.org/grpc/metadata"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/statepool"
)

// subjectKey is where pubsub.jetstream puts the subject a message was
// stored under: a metadata key of the message, which daprd passes on as a
// gRPC header (lower-cased) for a single event and as entry metadata in a
// bulk one. The subject names the cart and the type, which command.Decode
// checks against the body.
const subjectKey = "Topic"

// publisher sends an outcome event on core NATS; *nats.Conn is one.
type publisher interface {
	Publish(subject string, data []byte) error
}

// handler applies commands, one read-modify-write each.
type handler struct {
	carts    *cartcache.Carts
	subjects command.Subjects
	events   publisher
}

// apply handles the command stored under subject: it answers it with an
// outcome event, applied or rejected, or returns the transient error
// (daprd's state API, the event not sent) for it to come back later.
func (h *handler) apply(ctx context.Context, subject string, data []byte) error {
	published := h.subjects.Published(subject)
	cmd, err := h.subjects.Decode(published, data)
	if err != nil {
		return h.refuse(published, cmd, err)
	}
	res, err := h.carts.Apply(ctx, cmd)
	if err != nil {
		if code, final := finalCode(err); final {
			// A replay of a refused command is refused again, as a duplicate.
			return h.answer(cmd, res.Duplicate, code, err)
		}
		return err
	}
	return h.answer(cmd, res.Duplicate, "", nil)
}

// refuse answers a command that did not decode, on the cart and type its
// subject names, as the worker does; with no cart there, there is nowhere
// to answer.
func (h *handler) refuse(published string, cmd command.Command, err error) error {
	cartID, typ, _ := h.subjects.ParseCommand(published)
	if !command.ValidCartID(cartID) {
		return nil
	}
	code := command.CodeMalformedJSON
	var inv *command.InvalidError
	if errors.As(err, &inv) {
		code = inv.Code
	}
	cmd.CartID, cmd.Type = cartID, command.Type(typ)
	return h.answer(cmd, false, code, err)
}

// finalCode is the rejection code of an error no retry changes: the cart
// rules' refusals, a cart that cannot be read or a command type it does not
// know, and a request daprd refuses. Anything else is transient.
func finalCode(err error) (string, bool) {
	if code, ok := cart.RejectionCode(err); ok {
		return code, true
	}
	switch {
	case errors.Is(err, cart.ErrInvalidCart):
		return command.CodeInvalidCart, true
	case errors.Is(err, cart.ErrUnknownType):
		return command.CodeUnknownType, true
	case errors.Is(err, statepool.ErrBadRequest):
		return command.CodeStateRejected, true
	}
	return "", false
}

// answer publishes cmd's outcome event on <prefix>.evt.<cart>.<outcome>, as
// the worker does: applied, or, with a refusal, rejected with code.
func (h *handler) answer(cmd command.Command, duplicate bool, code string, refusal error) error {
	ev := command.Event{CommandID: cmd.ID, Type: cmd.Type, CartID: cmd.CartID, Outcome: command.OutcomeApplied, Duplicate: duplicate}
	if refusal != nil {
		ev.Outcome, ev.Error = command.OutcomeRejected, &command.EventError{Code: code, Message: refusal.Error()}
	}
	b, err := command.MarshalEvent(ev)
	if err == nil {
		err = h.events.Publish(h.subjects.Event(ev.CartID, ev.Outcome), b)
	}
	if err != nil {
		return fmt.Errorf("outcome event of %s: %w", cmd.ID, err)
	}
	return nil
}

// onEvent is the SDK's topic event handler: one command. A transient
// failure asks daprd to retry it, which the component does by a Nak.
func (h *handler) onEvent(ctx context.Context, e *common.TopicEvent) (retry bool, err error) {
	var subject string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(subjectKey); len(v) > 0 {
			subject = v[0]
		}
	}
	if err := h.apply(ctx, subject, e.RawData); err != nil {
		return true, err
	}
	return false, nil
}

// onBulk answers a bulk delivery. The entries of one cart are applied one
// after the other in the order given, the carts concurrently; an entry that
// fails, and the entries of its cart after it, are retried.
func (h *handler) onBulk(ctx context.Context, req *pb.TopicEventBulkRequest) *pb.TopicEventBulkResponse {
	entries := req.GetEntries()
	statuses := make([]*pb.TopicEventBulkResponseEntry, len(entries))
	for i, e := range entries {
		statuses[i] = &pb.TopicEventBulkResponseEntry{EntryId: e.GetEntryId(), Status: pb.TopicEventResponse_RETRY}
	}
	var wg sync.WaitGroup
	for _, group := range h.byCart(entries) {
		wg.Go(func() {
			for _, i := range group {
				e := entries[i]
				if h.apply(ctx, e.GetMetadata()[subjectKey], e.GetBytes()) != nil {
					return
				}
				statuses[i].Status = pb.TopicEventResponse_SUCCESS
			}
		})
	}
	wg.Wait()
	return &pb.TopicEventBulkResponse{Statuses: statuses}
}

// byCart groups the entries' indexes by the cart their subject names, in
// the order given; an entry whose subject names no cart is a group of its
// own.
func (h *handler) byCart(entries []*pb.TopicEventBulkRequestEntry) [][]int {
	var groups [][]int
	index := map[string]int{}
	for i, e := range entries {
		cartID, _, ok := h.subjects.ParseCommand(h.subjects.Published(e.GetMetadata()[subjectKey]))
		if !ok {
			groups = append(groups, []int{i})
			continue
		}
		g, seen := index[cartID]
		if !seen {
			g = len(groups)
			index[cartID] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	return groups
}
