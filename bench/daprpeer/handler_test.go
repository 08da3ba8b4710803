package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"github.com/dapr/go-sdk/service/common"
	"google.golang.org/grpc/metadata"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
)

// events is a publisher that keeps the outcome events it is given, and
// fails those of the carts in failFor.
type events struct {
	mu       sync.Mutex
	subjects []string
	got      []command.Event
	failFor  map[string]bool
}

func (e *events) Publish(subject string, data []byte) error {
	var ev command.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failFor[ev.CartID] {
		return errors.New("NATS is down")
	}
	e.subjects = append(e.subjects, subject)
	e.got = append(e.got, ev)
	return nil
}

// outcomes lists the events as "<subject> <command id> <outcome>[ dup]".
func (e *events) outcomes() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, len(e.got))
	for i, ev := range e.got {
		out[i] = fmt.Sprintf("%s %s %s", e.subjects[i], ev.CommandID, ev.Outcome)
		if ev.Duplicate {
			out[i] += " dup"
		}
	}
	return out
}

// newTestHandler is a handler whose carts live in a daprfake reached
// through the go-sdk client, as the peer reaches its daprd.
func newTestHandler(t *testing.T) (*handler, *events, *daprfake.Fake) {
	t.Helper()
	store, fake := newFakeStore(t)
	ev := &events{failFor: map[string]bool{}}
	return &handler{carts: cartcache.New(store, cartcache.Config{}), subjects: command.Subjects{}, events: ev}, ev, fake
}

// stored is a command as the stream holds it: its partitioned subject and
// its body.
func stored(t *testing.T, cmd command.Command) (string, []byte) {
	t.Helper()
	body, err := command.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return "cart.pcmd.3." + cmd.CartID + "." + string(cmd.Type), body
}

func cacheCmd(id, cartID string) command.Command {
	return command.Command{ID: id, Type: command.TypeCache, CartID: cartID}
}

func addCmd(id, cartID, item string) command.Command {
	return command.Command{ID: id, Type: command.TypeAddItem, CartID: cartID,
		Items: []command.Item{{ItemCode: item, Quantity: 1, TaxCode: "01"}}}
}

