package consumer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/consumer"
)

func TestHappyPath(t *testing.T) {
	e := newEnv(t)
	obs := newObserver()
	e.startWorker(t, consumer.Config{Observer: obs}, nil)

	ids := []string{"cache-c1"}
	e.publishCmd(t, cacheCmd("c1", ""))
	for i := 1; i <= 5; i++ {
		id := "add-" + strconv.Itoa(i)
		ids = append(ids, id)
		e.publishCmd(t, addCmd(id, "c1", item("I"+strconv.Itoa(i), 2, "120", "01")))
	}
	e.events.waitApplied(t, ids...)
	for _, id := range ids {
		ev := e.events.forCommand(id)[0]
		require.Equal(t, "c1", ev.CartID)
		require.Nil(t, ev.Error)
		wantType := command.TypeAddItem
		if id == "cache-c1" {
			wantType = command.TypeCache
		}
		require.Equal(t, wantType, ev.Type)
	}

	c := e.cart(t, "c1")
	require.Equal(t, []string{"I1", "I2", "I3", "I4", "I5"}, e.lineCodes(t, "c1"), "lines in publish order")
	require.Equal(t, cart.StatusEnteringItem, c["status"])
	for _, l := range c["line_items"].([]any) {
		require.InDelta(t, 240, l.(map[string]any)["amount"], 1e-9)
	}
	// 5 lines of 2 × 120 with external 10 %: 264 each.
	require.InDelta(t, 1200, c["subtotal_amount"], 1e-9)
	sales := c["sales"].(map[string]any)
	require.InDelta(t, 1200, sales["total_amount"], 1e-9)
	require.InDelta(t, 120, sales["tax_amount"], 1e-9)
	require.InDelta(t, 5*264, sales["total_amount_with_tax"], 1e-9)
	require.InDelta(t, 10, sales["total_quantity"], 1e-9)
	require.InDelta(t, 5*264, c["balance_amount"], 1e-9)
	applied := c[cart.AppliedIDsField].([]any)
	require.Len(t, applied, len(ids))
	for i, id := range ids {
		require.Equal(t, id, applied[i])
	}

	e.publishCmd(t, deleteCmd("del-1", "c1"))
	e.events.waitApplied(t, "del-1")
	_, ok := e.fake.Get("c1")
	require.False(t, ok, "the deleted cart's key must be gone")
	raw, ok := e.fake.Get(cartcache.TombstoneKey("c1"))
	require.True(t, ok, "a tombstone must remain")
	var tomb map[string]any
	require.NoError(t, json.Unmarshal(raw, &tomb))
	require.Equal(t, "del-1", tomb["deleted_by"])

	e.waitSettled(t)
	eventually(t, func() bool {
		return obs.count(string(command.TypeCache), consumer.LabelApplied) == 1 &&
			obs.count(string(command.TypeAddItem), consumer.LabelApplied) == 5 &&
			obs.count(string(command.TypeDelete), consumer.LabelApplied) == 1
	}, waitFor, tick, "observer: %s", obs)
	redelivered, deadLettered := obs.counts()
	require.Zero(t, redelivered)
	require.Zero(t, deadLettered)
	require.Len(t, e.events.all(), 7, "one event per command")
	require.Empty(t, e.deadLetters(t))

	// Every applied command reports its stages, in the order it passed
	// them (the embedded server shares the test's clock).
	eventually(t, func() bool { return len(obs.stages()) == 7 }, waitFor, tick, "acked stages: %d", len(obs.stages()))
	for _, st := range obs.stages() {
		times := []time.Time{st.Stored, st.Fetched, st.Started, st.Applied, st.Acked}
		for i := range times {
			require.False(t, times[i].IsZero(), "stage %d of %+v", i, st)
			if i > 0 {
				require.False(t, times[i].Before(times[i-1]), "stage %d before %d: %+v", i, i-1, st)
			}
		}
	}
}

