package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/internal/testkit"
)

// env is an embedded JetStream server with the worker's two streams, a fake
// Dapr sidecar, and the environment cartctl sees.
type env struct {
	srv  *server.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	dapr *daprfake.Fake
	vars map[string]string
	// maxCartBytes is startWorker's cart size limit; 0 is the default.
	maxCartBytes int
}

func newEnv(t *testing.T, daprOpts ...daprfake.Option) *env {
	t.Helper()
	return newEnvWith(t, nil, nil, daprOpts...)
}

// newEnvWith is newEnv with a server configured by srvOpts, which the test
// connects to with ncOpts.
func newEnvWith(t *testing.T, srvOpts func(*server.Options), ncOpts []nats.Option, daprOpts ...daprfake.Option) *env {
	t.Helper()
	var srv *server.Server
	if srvOpts != nil {
		srv = testkit.StartJetStream(t, srvOpts)
	} else {
		srv = testkit.StartJetStream(t)
	}
	e := &env{srv: srv, dapr: daprfake.New(daprOpts...)}
	t.Cleanup(e.dapr.Close)
	e.nc = testkit.Connect(t, srv, ncOpts...)
	var err error
	e.js, err = jetstream.New(e.nc)
	require.NoError(t, err)
	for name, subject := range map[string]string{
		command.StreamCommands:    "cart.cmd.>",
		command.StreamDeadLetters: "cart.dlq.>",
	} {
		_, err := e.js.CreateStream(ctx(t), jetstream.StreamConfig{
			Name: name, Subjects: []string{subject}, Storage: jetstream.MemoryStorage, Duplicates: 2 * time.Minute,
		})
		require.NoError(t, err)
	}
	e.vars = map[string]string{
		"NATS_URL":           srv.ClientURL(),
		"DAPR_HTTP_ENDPOINT": e.dapr.URL(),
	}
	return e
}

func ctx(t *testing.T) context.Context { return testkit.Context(t, 30*time.Second) }

// syncBuffer is safe to read while a command writes to it.
type syncBuffer = testkit.SyncBuffer

type result struct {
	stdout, stderr string
	err            error
}

// run runs cartctl with args in e's environment, with an empty stdin.
func (e *env) run(t *testing.T, args ...string) result {
	t.Helper()
	return e.runWithStdin(t, "", args...)
}

// runWithStdin runs cartctl with args, reading stdin from the string: what
// a user types, or what a script pipes.
func (e *env) runWithStdin(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr syncBuffer
	c := e.cli(&stdout, &stderr)
	c.stdin = strings.NewReader(stdin)
	err := c.run(ctx(t), args)
	return result{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

func (e *env) cli(stdout, stderr *syncBuffer) *cli {
	return &cli{stdout: stdout, stderr: stderr, lookupEnv: func(k string) (string, bool) {
		v, ok := e.vars[k]
		return v, ok
	}}
}

// startWorker runs a small stand-in for cartworker: it consumes the command
// stream, applies each command with the real cart logic to the fake Dapr
// store, and publishes the outcome event.
func (e *env) startWorker(t *testing.T) {
	t.Helper()
	store, err := statepool.New(statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: e.dapr.URL(), APIToken: e.vars["DAPR_API_TOKEN"]})
	require.NoError(t, err)
	t.Cleanup(store.Close)
	svc := cartcache.New(store, cartcache.Config{MaxCartBytes: e.maxCartBytes})

	cons, err := e.js.CreateConsumer(ctx(t), command.StreamCommands, jetstream.ConsumerConfig{
		AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	var s command.Subjects
	cc, err := cons.Consume(func(m jetstream.Msg) {
		cmd, err := s.Decode(m.Subject(), m.Data())
		if err != nil {
			_ = m.Term()
			return
		}
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := svc.Apply(c, cmd)
		ev := command.Event{CommandID: cmd.ID, Type: cmd.Type, CartID: cmd.CartID, Outcome: command.OutcomeApplied, Duplicate: res.Duplicate}
		if err != nil {
			code, ok := cart.RejectionCode(err)
			var prior *cartcache.PriorRejection
			switch {
			case errors.As(err, &prior):
				code = prior.Code
			case !ok:
				code = "error"
			}
			ev = command.Event{CommandID: cmd.ID, Type: cmd.Type, CartID: cmd.CartID, Outcome: command.OutcomeRejected,
				Error: &command.EventError{Code: code, Message: err.Error()}}
		}
		if b, err := command.MarshalEvent(ev); err == nil {
			_ = e.nc.Publish(s.Event(ev.CartID, ev.Outcome), b)
		}
		_ = m.Ack()
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		cc.Stop()
		<-cc.Closed()
	})
}

// putDeadLetter stores a dead letter as the worker would, returning its seq.
// orig is the original subject; empty means the command subject.
func (e *env) putDeadLetter(t *testing.T, cartID, typ, orig, body, code, reason string) uint64 {
	t.Helper()
	var s command.Subjects
	if orig == "" {
		orig = s.Command(cartID, command.Type(typ))
	}
	m := nats.NewMsg(s.DeadLetter(cartID, typ))
	m.Data = []byte(body)
	m.Header.Set("Traceparent", "00-abc-def-01") // a header of the original publish
	m.Header.Set(command.HeaderDLQCode, code)
	m.Header.Set(command.HeaderDLQReason, reason)
	m.Header.Set(command.HeaderDLQSubject, orig)
	m.Header.Set(command.HeaderDLQDeliveries, "10")
	m.Header.Set(command.HeaderMsgID, "dlq-"+cartID+typ+code)
	ack, err := e.js.PublishMsg(ctx(t), m)
	require.NoError(t, err)
	return ack.Sequence
}

func (e *env) streamState(t *testing.T, name string) jetstream.StreamState {
	t.Helper()
	st, err := e.js.Stream(ctx(t), name)
	require.NoError(t, err)
	return st.CachedInfo().State
}

// lines splits output into non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	t.Helper()
	c, cancel := context.WithCancel(ctx(t))
	t.Cleanup(cancel)
	return c, cancel
}
