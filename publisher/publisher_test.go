package publisher_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

func coffee() command.Item {
	return command.Item{ItemCode: "ITEM001", Quantity: 2, UnitPrice: money.FromInt(120), Description: "Coffee", TaxCode: "01"}
}

func newPublisher(t *testing.T, e *env, opts ...publisher.Option) *publisher.Publisher {
	t.Helper()
	p, err := publisher.New(e.js, nil, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

func TestPublishSetsSubjectHeaderAndBody(t *testing.T) {
	e := newEnv(t, "")
	p := newPublisher(t, e)

	r, err := p.AddItem(ctx(t), "c-1", coffee())
	require.NoError(t, err)
	require.NotEmpty(t, r.CommandID, "an id is assigned")
	require.Equal(t, "cart.cmd.c-1.add-item", r.Subject)
	require.Equal(t, command.StreamCommands, r.Stream)
	require.False(t, r.Duplicate)

	m := e.stored(t, r.Seq)
	require.Equal(t, "cart.cmd.c-1.add-item", m.Subject)
	require.Equal(t, r.CommandID, m.Header.Get(command.HeaderMsgID))
	cmd, err := command.Subjects{}.Decode(m.Subject, m.Data)
	require.NoError(t, err, "the worker accepts what was sent")
	require.Equal(t, r.CommandID, cmd.ID)
	require.Equal(t, []command.Item{coffee()}, cmd.Items)
}

func TestPublishKeepsGivenID(t *testing.T) {
	e := newEnv(t, "")
	p := newPublisher(t, e)
	cmd := publisher.DeleteCommand("c-1")
	cmd.ID = "my-id"
	r, err := p.Publish(ctx(t), cmd)
	require.NoError(t, err)
	require.Equal(t, "my-id", r.CommandID)
	require.Equal(t, "my-id", e.stored(t, r.Seq).Header.Get(command.HeaderMsgID))
}

func TestPublishHelpers(t *testing.T) {
	e := newEnv(t, "")
	p := newPublisher(t, e)
	doc := json.RawMessage(`{"status":"Idle","memo":"kept"}`)
	tests := []struct {
		name    string
		publish func() (publisher.Receipt, error)
		want    command.Command
	}{
		{
			name: "cache",
			publish: func() (publisher.Receipt, error) {
				return p.Cache(ctx(t), "c-2", publisher.NewCart{TenantID: "T1", StoreCode: "S1", TerminalNo: 3, Document: doc})
			},
			want: command.Command{Type: command.TypeCache, CartID: "c-2", TenantID: "T1", StoreCode: "S1", TerminalNo: 3, Cart: doc},
		},
		{
			name:    "add-item",
			publish: func() (publisher.Receipt, error) { return p.AddItem(ctx(t), "c-2", coffee(), coffee()) },
			want:    command.Command{Type: command.TypeAddItem, CartID: "c-2", Items: []command.Item{coffee(), coffee()}},
		},
		{
			name:    "delete",
			publish: func() (publisher.Receipt, error) { return p.Delete(ctx(t), "c-2") },
			want:    command.Command{Type: command.TypeDelete, CartID: "c-2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := tt.publish()
			require.NoError(t, err)
			m := e.stored(t, r.Seq)
			require.Equal(t, "cart.cmd.c-2."+string(tt.want.Type), m.Subject)
			got, err := command.Subjects{}.Decode(m.Subject, m.Data)
			require.NoError(t, err)
			tt.want.ID = r.CommandID
			require.Equal(t, tt.want, got)
		})
	}
}

func TestPublishDeduplicatesOnID(t *testing.T) {
	e := newEnv(t, "")
	p := newPublisher(t, e)
	cmd := publisher.AddItemCommand("c-1", coffee())
	cmd.ID = "cmd-dup"

	first, err := p.Publish(ctx(t), cmd)
	require.NoError(t, err)
	require.False(t, first.Duplicate)
	second, err := p.Publish(ctx(t), cmd)
	require.NoError(t, err)
	require.True(t, second.Duplicate)
	require.Equal(t, first.Seq, second.Seq)
	require.Equal(t, uint64(1), e.streamMsgs(t))
}

func TestPublishRefusesInvalidCommands(t *testing.T) {
	e := newEnv(t, "")
	p := newPublisher(t, e)
	huge := command.Item{ItemCode: "A", Quantity: 1, Description: strings.Repeat("x", command.MaxBodyBytes)}
	tests := []struct {
		name string
		cmd  command.Command
		code string
	}{
		{"bad cart id", publisher.DeleteCommand("c.1"), command.CodeInvalidCartID},
		{"empty cart id", publisher.DeleteCommand(""), command.CodeInvalidCartID},
		{"unknown type", command.Command{Type: "explode", CartID: "c-1"}, command.CodeUnknownType},
		{"no items", publisher.AddItemCommand("c-1"), command.CodeNoItems},
		{"quantity 0", publisher.AddItemCommand("c-1", command.Item{ItemCode: "A"}), command.CodeInvalidQuantity},
		{"negative price", publisher.AddItemCommand("c-1", command.Item{ItemCode: "A", Quantity: 1, UnitPrice: money.FromInt(-1)}), command.CodeInvalidPrice},
		{"cart not an object", publisher.CacheCommand("c-1", publisher.NewCart{Document: json.RawMessage(`[1]`)}), command.CodeInvalidCart},
		{"body too large", publisher.AddItemCommand("c-1", huge), command.CodeBodyTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.Publish(ctx(t), tt.cmd)
			var inv *command.InvalidError
			require.ErrorAs(t, err, &inv)
			require.Equal(t, tt.code, inv.Code)

			ev, err := p.PublishAndWait(ctx(t), tt.cmd)
			require.ErrorAs(t, err, &inv)
			require.Equal(t, tt.code, inv.Code)
			require.Empty(t, ev.Outcome)
		})
	}
	require.Zero(t, e.streamMsgs(t), "nothing was sent")
}

func TestPublishWithoutStreamFails(t *testing.T) {
	e := newEnv(t, "")
	p := newPublisher(t, e, publisher.WithPrefix("other"))
	c, cancel := context.WithTimeout(ctx(t), 2*time.Second)
	defer cancel()
	r, err := p.Delete(c, "c-1")
	require.Error(t, err)
	require.NotEmpty(t, r.CommandID, "the id is reported for a retry")
}

func TestPublishAndWaitApplied(t *testing.T) {
	e := newEnv(t, "")
	e.respond(t)
	p := newPublisher(t, e)

	ev, err := p.PublishAndWait(ctx(t), publisher.CacheCommand("c-1", publisher.NewCart{TenantID: "T1"}))
	require.NoError(t, err)
	require.Equal(t, command.OutcomeApplied, ev.Outcome)
	require.Equal(t, command.TypeCache, ev.Type)
	require.Equal(t, "c-1", ev.CartID)
	require.NotEmpty(t, ev.CommandID)
	require.NotContains(t, ev.CommandID, "-other", "another command's event was taken")
}

func TestPublishAndWaitRejected(t *testing.T) {
	e := newEnv(t, "")
	e.respond(t)
	p := newPublisher(t, e)

	cmd := publisher.AddItemCommand(rejectCart+"1", coffee())
	cmd.ID = "cmd-rejected"
	ev, err := p.PublishAndWait(ctx(t), cmd)
	var rej *publisher.RejectedError
	require.ErrorAs(t, err, &rej)
	require.Equal(t, command.CodeInvalidState, rej.Code)
	require.Equal(t, "cart is Paying", rej.Message)
	require.Equal(t, "cmd-rejected", rej.CommandID)
	require.Equal(t, rejectCart+"1", rej.CartID)
	require.Equal(t, command.OutcomeRejected, ev.Outcome)
	require.Equal(t, "cmd-rejected", ev.CommandID)
	require.Contains(t, err.Error(), "invalid_state")
}

func TestPublishAndWaitTimesOut(t *testing.T) {
	e := newEnv(t, "")
	e.respond(t)
	p := newPublisher(t, e)

	c, cancel := context.WithTimeout(ctx(t), 300*time.Millisecond)
	defer cancel()
	cmd := publisher.DeleteCommand(silentCart + "1")
	cmd.ID = "cmd-silent"
	ev, err := p.PublishAndWait(c, cmd)
	require.ErrorIs(t, err, publisher.ErrTimeout)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorIs(t, err, publisher.ErrDuplicate)
	require.Equal(t, command.Event{CommandID: "cmd-silent", Type: command.TypeDelete, CartID: silentCart + "1"}, ev)
	require.Equal(t, uint64(1), e.streamMsgs(t), "the command was stored")

	// Republished, it is a JetStream duplicate: its outcome, had there been
	// one, would have gone by already.
	c2, cancel2 := context.WithTimeout(ctx(t), 300*time.Millisecond)
	defer cancel2()
	_, err = p.PublishAndWait(c2, cmd)
	require.ErrorIs(t, err, publisher.ErrTimeout)
	require.ErrorIs(t, err, publisher.ErrDuplicate)
}

func TestPublishAndWaitDefaultTimeout(t *testing.T) {
	e := newEnv(t, "")
	e.respond(t)
	p := newPublisher(t, e, publisher.WithWaitTimeout(200*time.Millisecond))

	_, err := p.PublishAndWait(context.Background(), publisher.DeleteCommand(silentCart+"2"))
	require.ErrorIs(t, err, publisher.ErrTimeout)
}

func TestPublishAndWaitCancelled(t *testing.T) {
	e := newEnv(t, "")
	p := newPublisher(t, e)

	c, cancel := context.WithCancel(ctx(t))
	cancel()
	_, err := p.PublishAndWait(c, publisher.DeleteCommand("c-1"))
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, publisher.ErrTimeout)
}

