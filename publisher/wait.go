package publisher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go"

	"github.com/cartworker/cartworker/command"
)

// PublishAndWait publishes cmd like Publish and waits for the worker's
// outcome event for it, ignoring events of other commands.
//
// It waits until ctx ends, or for the Publisher's wait timeout when ctx has
// no deadline. The returned error is:
//
//   - nil with the applied Event (Event.Duplicate tells whether an earlier
//     delivery had applied it already);
//   - a *RejectedError with the rejected Event;
//   - ErrTimeout, wrapping context.DeadlineExceeded, when the command was
//     stored but no outcome came in time, together with ErrDuplicate when
//     the publish was a duplicate;
//   - ErrClosed when the Publisher was closed meanwhile;
//   - the error of Publish, or ctx's error when it is cancelled.
//
// Whenever the command was built, even if it was not applied, the Event
// carries its CommandID, Type and CartID, so a caller can retry it or look
// for its outcome later.
//
// All calls share one subscription to every event subject under the prefix,
// started by the first call, so a load generator with thousands of commands
// in flight holds one subscription rather than one per command.
func (p *Publisher) PublishAndWait(ctx context.Context, cmd command.Command) (command.Event, error) {
	if p.isClosed() {
		return command.Event{}, ErrClosed
	}
	cmd, body, err := p.prepare(cmd)
	pending := command.Event{CommandID: cmd.ID, Type: cmd.Type, CartID: cmd.CartID}
	if err != nil {
		return pending, err
	}
	ctx, cancel := p.withWaitTimeout(ctx)
	defer cancel()

	// Listen before publishing: a fast worker's event would otherwise go by
	// unseen.
	if err := p.listen(ctx); err != nil {
		return pending, err
	}
	key := waitKey{cartID: cmd.CartID, commandID: cmd.ID}
	ch := p.addWaiter(key)
	defer p.removeWaiter(key, ch)

	r, err := p.publish(ctx, cmd, body)
	if err != nil {
		return pending, err
	}
	select {
	case ev := <-ch:
		return ev, outcomeError(ev)
	case <-p.done:
		return pending, ErrClosed
	case <-ctx.Done():
		// An event and the deadline may have arrived together; the event
		// is the more useful answer.
		select {
		case ev := <-ch:
			return ev, outcomeError(ev)
		default:
		}
		return pending, waitError(ctx, cmd, r)
	}
}

func (p *Publisher) withWaitTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, p.waitTimeout)
}

func waitError(ctx context.Context, cmd command.Command, r Receipt) error {
	err := ctx.Err()
	if !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("publisher: waiting for %s %s on cart %s: %w", cmd.Type, cmd.ID, cmd.CartID, err)
	}
	if r.Duplicate {
		return fmt.Errorf("%w: %s %s on cart %s (%w: its outcome may have been sent before): %w",
			ErrTimeout, cmd.Type, cmd.ID, cmd.CartID, ErrDuplicate, err)
	}
	return fmt.Errorf("%w: %s %s on cart %s: %w", ErrTimeout, cmd.Type, cmd.ID, cmd.CartID, err)
}

// outcomeError turns a rejected (or unknown) outcome into an error.
func outcomeError(ev command.Event) error {
	switch ev.Outcome {
	case command.OutcomeApplied:
		return nil
	case command.OutcomeRejected:
		re := &RejectedError{CommandID: ev.CommandID, CartID: ev.CartID, Type: ev.Type}
		if ev.Error != nil {
			re.Code, re.Message = ev.Error.Code, ev.Error.Message
		}
		return re
	default:
		return fmt.Errorf("publisher: %s %s on cart %s: unknown outcome %q", ev.Type, ev.CommandID, ev.CartID, ev.Outcome)
	}
}

// listen starts the shared event subscription if it is not running.
func (p *Publisher) listen(ctx context.Context) error {
	p.subMu.Lock()
	defer p.subMu.Unlock()
	if p.isClosed() {
		return ErrClosed
	}
	// A subscription dies with its connection; a new one is needed if the
	// caller reconnected the same *nats.Conn value.
	if p.sub != nil && p.sub.IsValid() {
		return nil
	}
	sub, err := p.nc.Subscribe(p.subjects.Events(), p.dispatch)
	if err != nil {
		return fmt.Errorf("publisher: subscribe %s: %w", p.subjects.Events(), err)
	}
	// The interest must reach the server before the first command goes out,
	// in case js publishes over another connection than nc.
	if err := p.nc.FlushWithContext(ctx); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("publisher: subscribe %s: %w", p.subjects.Events(), err)
	}
	p.sub = sub
	return nil
}

// dispatch hands an outcome event to the calls waiting for it. It runs on the
// subscription's goroutine and must not block.
func (p *Publisher) dispatch(m *nats.Msg) {
	var ev command.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev.CommandID == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ch := range p.waiters[waitKey{cartID: ev.CartID, commandID: ev.CommandID}] {
		// The first event wins; a later one (a redelivery's duplicate) has
		// nothing to add.
		select {
		case ch <- ev:
		default:
		}
	}
}

// addWaiter registers interest in key's event. Several calls may wait for the
// same command, for example a retry racing the original; each gets a copy.
func (p *Publisher) addWaiter(key waitKey) chan command.Event {
	ch := make(chan command.Event, 1)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waiters[key] = append(p.waiters[key], ch)
	return ch
}

func (p *Publisher) removeWaiter(key waitKey, ch chan command.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ws := p.waiters[key]
	if i := slices.Index(ws, ch); i >= 0 {
		ws = slices.Delete(ws, i, i+1)
	}
	if len(ws) == 0 {
		delete(p.waiters, key)
		return
	}
	p.waiters[key] = ws
}