func TestIdempotency(t *testing.T) {
	e := newEnv(t)
	obs := newObserver()
	e.startWorker(t, consumer.Config{Observer: obs}, nil)

	cache := cacheCmd("c1", "")
	add := addCmd("a1", "c1", item("A", 1, "100", "01"))
	e.publishCmd(t, cache)
	e.publishCmd(t, add)
	e.events.waitApplied(t, cache.ID, add.ID)
	before, _ := e.fake.Get("c1")
	etag, _ := e.fake.ETag("c1")

	// Republished under another Nats-Msg-Id, JetStream stores it again and
	// the cart's applied-id list is what recognises it.
	for _, tt := range []struct {
		cmd   command.Command
		msgID string
	}{
		{add, "a1-again"},
		{cache, "cache-again"},
	} {
		e.publishCmdAs(t, tt.cmd, tt.msgID)
		eventually(t, func() bool { return len(e.events.forCommand(tt.cmd.ID)) == 2 }, waitFor, tick)
		evs := e.events.forCommand(tt.cmd.ID)
		require.Equal(t, command.OutcomeApplied, evs[1].Outcome)
		require.True(t, evs[1].Duplicate, "second application of %s must be a duplicate", tt.cmd.ID)
		require.False(t, evs[0].Duplicate)
	}
	after, _ := e.fake.Get("c1")
	etagAfter, _ := e.fake.ETag("c1")
	require.Equal(t, string(before), string(after), "a duplicate must not change the cart")
	require.Equal(t, etag, etagAfter, "a duplicate must not write")

	// Republished under the same Nats-Msg-Id within the window, JetStream
	// drops it at publish: no message, no event.
	seqBefore := e.streamInfo(t, command.StreamCommands).State.LastSeq
	ack := e.publishCmd(t, add)
	require.True(t, ack.Duplicate, "JetStream must flag the republish as a duplicate")
	require.Equal(t, seqBefore, e.streamInfo(t, command.StreamCommands).State.LastSeq, "nothing stored")
	// A later command on the same cart (same lane, so handled after anything
	// published before it) proves the worker has caught up.
	e.publishCmd(t, addCmd("a2", "c1", item("B", 1, "100", "01")))
	e.events.waitApplied(t, "a2")
	require.Len(t, e.events.forCommand(add.ID), 2, "no event for a publish JetStream dropped")
	require.Equal(t, []string{"A", "B"}, e.lineCodes(t, "c1"))

	// A delete redelivered after the cart is gone is a duplicate too.
	e.publishCmd(t, deleteCmd("d1", "c1"))
	e.events.waitApplied(t, "d1")
	e.publishCmdAs(t, deleteCmd("d1", "c1"), "d1-again")
	eventually(t, func() bool { return len(e.events.forCommand("d1")) == 2 }, waitFor, tick)
	require.True(t, e.events.forCommand("d1")[1].Duplicate)
	_, ok := e.fake.Get("c1")
	require.False(t, ok)

	e.waitSettled(t)
	eventually(t, func() bool { return obs.count("", consumer.LabelDuplicate) == 3 }, waitFor, tick, "observer: %s", obs)
}

