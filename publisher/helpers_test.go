package publisher_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
)

// Cart id prefixes that steer the fake responder.
const (
	// silentCart: the responder consumes the command but sends no outcome.
	silentCart = "silent-"
	// rejectCart: the responder rejects the command with invalid_state.
	rejectCart = "reject-"
)

// env is an embedded JetStream server with a command stream.
type env struct {
	srv *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	s   command.Subjects
}

// newEnv starts a JetStream server and creates the command stream under
// prefix, with the worker's 2m duplicate window.
func newEnv(t *testing.T, prefix string) *env {
	t.Helper()
	srv := testkit.StartJetStream(t)
	var err error

	e := &env{srv: srv, nc: testkit.Connect(t, srv), s: command.Subjects{Prefix: prefix}}
	e.js, err = jetstream.New(e.nc)
	require.NoError(t, err)
	_, err = e.js.CreateStream(ctx(t), jetstream.StreamConfig{
		Name:       command.StreamCommands,
		Subjects:   []string{e.s.Commands()},
		Storage:    jetstream.MemoryStorage,
		Duplicates: 2 * time.Minute,
	})
	require.NoError(t, err)
	return e
}

// ctx returns a context that ends with the test, bounded so that a hang
// fails instead of blocking the suite.
func ctx(t *testing.T) context.Context { return testkit.Context(t, 30*time.Second) }

// respond runs a fake worker: it consumes the command stream and publishes
// an outcome event per command on its own connection. Before each outcome
// it publishes an event of another command on the same cart, which waiting
// callers must ignore.
func (e *env) respond(t *testing.T) {
	t.Helper()
	nc := testkit.Connect(t, e.srv)
	cons, err := e.js.CreateConsumer(ctx(t), command.StreamCommands, jetstream.ConsumerConfig{
		FilterSubject: e.s.Commands(),
		AckPolicy:     jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	emit := func(ev command.Event) {
		b, err := command.MarshalEvent(ev)
		if err == nil {
			_ = nc.Publish(e.s.Event(ev.CartID, ev.Outcome), b)
		}
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		defer func() { _ = m.Ack() }()
		cmd, err := e.s.Decode(m.Subject(), m.Data())
		if err != nil {
			return
		}
		emit(command.Event{CommandID: cmd.ID + "-other", Type: cmd.Type, CartID: cmd.CartID, Outcome: command.OutcomeApplied})
		ev := command.Event{CommandID: cmd.ID, Type: cmd.Type, CartID: cmd.CartID, Outcome: command.OutcomeApplied}
		switch {
		case strings.HasPrefix(cmd.CartID, silentCart):
			return
		case strings.HasPrefix(cmd.CartID, rejectCart):
			ev.Outcome = command.OutcomeRejected
			ev.Error = &command.EventError{Code: command.CodeInvalidState, Message: "cart is Paying"}
		}
		emit(ev)
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		cc.Stop()
		<-cc.Closed()
	})
}

// streamMsgs returns how many messages the command stream holds.
func (e *env) streamMsgs(t *testing.T) uint64 {
	t.Helper()
	s, err := e.js.Stream(ctx(t), command.StreamCommands)
	require.NoError(t, err)
	info, err := s.Info(ctx(t))
	require.NoError(t, err)
	return info.State.Msgs
}

// stored reads back the command stream's message at seq.
func (e *env) stored(t *testing.T, seq uint64) *jetstream.RawStreamMsg {
	t.Helper()
	s, err := e.js.Stream(ctx(t), command.StreamCommands)
	require.NoError(t, err)
	m, err := s.GetMsg(ctx(t), seq)
	require.NoError(t, err)
	return m
}