func TestPublishAndWaitConcurrent(t *testing.T) {
	e := newEnv(t, "")
	e.respond(t)
	nc := testkit.Connect(t, e.srv)
	p, err := publisher.New(e.js, nc)
	require.NoError(t, err)
	defer func() { require.NoError(t, p.Close()) }()

	const n = 50
	events := make([]command.Event, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// Five carts, so that every cart sees events of ten commands.
			cartID := fmt.Sprintf("c-%d", i%5)
			if i%10 == 9 {
				cartID = rejectCart + cartID
			}
			cmd := publisher.AddItemCommand(cartID, coffee())
			cmd.ID = fmt.Sprintf("cmd-%d", i)
			events[i], errs[i] = p.PublishAndWait(ctx(t), cmd)
		})
	}
	wg.Wait()

	for i := range n {
		require.Equal(t, fmt.Sprintf("cmd-%d", i), events[i].CommandID)
		if i%10 == 9 {
			var rej *publisher.RejectedError
			require.ErrorAs(t, errs[i], &rej, "call %d", i)
			require.Equal(t, command.OutcomeRejected, events[i].Outcome)
			continue
		}
		require.NoError(t, errs[i], "call %d", i)
		require.Equal(t, command.OutcomeApplied, events[i].Outcome)
	}
	require.Equal(t, 1, nc.NumSubscriptions(), "all calls share one subscription")
}