func TestInvalidCommandsAreDeadLettered(t *testing.T) {
	e := newEnv(t)
	obs := newObserver()
	e.startWorker(t, consumer.Config{Observer: obs}, nil)

	e.publishCmd(t, cacheCmd("good", ""))
	e.events.waitApplied(t, "cache-good")
	// A stored cart that cannot be read: the worker finds out only when
	// applying, and that too is final.
	e.fake.Put("broken", []byte(`{"line_items":"not a list"}`))

	body := func(c command.Command) []byte {
		b, err := command.Marshal(c)
		require.NoError(t, err)
		return b
	}
	add := func(cart string, items ...command.Item) command.Command {
		return addCmd("id-"+cart, cart, items...)
	}
	ok1 := item("X", 1, "10", "01")
	tooMany := make([]command.Item, command.MaxItems+1)
	for i := range tooMany {
		tooMany[i] = item("X"+strconv.Itoa(i), 1, "1", "00")
	}
	huge := add("huge", ok1)
	huge.Items[0].Description = strings.Repeat("x", command.MaxBodyBytes)
	wrongType := add("wrongtype", ok1)
	wrongType.Type = command.TypeCache
	unknownBodyType := add("bodytype", ok1)
	unknownBodyType.Type = "frobnicate"
	notObject := cacheCmd("notobject", `[1,2]`)
	notObject.ID = "id-notobject"

	type tc struct {
		name     string
		subject  string
		body     []byte
		msgID    string
		code     string
		dlq      string       // dead-letter subject
		evType   command.Type // type of the rejected event; "" when none is due
		evCartID string
	}
	cmdCase := func(name string, c command.Command, code string) tc {
		subj := subjects.Command(c.CartID, command.TypeAddItem)
		return tc{name: name, subject: subj, body: body(c), msgID: c.ID, code: code,
			dlq: subjects.DeadLetter(c.CartID, "add-item"), evType: command.TypeAddItem, evCartID: c.CartID}
	}
	cases := []tc{
		{name: "undecodable JSON", subject: "cart.cmd.json.add-item", body: []byte(`{"id":"id-json","type":`), msgID: "id-json",
			code: command.CodeMalformedJSON, dlq: "cart.dlq.json.add-item", evType: command.TypeAddItem, evCartID: "json"},
		{name: "trailing data", subject: "cart.cmd.trailing.delete", body: []byte(`{"id":"id-trailing","type":"delete","cart_id":"trailing"} {}`), msgID: "id-trailing",
			code: command.CodeMalformedJSON, dlq: "cart.dlq.trailing.delete", evType: command.TypeDelete, evCartID: "trailing"},
		{name: "unknown type in subject", subject: "cart.cmd.unknowntype.frobnicate", body: []byte(`{"id":"id-unknowntype","type":"frobnicate","cart_id":"unknowntype"}`), msgID: "id-unknowntype",
			code: command.CodeUnknownType, dlq: "cart.dlq.unknowntype.unknown", evType: "unknown", evCartID: "unknowntype"},
		cmdCase("unknown type in body", unknownBodyType, command.CodeUnknownType),
		{name: "subject and body cart differ", subject: "cart.cmd.mismatch.add-item", body: body(addCmd("id-mismatch", "other", ok1)), msgID: "id-mismatch",
			code: command.CodeSubjectMismatch, dlq: "cart.dlq.mismatch.add-item", evType: command.TypeAddItem, evCartID: "mismatch"},
		cmdCase("subject and body type differ", wrongType, command.CodeSubjectMismatch),
		{name: "invalid cart id in subject", subject: "cart.cmd.c@1.add-item", body: body(addCmd("id-at", "c@1", ok1)), msgID: "id-at",
			code: command.CodeInvalidCartID, dlq: "cart.dlq._invalid_.add-item"},
		{name: "subject of another shape", subject: "cart.cmd.shape.add-item.extra", body: body(addCmd("id-shape", "shape", ok1)), msgID: "id-shape",
			code: command.CodeSubjectMismatch, dlq: "cart.dlq._invalid_.unknown"},
		cmdCase("quantity 0", add("qty0", item("X", 0, "10", "01")), command.CodeInvalidQuantity),
		cmdCase("quantity 10000", add("qty10000", item("X", command.MaxQuantity+1, "10", "01")), command.CodeInvalidQuantity),
		cmdCase("negative price", add("negprice", item("X", 1, "-1", "01")), command.CodeInvalidPrice),
		cmdCase("101 items", add("toomany", tooMany...), command.CodeTooManyItems),
		cmdCase("no items", add("noitems"), command.CodeNoItems),
		cmdCase("empty item code", add("nocode", item("", 1, "1", "01")), command.CodeInvalidItem),
		cmdCase("body over 1 MiB", huge, command.CodeBodyTooLarge),
		{name: "missing id", subject: "cart.cmd.noid.add-item", body: body(addCmd("", "noid", ok1)),
			code: command.CodeMissingID, dlq: "cart.dlq.noid.add-item", evType: command.TypeAddItem, evCartID: "noid"},
		{name: "cached cart not an object", subject: "cart.cmd.notobject.cache", body: body(notObject), msgID: notObject.ID,
			code: command.CodeInvalidCart, dlq: "cart.dlq.notobject.cache", evType: command.TypeCache, evCartID: "notobject"},
		cmdCase("stored cart unreadable", add("broken", ok1), command.CodeInvalidCart),
	}
	for _, c := range cases {
		if c.code == command.CodeBodyTooLarge {
			require.Greater(t, len(c.body), command.MaxBodyBytes, "the oversized body must really be oversized")
		}
	}

	var goodIDs []string
	seqs := map[string]uint64{}
	for i, c := range cases {
		seqs[c.subject] = e.publish(t, c.subject, c.body, c.msgID).Sequence
		id := fmt.Sprintf("good-%02d", i)
		goodIDs = append(goodIDs, id)
		e.publishCmd(t, addCmd(id, "good", item(id, 1, "10", "00")))
	}

	e.events.waitApplied(t, goodIDs...)
	require.Equal(t, goodIDs, e.lineCodes(t, "good"), "good commands around the bad ones are all applied, in order")
	e.waitSettled(t)

	var dls []*jetstream.RawStreamMsg
	eventually(t, func() bool {
		dls = e.deadLetters(t)
		return len(dls) >= len(cases)
	}, waitFor, tick, "dead letters")
	require.Len(t, dls, len(cases), "one dead letter per bad command")
	bySubject := map[string]*jetstream.RawStreamMsg{}
	for _, m := range dls {
		bySubject[m.Header.Get(command.HeaderDLQSubject)] = m
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dl := bySubject[c.subject]
			require.NotNil(t, dl, "no dead letter for %s", c.subject)
			require.Equal(t, c.dlq, dl.Subject)
			require.Equal(t, c.code, dl.Header.Get(command.HeaderDLQCode))
			require.NotEmpty(t, dl.Header.Get(command.HeaderDLQReason))
			require.LessOrEqual(t, len(dl.Header.Get(command.HeaderDLQReason)), 512)
			require.Equal(t, "1", dl.Header.Get(command.HeaderDLQDeliveries), "dead-lettered on the first delivery")
			require.Equal(t, "dlq-"+strconv.FormatUint(seqs[c.subject], 10), dl.Header.Get(command.HeaderMsgID),
				"the dead letter is de-duplicated on the original stream sequence")
			require.Equal(t, c.msgID, dl.Header.Get(command.HeaderDLQMsgID), "the command's own Nats-Msg-Id is kept")
			require.True(t, bytes.Equal(c.body, dl.Data), "the dead letter carries the original body")

			evs := e.filterRejected(c.subject)
			if c.evType == "" {
				require.Empty(t, evs, "no event when the subject names no valid cart")
				return
			}
			eventually(t, func() bool { return len(e.events.forCart(c.evCartID)) > 0 }, waitFor, tick)
			evs = e.events.forCart(c.evCartID)
			require.Len(t, evs, 1)
			ev := evs[0]
			require.Equal(t, command.OutcomeRejected, ev.Outcome)
			require.Equal(t, c.evType, ev.Type)
			require.Equal(t, c.msgID, ev.CommandID)
			require.NotNil(t, ev.Error)
			require.Equal(t, c.code, ev.Error.Code)
			require.NotEmpty(t, ev.Error.Message)
		})
	}
	// No event leaked for the carts of invalid ids, nor anywhere else.
	rejected := e.events.filter(func(ev command.Event) bool { return ev.Outcome == command.OutcomeRejected })
	want := 0
	for _, c := range cases {
		if c.evType != "" {
			want++
		}
	}
	require.Len(t, rejected, want)

	eventually(t, func() bool {
		_, dead := obs.counts()
		return dead == len(cases) && obs.count("", consumer.LabelDeadLetter) == len(cases)
	}, waitFor, tick, "observer: %s", obs)
	redelivered, _ := obs.counts()
	require.Zero(t, redelivered, "terminated commands are never redelivered")
	unknown := 0
	for _, c := range cases {
		if strings.HasSuffix(c.dlq, ".unknown") {
			unknown++
		}
	}
	require.Equal(t, 2, unknown)
	require.Equal(t, unknown, obs.count("unknown", consumer.LabelDeadLetter), "commands whose subject has no known type are typed unknown")
}

