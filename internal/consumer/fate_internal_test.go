package consumer

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/ownership"
	"github.com/cartworker/cartworker/internal/statepool"
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

func (o *outcomes) Redelivered()                        {}
func (o *outcomes) Batch(int)                           {}
func (o *outcomes) Apply(int)                           {}
func (o *outcomes) InFlight(int)                        {}
func (o *outcomes) Lag(uint64)                          {}
func (o *outcomes) DeadLetterDepth(uint64)              {}
func (o *outcomes) OldestUnacked(map[int]time.Duration) {}
func (o *outcomes) Acked(Stages)                        {}

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
	w.handle(&run{stop: context.Background(), work: context.Background(), beats: newHeartbeats()}, [][]jetstream.Msg{{msg}})

	obs.mu.Lock()
	defer obs.mu.Unlock()
	require.Equal(t, []string{"unknown/" + LabelInvalid}, obs.done)
	require.Zero(t, obs.deadLettered, "nothing was dead-lettered")
	require.Empty(t, msg.settled, "a message without metadata cannot be settled")
	require.Contains(t, logs.String(), "without metadata")
	require.Contains(t, logs.String(), errNoMetadata.Error())
}

// jsMsg is a jetstream.Msg as JetStream delivers it, with metadata. It
// records how it was settled.
type jsMsg struct {
	plainMsg
	headers   nats.Header
	delivered uint64
	seq       uint64
	delay     time.Duration
}

func (m *jsMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{NumDelivered: m.delivered, Sequence: jetstream.SequencePair{Stream: m.seq}}, nil
}
func (m *jsMsg) Headers() nats.Header { return m.headers }
func (m *jsMsg) NakWithDelay(d time.Duration) error {
	m.delay = d
	return m.settle("nak with delay")
}

// fakeJS is the one JetStream call the fate of a message makes: storing a
// dead letter. Every other method panics through the nil interface.
type fakeJS struct {
	jetstream.JetStream
	// err fails the first fails+1 publishes.
	err       error
	fails     int
	published []*nats.Msg
}

func (f *fakeJS) PublishMsg(_ context.Context, m *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if f.err != nil && f.fails >= 0 {
		f.fails--
		return nil, f.err
	}
	f.published = append(f.published, m)
	return &jetstream.PubAck{}, nil
}

// fakeKV is the failure counter's bucket in memory.
type fakeKV struct {
	jetstream.KeyValue
	err  error
	vals map[string][]byte
	rev  uint64
}

type kvEntry struct {
	jetstream.KeyValueEntry
	val []byte
	rev uint64
}

func (e kvEntry) Value() []byte    { return e.val }
func (e kvEntry) Revision() uint64 { return e.rev }

func (f *fakeKV) Get(_ context.Context, key string) (jetstream.KeyValueEntry, error) {
	if f.err != nil {
		return nil, f.err
	}
	v, ok := f.vals[key]
	if !ok {
		return nil, jetstream.ErrKeyNotFound
	}
	return kvEntry{val: v, rev: f.rev}, nil
}

func (f *fakeKV) Create(_ context.Context, key string, v []byte, _ ...jetstream.KVCreateOpt) (uint64, error) {
	f.vals[key] = v
	f.rev++
	return f.rev, nil
}

func (f *fakeKV) Update(_ context.Context, key string, v []byte, _ uint64) (uint64, error) {
	f.vals[key] = v
	f.rev++
	return f.rev, nil
}

// events records the outcome events the worker publishes; err fails the
// first fails+1 of them.
type events struct {
	err   error
	fails int
	sent  []command.Event
}

func (e *events) PublishMsg(m *nats.Msg) error {
	if e.err != nil && e.fails >= 0 {
		e.fails--
		return e.err
	}
	var ev command.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return err
	}
	e.sent = append(e.sent, ev)
	return nil
}

// applier returns a fixed answer, calling during first if set: batchErr
// for the whole batch (the first batchFails calls, or every call when
// batchFails is 0), else res and err for each command.
type applier struct {
	res        cartcache.Result
	err        error
	errFails   int // err for the first errFails calls only, if set
	batchErr   error
	batchFails int
	during     func()
	calls      int
	epochs     []cartcache.Epoch
}