func TestIDsAreUniquePerStream(t *testing.T) {
	e := newEnv(t, "")
	p := newPublisher(t, e)

	// JetStream de-duplicates Nats-Msg-Id across the whole stream, so an id
	// reused on another cart within the window is dropped too.
	a := publisher.DeleteCommand("c-a")
	a.ID = "shared"
	b := publisher.DeleteCommand("c-b")
	b.ID = "shared"
	_, err := p.Publish(ctx(t), a)
	require.NoError(t, err)
	r, err := p.Publish(ctx(t), b)
	require.NoError(t, err)
	require.True(t, r.Duplicate)
}

func TestWithPrefixAndIDGenerator(t *testing.T) {
	e := newEnv(t, "pos.eu")
	e.respond(t)
	var n atomic.Int64
	p := newPublisher(t, e,
		publisher.WithPrefix("pos.eu"),
		publisher.WithIDGenerator(func() string { return fmt.Sprintf("gen-%d", n.Add(1)) }),
	)
	require.Equal(t, "pos.eu", p.Subjects().Prefix)

	ev, err := p.PublishAndWait(ctx(t), publisher.DeleteCommand("c-1"))
	require.NoError(t, err)
	require.Equal(t, "gen-1", ev.CommandID)

	r, err := p.Delete(ctx(t), "c-1")
	require.NoError(t, err)
	require.Equal(t, "gen-2", r.CommandID)
	require.Equal(t, "pos.eu.cmd.c-1.delete", r.Subject)
}