// filterRejected returns rejected events whose cart is the cart token of a
// command subject.
func (e *env) filterRejected(subject string) []command.Event {
	cartID, _, _ := subjects.ParseCommand(subject)
	return e.events.filter(func(ev command.Event) bool {
		return ev.Outcome == command.OutcomeRejected && ev.CartID == cartID && cartID != ""
	})
}

func TestBusinessRejections(t *testing.T) {
	e := newEnv(t)
	obs := newObserver()
	e.startWorker(t, consumer.Config{Observer: obs}, nil)

	e.publishCmd(t, cacheCmd("paying", `{"status":"Paying"}`))
	e.publishCmd(t, cacheCmd("open", ""))
	e.events.waitApplied(t, "cache-paying", "cache-open")

	tests := []struct {
		name string
		cmd  command.Command
		code string
	}{
		{"missing cart", addCmd("a-ghost", "ghost", item("A", 1, "1", "00")), command.CodeCartNotFound},
		{"cart paying", addCmd("a-paying", "paying", item("A", 1, "1", "00")), command.CodeInvalidState},
		{"unknown tax code", addCmd("a-tax", "open", item("A", 1, "1", "99")), command.CodeUnknownTaxCode},
	}
	published := map[string]time.Time{}
	for _, tt := range tests {
		published[tt.cmd.ID] = time.Now()
		e.publishCmd(t, tt.cmd)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := e.events.waitCommand(t, tt.cmd.ID)
			require.Equal(t, command.OutcomeRejected, ev.Outcome)
			require.Equal(t, tt.cmd.Type, ev.Type)
			require.Equal(t, tt.cmd.CartID, ev.CartID)
			require.NotNil(t, ev.Error)
			require.Equal(t, tt.code, ev.Error.Code)
			require.Len(t, e.events.forCommand(tt.cmd.ID), 1)
		})
	}
	e.waitSettled(t)
	require.Empty(t, e.deadLetters(t), "business rejections are not dead letters")
	require.Empty(t, e.cart(t, "paying")["line_items"])
	require.Empty(t, e.cart(t, "open")["line_items"])
	_, ok := e.fake.Get("ghost")
	require.False(t, ok)

	eventually(t, func() bool { return obs.count(string(command.TypeAddItem), consumer.LabelRejected) == 3 }, waitFor, tick, "observer: %s", obs)
	require.Zero(t, obs.count(string(command.TypeAddItem), consumer.LabelRetry), "a missing cart is rejected at once")
	redelivered, dead := obs.counts()
	require.Zero(t, redelivered)
	require.Zero(t, dead)
}