func (a *applier) ApplyCarts(_ context.Context, batches []cartcache.CartBatch) []cartcache.CartResult {
	a.calls++
	if a.during != nil {
		a.during()
	}
	res := make([]cartcache.CartResult, len(batches))
	for i, b := range batches {
		a.epochs = append(a.epochs, b.Epoch)
		if a.batchErr != nil && (a.batchFails == 0 || a.calls <= a.batchFails) {
			res[i].Err = a.batchErr
			continue
		}
		res[i].Outcomes = make([]cartcache.Outcome, len(b.Cmds))
		for j := range res[i].Outcomes {
			res[i].Outcomes[j] = cartcache.Outcome{Result: a.res}
			if a.errFails == 0 || a.calls <= a.errFails {
				res[i].Outcomes[j].Err = a.err
			}
		}
	}
	return res
}

// The whole decision table, one delivery at a time, with no NATS server:
// what each answer of decoding and applying makes of the message (Ack, Nak,
// NakWithDelay or Term), of the dead-letter stream, of the outcome event
// and of the metrics.
func TestFateOfEveryDelivery(t *testing.T) {
	const addItem = `{"id":"a1","type":"add-item","cart_id":"c1","items":[{"item_code":"A","quantity":1,"unit_price":1,"tax_code":"00"}]}`
	errDown := errors.New("dapr: connection reset")
	type want struct {
		settled    string
		delay      time.Duration
		outcome    string
		dlqCode    string          // "" for no dead letter
		event      command.Outcome // of the event, "" for none
		eventCode  string
		eventID    string
		deadLetter int
		duplicate  bool // of the event
		notApplied bool
	}
	cases := []struct {
		name      string
		subject   string
		body      string
		apply     applier
		delivered uint64
		failures  int // failures already counted
		kvErr     error
		dlqErr    error
		eventErr  error
		stopped   bool
		lapsed    bool // the partition's grant lapsed before the apply
		replay    bool // delivered again by a rewind
		want      want
	}{
		{name: "applied", apply: applier{},
			want: want{settled: "ack", outcome: LabelApplied, event: command.OutcomeApplied, eventID: "a1"}},
		{name: "duplicate", apply: applier{res: cartcache.Result{Duplicate: true}},
			want: want{settled: "ack", outcome: LabelDuplicate, event: command.OutcomeApplied, eventID: "a1", duplicate: true}},
		{name: "applied, event not published at first: retried in place, then acked", apply: applier{}, eventErr: errDown,
			want: want{settled: "ack", outcome: LabelApplied, event: command.OutcomeApplied, eventID: "a1"}},
		{name: "rejected, event not published at first: retried in place, then acked", apply: applier{err: cart.ErrCartNotFound}, eventErr: errDown,
			want: want{settled: "ack", outcome: LabelRejected, event: command.OutcomeRejected, eventCode: command.CodeCartNotFound, eventID: "a1"}},
		{name: "replay of a command refused before: refused alike, as a duplicate",
			apply: applier{res: cartcache.Result{Duplicate: true}, err: &cartcache.PriorRejection{Code: command.CodeCartNotFound}},
			want:  want{settled: "ack", outcome: LabelRejected, event: command.OutcomeRejected, eventCode: command.CodeCartNotFound, eventID: "a1", duplicate: true}},
		{name: "written by the partition's newer holder: dropped unsettled", apply: applier{batchErr: fmt.Errorf("cart c1: %w", cartcache.ErrFenced)},
			want: want{outcome: LabelFenced}},
		{name: "grant lapsed before the apply: dropped unsettled, nothing applied", apply: applier{}, lapsed: true,
			want: want{outcome: LabelFenced, notApplied: true}},
		{name: "replay of a command dead-lettered as max_deliveries: dead-lettered again, not applied", apply: applier{}, replay: true, failures: 10,
			want: want{settled: "term with reason", outcome: LabelDeadLetter, dlqCode: command.CodeMaxDeliveries, event: command.OutcomeRejected, eventCode: command.CodeMaxDeliveries, eventID: "a1", deadLetter: 1, notApplied: true}},
		{name: "replay of a command that failed less: applied", apply: applier{}, replay: true, failures: 3,
			want: want{settled: "ack", outcome: LabelApplied, event: command.OutcomeApplied, eventID: "a1"}},
		{name: "cart not found", apply: applier{err: cart.ErrCartNotFound},
			want: want{settled: "ack", outcome: LabelRejected, event: command.OutcomeRejected, eventCode: command.CodeCartNotFound, eventID: "a1"}},
		{name: "invalid state", apply: applier{err: cart.ErrInvalidState},
			want: want{settled: "ack", outcome: LabelRejected, event: command.OutcomeRejected, eventCode: command.CodeInvalidState, eventID: "a1"}},
		{name: "unknown tax code", apply: applier{err: cart.ErrUnknownTaxCode},
			want: want{settled: "ack", outcome: LabelRejected, event: command.OutcomeRejected, eventCode: command.CodeUnknownTaxCode, eventID: "a1"}},
		{name: "amount overflow", apply: applier{err: fmt.Errorf("line 1: %w", cart.ErrAmountOverflow)},
			want: want{settled: "ack", outcome: LabelRejected, event: command.OutcomeRejected, eventCode: command.CodeAmountOverflow, eventID: "a1"}},
		{name: "invalid stored cart", apply: applier{batchErr: cart.ErrInvalidCart},
			want: want{settled: "term with reason", outcome: LabelDeadLetter, dlqCode: command.CodeInvalidCart, event: command.OutcomeRejected, eventCode: command.CodeInvalidCart, eventID: "a1", deadLetter: 1}},
		{name: "unknown type", apply: applier{err: cart.ErrUnknownType},
			want: want{settled: "term with reason", outcome: LabelDeadLetter, dlqCode: command.CodeUnknownType, event: command.OutcomeRejected, eventCode: command.CodeUnknownType, eventID: "a1", deadLetter: 1}},
		{name: "dapr refused the request", apply: applier{batchErr: statepool.ErrBadRequest},
			want: want{settled: "term with reason", outcome: LabelDeadLetter, dlqCode: command.CodeStateRejected, event: command.OutcomeRejected, eventCode: command.CodeStateRejected, eventID: "a1", deadLetter: 1}},
		{name: "malformed body: body id in the event", body: `{"id":"m1","type":"add-item","cart_id":"c1"} trailing`,
			want: want{settled: "term with reason", outcome: LabelDeadLetter, dlqCode: command.CodeMalformedJSON, event: command.OutcomeRejected, eventCode: command.CodeMalformedJSON, eventID: "m1", deadLetter: 1}},
		{name: "unreadable body: header id in the event", body: `{"id":"m1","type":"add-item","cart_id":"c1","items":[`,
			want: want{settled: "term with reason", outcome: LabelDeadLetter, dlqCode: command.CodeMalformedJSON, event: command.OutcomeRejected, eventCode: command.CodeMalformedJSON, eventID: "hdr-id", deadLetter: 1}},
		{name: "invalid command", body: `{"id":"q1","type":"add-item","cart_id":"c1","items":[{"item_code":"A","quantity":0,"unit_price":1,"tax_code":"00"}]}`,
			want: want{settled: "term with reason", outcome: LabelDeadLetter, dlqCode: command.CodeInvalidQuantity, event: command.OutcomeRejected, eventCode: command.CodeInvalidQuantity, eventID: "q1", deadLetter: 1}},
		{name: "dead letter not stored at first: retried in place, never dropped", body: `nope`, dlqErr: errDown,
			want: want{settled: "term with reason", outcome: LabelDeadLetter, dlqCode: command.CodeMalformedJSON, event: command.OutcomeRejected, eventCode: command.CodeMalformedJSON, eventID: "hdr-id", deadLetter: 1}},
		{name: "store failed once: retried in place, then applied", apply: applier{batchErr: errDown, batchFails: 1},
			want: want{settled: "ack", outcome: LabelApplied, event: command.OutcomeApplied, eventID: "a1"}},
		{name: "store kept failing: dead letter at the last failure", apply: applier{batchErr: errDown}, failures: 9,
			want: want{settled: "term with reason", outcome: LabelDeadLetter, dlqCode: command.CodeMaxDeliveries, event: command.OutcomeRejected, eventCode: command.CodeMaxDeliveries, eventID: "a1", deadLetter: 1}},
		{name: "store kept failing, count lost: deliveries and attempts count", apply: applier{batchErr: errDown}, kvErr: errDown, delivered: 10,
			want: want{settled: "term with reason", outcome: LabelDeadLetter, dlqCode: command.CodeMaxDeliveries, event: command.OutcomeRejected, eventCode: command.CodeMaxDeliveries, eventID: "a1", deadLetter: 1}},
		{name: "transient step failure: retried in place, then applied", apply: applier{err: errDown, errFails: 1},
			want: want{settled: "ack", outcome: LabelApplied, event: command.OutcomeApplied, eventID: "a1"}},
		{name: "transient, last failure: dead letter", apply: applier{err: errDown}, failures: 9,
			want: want{settled: "term with reason", outcome: LabelDeadLetter, dlqCode: command.CodeMaxDeliveries, event: command.OutcomeRejected, eventCode: command.CodeMaxDeliveries, eventID: "a1", deadLetter: 1}},
		{name: "failure count unavailable: deliveries count", apply: applier{err: errDown}, kvErr: errDown, delivered: 10,
			want: want{settled: "term with reason", outcome: LabelDeadLetter, dlqCode: command.CodeMaxDeliveries, event: command.OutcomeRejected, eventCode: command.CodeMaxDeliveries, eventID: "a1", deadLetter: 1}},
		{name: "handed back: nothing counted", apply: applier{err: errHandBack},
			want: want{settled: "nak", outcome: LabelNotReady}},
		{name: "paused at shutdown", apply: applier{err: errPaused},
			want: want{settled: "nak", outcome: LabelShutdown}},
		{name: "shutdown cut the call short", apply: applier{err: context.Canceled}, stopped: true,
			want: want{settled: "nak", outcome: LabelShutdown}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obs := &outcomes{}
			js := &fakeJS{err: tc.dlqErr}
			evs := &events{err: tc.eventErr}
			kv := &fakeKV{err: tc.kvErr, vals: map[string][]byte{}}
			if tc.failures > 0 {
				kv.vals["7"] = []byte(strconv.Itoa(tc.failures))
			}
			app := tc.apply
			w, err := New(js, evs, &app, Config{Observer: obs, Logger: slog.New(slog.DiscardHandler)})
			require.NoError(t, err)
			w.gate.set(nil) // the environment is fine

			work, cancel := context.WithCancel(context.Background())
			defer cancel()
			body := cmp.Or(tc.body, addItem)
			msg := &jsMsg{
				plainMsg:  plainMsg{subject: cmp.Or(tc.subject, "cart.pcmd.03.c1.add-item"), data: []byte(body)},
				headers:   nats.Header{command.HeaderMsgID: []string{"hdr-id"}},
				delivered: max(tc.delivered, 1), seq: 7,
			}
			grant := ownership.Grant{Partition: 3, Era: 5, Seq: 9}
			r := &run{stop: context.Background(), work: work, beats: newHeartbeats(), failures: failures{kv: kv},
				owner: &fakeOwner{grant: grant, lapsed: tc.lapsed}}
			if tc.stopped {
				// Shutdown cuts the call short: the work context ends
				// while the command is being applied.
				app.during = cancel
			}
			w.handle(r, [][]jetstream.Msg{{&inbound{Msg: msg, grant: grant, replay: tc.replay}}})

			if tc.want.settled == "" {
				require.Empty(t, msg.settled, "a fenced delivery is left for the partition's holder")
			} else {
				require.Equal(t, []string{tc.want.settled}, msg.settled)
			}
			if tc.want.notApplied {
				require.Zero(t, app.calls, "nothing applied under a lapsed grant")
			} else if app.calls > 0 {
				require.Equal(t, epochOf(grant), app.epochs[0], "the store fences with the grant's epoch")
			}
			if tc.want.settled == "nak with delay" {
				require.Equal(t, tc.want.delay, msg.delay)
			}
			require.NotEmpty(t, obs.done)
			require.Equal(t, "add-item/"+tc.want.outcome, obs.done[len(obs.done)-1])
			require.Equal(t, tc.want.deadLetter, obs.deadLettered)
			if tc.want.dlqCode == "" {
				require.Empty(t, js.published, "no dead letter")
			} else {
				require.Len(t, js.published, 1)
				dl := js.published[0]
				require.Equal(t, tc.want.dlqCode, dl.Header.Get(command.HeaderDLQCode))
				require.Equal(t, "cart.pcmd.03.c1.add-item", msg.subject)
				require.Equal(t, "7", dl.Header.Get(command.HeaderDLQSequence))
				require.Equal(t, body, string(dl.Data))
			}
			if tc.want.event == "" {
				require.Empty(t, evs.sent, "no event")
				return
			}
			require.Len(t, evs.sent, 1)
			ev := evs.sent[0]
			require.Equal(t, tc.want.event, ev.Outcome)
			require.Equal(t, tc.want.eventID, ev.CommandID)
			require.Equal(t, tc.want.duplicate, ev.Duplicate)
			require.Equal(t, "c1", ev.CartID)
			if tc.want.eventCode == "" {
				require.Nil(t, ev.Error)
			} else {
				require.NotNil(t, ev.Error)
				require.Equal(t, tc.want.eventCode, ev.Error.Code)
			}

		})
	}
}