func TestApplyAnswersEveryCommand(t *testing.T) {
	h, ev, _ := newTestHandler(t)
	ctx := context.Background()
	for _, cmd := range []command.Command{
		addCmd("a1", "c1", "I1"), // before its cache: refused, and final
		cacheCmd("k1", "c1"),
		addCmd("a2", "c1", "I2"),
		addCmd("a2", "c1", "I2"), // redelivered: a duplicate
	} {
		subject, body := stored(t, cmd)
		if err := h.apply(ctx, subject, body); err != nil {
			t.Fatalf("%s: %v", cmd.ID, err)
		}
	}
	want := []string{
		"cart.evt.c1.rejected a1 rejected",
		"cart.evt.c1.applied k1 applied",
		"cart.evt.c1.applied a2 applied",
		"cart.evt.c1.applied a2 applied dup",
	}
	if got := ev.outcomes(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if e := ev.got[0].Error; e == nil || e.Code != command.CodeCartNotFound {
		t.Errorf("rejection %+v, want %s", e, command.CodeCartNotFound)
	}
}

func TestApplyRejectsWhatCannotDecode(t *testing.T) {
	h, ev, _ := newTestHandler(t)
	ctx := context.Background()
	// A body that is no command, on a subject that names a cart: rejected
	// on that cart.
	if err := h.apply(ctx, "cart.pcmd.1.c2.add-item", []byte(`{"id":`)); err != nil {
		t.Fatal(err)
	}
	// A subject that names no cart: nowhere to answer, so nothing.
	if err := h.apply(ctx, "elsewhere", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if len(ev.got) != 1 || ev.got[0].Outcome != command.OutcomeRejected || ev.got[0].Error == nil {
		t.Fatalf("events %+v", ev.got)
	}
}

func TestApplyReturnsTransientFailures(t *testing.T) {
	h, ev, fake := newTestHandler(t)
	fake.FailNext(1, 500)
	subject, body := stored(t, cacheCmd("k1", "c1"))
	if err := h.apply(context.Background(), subject, body); err == nil {
		t.Fatal("a failing state store must be retried")
	}
	if len(ev.got) != 0 {
		t.Fatalf("no outcome for a command to retry; got %+v", ev.got)
	}
	// Delivered again, it applies.
	if err := h.apply(context.Background(), subject, body); err != nil {
		t.Fatal(err)
	}
	ev.failFor["c1"] = true
	subject, body = stored(t, addCmd("a1", "c1", "I1"))
	if err := h.apply(context.Background(), subject, body); err == nil {
		t.Fatal("an outcome event not sent must be retried")
	}
}

func TestFinalCode(t *testing.T) {
	for _, tc := range []struct {
		err   error
		code  string
		final bool
	}{
		{fmt.Errorf("x: %w", cart.ErrInvalidState), command.CodeInvalidState, true},
		{fmt.Errorf("x: %w", cart.ErrInvalidCart), command.CodeInvalidCart, true},
		{fmt.Errorf("x: %w", statepool.ErrBadRequest), command.CodeStateRejected, true},
		{fmt.Errorf("x: %w", statepool.ErrETagMismatch), "", false},
		{errors.New("daprd down"), "", false},
	} {
		if code, final := finalCode(tc.err); code != tc.code || final != tc.final {
			t.Errorf("finalCode(%v) = %q, %v; want %q, %v", tc.err, code, final, tc.code, tc.final)
		}
	}
}

func TestOnEventReadsTheSubjectHeader(t *testing.T) {
	h, ev, _ := newTestHandler(t)
	subject, body := stored(t, cacheCmd("k1", "c1"))
	// daprd sends the component's "Topic" metadata as a gRPC header, which
	// gRPC lower-cases.
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("topic", subject))
	retry, err := h.onEvent(ctx, &common.TopicEvent{RawData: body})
	if err != nil || retry {
		t.Fatalf("onEvent = %v, %v", retry, err)
	}
	if got := ev.outcomes(); len(got) != 1 || got[0] != "cart.evt.c1.applied k1 applied" {
		t.Fatalf("events %v", got)
	}
	// Without it the command cannot be checked against its subject.
	retry, err = h.onEvent(context.Background(), &common.TopicEvent{RawData: body})
	if err != nil || retry || len(ev.got) != 1 {
		t.Fatalf("no subject: %v, %v, events %v", retry, err, ev.outcomes())
	}
}

// bulkEntry is cmd as an entry of a bulk delivery.
func bulkEntry(t *testing.T, id string, cmd command.Command) *pb.TopicEventBulkRequestEntry {
	subject, body := stored(t, cmd)
	return &pb.TopicEventBulkRequestEntry{
		EntryId: id, Event: &pb.TopicEventBulkRequestEntry_Bytes{Bytes: body}, Metadata: map[string]string{subjectKey: subject},
	}
}

func TestOnBulkKeepsEachCartsOrder(t *testing.T) {
	h, ev, _ := newTestHandler(t)
	ev.failFor["c2"] = true
	req := &pb.TopicEventBulkRequest{Entries: []*pb.TopicEventBulkRequestEntry{
		bulkEntry(t, "e0", cacheCmd("k1", "c1")),
		bulkEntry(t, "e1", cacheCmd("k2", "c2")),
		bulkEntry(t, "e2", addCmd("a1", "c1", "I1")),
		bulkEntry(t, "e3", addCmd("a2", "c2", "I1")),
		bulkEntry(t, "e4", addCmd("a3", "c1", "I2")),
	}}
	res := h.onBulk(context.Background(), req)
	got := map[string]pb.TopicEventResponse_TopicEventResponseStatus{}
	for _, s := range res.GetStatuses() {
		got[s.GetEntryId()] = s.GetStatus()
	}
	want := map[string]pb.TopicEventResponse_TopicEventResponseStatus{
		// c1's commands apply in the order given...
		"e0": pb.TopicEventResponse_SUCCESS, "e2": pb.TopicEventResponse_SUCCESS, "e4": pb.TopicEventResponse_SUCCESS,
		// ... and c2's first failure holds back the rest of c2.
		"e1": pb.TopicEventResponse_RETRY, "e3": pb.TopicEventResponse_RETRY,
	}
	if len(got) != len(want) {
		t.Fatalf("statuses %v", got)
	}
	for id, s := range want {
		if got[id] != s {
			t.Errorf("entry %s: %s, want %s", id, got[id], s)
		}
	}
	want1 := []string{"cart.evt.c1.applied k1 applied", "cart.evt.c1.applied a1 applied", "cart.evt.c1.applied a3 applied"}
	if o := ev.outcomes(); strings.Join(o, "|") != strings.Join(want1, "|") {
		t.Fatalf("events %v, want %v", o, want1)
	}
}

func TestByCartGroupsInOrder(t *testing.T) {
	h := &handler{subjects: command.Subjects{}}
	entries := []*pb.TopicEventBulkRequestEntry{
		{Metadata: map[string]string{subjectKey: "cart.pcmd.1.a.cache"}},
		{Metadata: map[string]string{subjectKey: "cart.pcmd.2.b.cache"}},
		{Metadata: map[string]string{subjectKey: "nonsense"}},
		{Metadata: map[string]string{subjectKey: "cart.pcmd.1.a.add-item"}},
		{},
	}
	got := fmt.Sprint(h.byCart(entries))
	if want := "[[0 3] [1] [2] [4]]"; got != want {
		t.Fatalf("byCart = %s, want %s", got, want)
	}
}
