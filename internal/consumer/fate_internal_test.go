package consumer

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// plainMsg is a jetstream.Msg that did not come from JetStream: it has no
// metadata. It records every attempt to settle it.
type plainMsg struct {
	subject string
	data    []byte
	settled []string
}

var errNoMetadata = errors.New("message is not a JetStream message")

func (m *plainMsg) Metadata() (*jetstream.MsgMetadata, error) { return nil, errNoMetadata }
func (m *plainMsg) Data() []byte                              { return m.data }
func (m *plainMsg) Headers() nats.Header                      { return nats.Header{} }
func (m *plainMsg) Subject() string                           { return m.subject }
func (m *plainMsg) Reply() string                             { return "" }
func (m *plainMsg) Ack() error                                { return m.settle("ack") }
func (m *plainMsg) DoubleAck(context.Context) error           { return m.settle("double ack") }
func (m *plainMsg) Nak() error                                { return m.settle("nak") }
func (m *plainMsg) NakWithDelay(time.Duration) error          { return m.settle("nak with delay") }
func (m *plainMsg) InProgress() error                         { return m.settle("in progress") }
func (m *plainMsg) Term() error                               { return m.settle("term") }
func (m *plainMsg) TermWithReason(string) error               { return m.settle("term with reason") }

func (m *plainMsg) settle(how string) error {
	m.settled = append(m.settled, how)
	return nil
}

// outcomes is an Observer that records what it is told.
type outcomes struct {
	mu           sync.Mutex
	done         []string // "type/outcome"
	deadLettered int
}

func (o *outcomes) CommandDone(typ, outcome string, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.done = append(o.done, typ+"/"+outcome)
}

func (o *outcomes) Redelivered() {}

func (o *outcomes) DeadLettered() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.deadLettered++
}

// A delivery without JetStream metadata cannot be acked, Nak'ed, terminated
// or dead-lettered (the dead letter records its stream sequence). It must be
// counted as what it is, not as a dead letter that was never written.
func TestMessageWithoutMetadataIsCountedInvalid(t *testing.T) {
	obs := &outcomes{}
	var logs bytes.Buffer
	w, err := New(nil, nil, nil, Config{Observer: obs, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)

	msg := &plainMsg{subject: "cart.cmd.c1.add-item", data: []byte(`{"id":"a1"}`)}
	w.handle(&run{stop: context.Background(), work: context.Background()}, msg)

	obs.mu.Lock()
	defer obs.mu.Unlock()
	require.Equal(t, []string{"unknown/" + LabelInvalid}, obs.done)
	require.Zero(t, obs.deadLettered, "nothing was dead-lettered")
	require.Empty(t, msg.settled, "a message without metadata cannot be settled")
	require.Contains(t, logs.String(), "without metadata")
	require.Contains(t, logs.String(), errNoMetadata.Error())
}