func TestNewRejectsBadOptions(t *testing.T) {
	e := newEnv(t, "")
	_, err := publisher.New(nil, e.nc)
	require.ErrorIs(t, err, publisher.ErrInvalidOption)
	for _, opt := range []publisher.Option{
		publisher.WithPrefix(""),
		publisher.WithPrefix("a.>"),
		publisher.WithPrefix("a..b"),
		publisher.WithPrefix("a b"),
		publisher.WithPrefix("*"),
		publisher.WithIDGenerator(nil),
		publisher.WithWaitTimeout(0),
		publisher.WithTracerProvider(nil),
		publisher.WithPropagator(nil),
	} {
		_, err := publisher.New(e.js, e.nc, opt)
		require.ErrorIs(t, err, publisher.ErrInvalidOption)
	}
}

func TestClose(t *testing.T) {
	e := newEnv(t, "")
	e.respond(t)
	nc := testkit.Connect(t, e.srv)
	p, err := publisher.New(e.js, nc)
	require.NoError(t, err)

	// A call waiting for an outcome that never comes is released by Close.
	done := make(chan error, 1)
	go func() {
		_, err := p.PublishAndWait(ctx(t), publisher.DeleteCommand(silentCart+"1"))
		done <- err
	}()
	require.Eventually(t, func() bool { return e.streamMsgs(t) == 1 }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, p.Close())
	select {
	case err := <-done:
		require.ErrorIs(t, err, publisher.ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("PublishAndWait not released by Close")
	}

	require.NoError(t, p.Close(), "Close is idempotent")
	_, err = p.Delete(ctx(t), "c-1")
	require.ErrorIs(t, err, publisher.ErrClosed)
	_, err = p.PublishAndWait(ctx(t), publisher.DeleteCommand("c-1"))
	require.ErrorIs(t, err, publisher.ErrClosed)
	require.Equal(t, 0, nc.NumSubscriptions(), "the event subscription is gone")
}

func TestCloseAfterConnectionClosed(t *testing.T) {
	e := newEnv(t, "")
	e.respond(t)
	nc := testkit.Connect(t, e.srv)
	p, err := publisher.New(e.js, nc)
	require.NoError(t, err)
	_, err = p.PublishAndWait(ctx(t), publisher.DeleteCommand("c-1"))
	require.NoError(t, err)
	nc.Close()
	require.NoError(t, p.Close())
}

func TestRejectedErrorMessage(t *testing.T) {
	err := error(&publisher.RejectedError{CommandID: "x", CartID: "c-1", Type: command.TypeAddItem, Code: "cart_not_found", Message: "no cart"})
	require.Equal(t, "publisher: add-item x on cart c-1 rejected: cart_not_found: no cart", err.Error())
	var rej *publisher.RejectedError
	require.True(t, errors.As(fmt.Errorf("wrapped: %w", err), &rej))
}