// An add-item stored before its cart's cache is rejected at once: commands
// apply in stream order, and waiting for the cache would hold up every cart
// of the partition, while the cache stored later is then applied.
func TestAddItemBeforeItsCacheIsRejectedInStreamOrder(t *testing.T) {
	e := newEnv(t)
	e.startWorker(t, consumer.Config{}, nil)

	e.publishCmd(t, addCmd("a1", "late", item("A", 1, "100", "01")))
	e.publishCmd(t, cacheCmd("late", ""))
	e.publishCmd(t, addCmd("a2", "late", item("B", 1, "100", "01")))

	ev := e.events.waitCommand(t, "a1")
	require.Equal(t, command.OutcomeRejected, ev.Outcome)
	require.Equal(t, command.CodeCartNotFound, ev.Error.Code)
	e.events.waitApplied(t, "cache-late", "a2")
	require.Equal(t, []string{"B"}, e.lineCodes(t, "late"))
	e.waitSettled(t)
	require.Empty(t, e.deadLetters(t))
}

func TestBreakerOpenKeepsCommands(t *testing.T) {
	// One failure opens the breaker, so that no command is Nak'ed for a
	// transient failure before it does.
	e := newEnv(t, withBreaker(breaker.Settings{ConsecutiveFailures: 1, Timeout: 200 * time.Millisecond}))
	obs := newObserver()
	// MaxDeliver 2: an outage that spent deliveries would dead-letter.
	e.startWorker(t, consumer.Config{Observer: obs, MaxDeliver: 2, Probe: breakerProbe(e.store)}, nil)

	e.publishCmd(t, cacheCmd("c1", ""))
	e.events.waitApplied(t, "cache-c1")

	e.fake.FailWith(http.StatusInternalServerError)
	var ids, codes []string
	for i := range 5 {
		id := "a" + strconv.Itoa(i)
		ids = append(ids, id)
		codes = append(codes, "I"+strconv.Itoa(i))
		e.publishCmd(t, addCmd(id, "c1", item(codes[i], 1, "10", "00")))
	}
	// Several breaker_open rounds, i.e. several breaker timeouts with failed
	// probes in between.
	eventually(t, func() bool { return obs.count("", consumer.LabelBreakerOpen) >= 5 }, waitFor, tick, "observer: %s", obs)
	for _, id := range ids {
		require.Empty(t, e.events.forCommand(id), "nothing is applied or rejected while the store is down")
	}
	require.Empty(t, e.deadLetters(t), "an open breaker never dead-letters")
	info := e.consumerInfo(t)
	require.EqualValues(t, 5, uint64(info.NumAckPending)+info.NumPending, "the commands are kept, unacknowledged")

	e.fake.Heal()
	e.events.waitApplied(t, ids...)
	require.Equal(t, codes, e.lineCodes(t, "c1"), "each command applied exactly once, in order")
	e.waitSettled(t)
	require.Empty(t, e.deadLetters(t))
	require.Equal(t, breaker.StateClosed, e.store.State())
	_, dead := obs.counts()
	require.Zero(t, obs.count("", consumer.LabelRetry), "an outage counts no failure: commands are held or handed back")
	require.Zero(t, dead)
	require.Zero(t, obs.count("", consumer.LabelDeadLetter))
	eventually(t, func() bool { return obs.count(string(command.TypeAddItem), consumer.LabelApplied) == 5 }, waitFor, tick, "observer: %s", obs)
}