// fakeOwner holds one grant, which may have lapsed.
type fakeOwner struct {
	owner
	grant  ownership.Grant
	lapsed bool
}

func (o *fakeOwner) Holds(g ownership.Grant) bool { return g == o.grant && !o.lapsed }

// Settled: handle lets go of each message it took.
func (o *fakeOwner) Settled(int) {}

// A transient failure backs off exponentially, from RetryBaseDelay to
// RetryMaxDelay, by the failures counted.
func TestBackoffDoublesByFailures(t *testing.T) {
	w, err := New(nil, nil, nil, Config{})
	require.NoError(t, err)
	for failures, want := range map[int]time.Duration{
		0: 100 * time.Millisecond, 1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		4: 800 * time.Millisecond, 7: 5 * time.Second, 100: 5 * time.Second,
	} {
		require.Equal(t, want, w.backoffAfter(failures), "after %d failures", failures)
	}
}

// The zero fate is no fate: a verdict whose fate was never assigned
// dead-letters its command, and never acks it. Every row of the table
// assigns one.
func TestZeroFateIsNoAck(t *testing.T) {
	require.NotEqual(t, fateAck, fate(0))
	for _, row := range decisions {
		require.NotZero(t, row.fate, "the row of %v", row.err)
	}

	js, evs := &fakeJS{}, &events{}
	w, err := New(js, evs, &applier{}, Config{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	grant := ownership.Grant{Partition: 3, Era: 5, Seq: 9}
	msg := &jsMsg{
		plainMsg: plainMsg{subject: "cart.pcmd.03.c1.add-item", data: []byte(`{"id":"a1"}`)},
		headers:  nats.Header{}, delivered: 1, seq: 7,
	}
	md, err := msg.Metadata()
	require.NoError(t, err)
	d := &delivery{msg: msg, md: md, cmd: command.Command{ID: "a1", CartID: "c1", Type: command.TypeAddItem}, grant: grant}
	r := &run{stop: context.Background(), work: context.Background(), owner: &fakeOwner{grant: grant}}

	outcome := w.carryOut(r, d, verdict{}, cartcache.Result{}, errors.New("no row names this"))
	require.Equal(t, LabelDeadLetter, outcome)
	require.Equal(t, []string{"term with reason"}, msg.settled, "terminated, never acked")
	require.Len(t, js.published, 1, "dead-lettered")
}

// EnvironmentFault is the one list of faults that hold commands without
// counting them: internal/app's probe names a setting for each.
func TestEnvironmentFault(t *testing.T) {
	for _, err := range []error{statepool.ErrUnauthorized, statepool.ErrStoreNotFound, statepool.ErrUnreachable} {
		require.True(t, EnvironmentFault(fmt.Errorf("call: %w", err)), "%v", err)
	}
	for _, err := range []error{nil, statepool.ErrBadRequest, cart.ErrInvalidCart, errors.New("dapr: connection reset")} {
		require.False(t, EnvironmentFault(err), "%v", err)
	}
}