// breakerProbe fails while b is open, as the worker's probe does.
func breakerProbe(b *breaker.Breaker) func(context.Context) error {
	return func(context.Context) error {
		if b.State() == breaker.StateOpen {
			return errors.New("breaker open")
		}
		return nil
	}
}

func TestTransientFailuresDeadLetterAfterMaxDeliver(t *testing.T) {
	e := newEnv(t, withBreaker(breaker.Settings{ConsecutiveFailures: 1 << 30}))
	obs := newObserver()
	e.startWorker(t, consumer.Config{Observer: obs, MaxDeliver: 3}, nil)

	e.publishCmd(t, cacheCmd("c1", ""))
	e.events.waitApplied(t, "cache-c1")
	e.fake.FailWith(http.StatusServiceUnavailable)

	const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	body, err := command.Marshal(addCmd("a1", "c1", item("A", 1, "10", "00")))
	require.NoError(t, err)
	m := nats.NewMsg(subjects.Command("c1", command.TypeAddItem))
	m.Data = body
	m.Header.Set(command.HeaderMsgID, "a1")
	m.Header.Set("Traceparent", traceparent)
	e.publishMsg(t, m)
	ev := e.events.waitCommand(t, "a1")
	require.Equal(t, command.OutcomeRejected, ev.Outcome)
	require.Equal(t, command.TypeAddItem, ev.Type)
	require.Equal(t, "c1", ev.CartID)
	require.NotNil(t, ev.Error)
	require.Equal(t, command.CodeMaxDeliveries, ev.Error.Code)

	dls := e.deadLetters(t)
	require.Len(t, dls, 1)
	dl := dls[0]
	require.Equal(t, subjects.DeadLetter("c1", "add-item"), dl.Subject)
	require.Equal(t, command.CodeMaxDeliveries, dl.Header.Get(command.HeaderDLQCode))
	require.Equal(t, "3", dl.Header.Get(command.HeaderDLQDeliveries))
	require.Equal(t, subjects.Command("c1", command.TypeAddItem), dl.Header.Get(command.HeaderDLQSubject))
	require.Contains(t, dl.Header.Get(command.HeaderDLQReason), "503")
	require.Equal(t, traceparent, dl.Header.Get("Traceparent"), "the publisher's own headers are kept")
	require.Equal(t, "a1", dl.Header.Get(command.HeaderDLQMsgID))
	require.Equal(t, body, dl.Data)
	require.Equal(t, "a1", ev.CommandID)

	e.waitSettled(t)
	eventually(t, func() bool { return obs.count(string(command.TypeAddItem), consumer.LabelDeadLetter) == 1 }, waitFor, tick, "observer: %s", obs)
	require.Equal(t, 2, obs.count(string(command.TypeAddItem), consumer.LabelRetry))
	redelivered, dead := obs.counts()
	require.Zero(t, redelivered, "retried in place, behind nothing of its cart")
	require.Equal(t, 1, dead)
	require.Equal(t, breaker.StateClosed, e.store.State(), "the breaker was set never to open")

	e.fake.Heal()
	require.Empty(t, e.cart(t, "c1")["line_items"], "a dead-lettered command is not applied")
}

func TestConcurrencyIsBounded(t *testing.T) {
	const n, carts = 4, 40
	e := newEnv(t)
	reached := make(chan struct{})
	var once sync.Once
	var app *recApplier
	app = newApplier(nil, func(ctx context.Context, cmd command.Command) error {
		if m, _, _ := app.stats(); m >= n {
			once.Do(func() { close(reached) })
		}
		// Hold each command until the bound has been reached once, so that
		// reaching it does not depend on scheduling, then keep the pressure
		// on with a short hold.
		timer := time.NewTimer(waitFor)
		defer timer.Stop()
		select {
		case <-reached:
		case <-timer.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		return sleep(ctx, 5*time.Millisecond)
	})
	r := e.startWorker(t, consumer.Config{Concurrency: n}, app)
	ids := cartsOnDistinctLanes(t, r.w, "cc", n, carts)

	var cmdIDs []string
	for _, cart := range ids {
		id := "a-" + cart
		cmdIDs = append(cmdIDs, id)
		e.publishCmd(t, addCmd(id, cart, item("A", 1, "1", "00")))
	}
	e.events.waitApplied(t, cmdIDs...)
	maxInFlight, perCart, calls := app.stats()
	require.Equal(t, n, maxInFlight, "in flight must reach Concurrency and never exceed it")
	require.Equal(t, 1, perCart)
	require.Len(t, calls, carts)
	e.waitSettled(t)
}
