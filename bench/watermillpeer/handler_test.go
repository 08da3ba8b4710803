package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/statepool"
)

// memStore is an in-memory cartcache.Store with ETags.
type memStore struct {
	mu    sync.Mutex
	data  map[string][]byte
	etags map[string]int
}

func (m *memStore) Get(_ context.Context, key string) (statepool.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.data[key]
	if !ok {
		return statepool.Entry{}, statepool.ErrNotFound
	}
	return statepool.Entry{Value: v, ETag: fmt.Sprint(m.etags[key])}, nil
}

func (m *memStore) Save(_ context.Context, key string, v []byte, o statepool.SaveOptions) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.data[key]; o.ETag != "" && (!ok || o.ETag != fmt.Sprint(m.etags[key])) {
		return statepool.ErrETagMismatch
	}
	m.data[key] = v
	m.etags[key]++
	return nil
}

func (m *memStore) Delete(_ context.Context, key, etag string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.data[key]; etag != "" && ok && etag != fmt.Sprint(m.etags[key]) {
		return statepool.ErrETagMismatch
	}
	delete(m.data, key)
	return nil
}

// recorder is a message.Publisher that keeps what it is given.
type recorder struct {
	topics []string
	events []command.Event
}

func (r *recorder) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		var ev command.Event
		if err := json.Unmarshal(m.Payload, &ev); err != nil {
			return err
		}
		r.topics = append(r.topics, topic)
		r.events = append(r.events, ev)
	}
	return nil
}

func (r *recorder) Close() error { return nil }

func TestHandlerAppliesAndAnswers(t *testing.T) {
	s := command.Subjects{}
	pub := &recorder{}
	h := &handler{carts: cartcache.New(statepool.OneByOne{Single: &memStore{data: map[string][]byte{}, etags: map[string]int{}}}, cartcache.Config{}), subjects: s, pub: pub}
	u := subjectUnmarshaler{subjects: s}
	deliver := func(cmd command.Command) error {
		body, err := command.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		// As the stream stores it: partitioned.
		m := &nats.Msg{Subject: "cart.pcmd.3." + cmd.CartID + "." + string(cmd.Type), Data: body, Header: nats.Header{}}
		m.Header.Set(nats.MsgIdHdr, cmd.ID)
		msg, err := u.Unmarshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if msg.UUID != cmd.ID || msg.Metadata.Get(metaSubject) != s.Command(cmd.CartID, cmd.Type) {
			t.Fatalf("unmarshalled %+v", msg)
		}
		return h.handle(msg)
	}
	add := command.Command{ID: "a1", Type: command.TypeAddItem, CartID: "c1",
		Items: []command.Item{{ItemCode: "I1", Quantity: 2, TaxCode: "01"}}}
	// An add-item before its cache is rejected, acked, not retried.
	if err := deliver(add); err != nil {
		t.Fatal(err)
	}
	if err := deliver(command.Command{ID: "c0", Type: command.TypeCache, CartID: "c1"}); err != nil {
		t.Fatal(err)
	}
	add.ID = "a2"
	if err := deliver(add); err != nil {
		t.Fatal(err)
	}
	// Again: a duplicate.
	if err := deliver(add); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		topic, id string
		outcome   command.Outcome
		dup       bool
	}{
		{"cart.evt.c1.rejected", "a1", command.OutcomeRejected, false},
		{"cart.evt.c1.applied", "c0", command.OutcomeApplied, false},
		{"cart.evt.c1.applied", "a2", command.OutcomeApplied, false},
		{"cart.evt.c1.applied", "a2", command.OutcomeApplied, true},
	}
	if len(pub.events) != len(want) {
		t.Fatalf("%d events: %+v", len(pub.events), pub.events)
	}
	for i, w := range want {
		ev := pub.events[i]
		if pub.topics[i] != w.topic || ev.CommandID != w.id || ev.Outcome != w.outcome || ev.Duplicate != w.dup {
			t.Errorf("event %d: %s %+v, want %+v", i, pub.topics[i], ev, w)
		}
	}
	if pub.events[0].Error == nil || pub.events[0].Error.Code != command.CodeCartNotFound {
		t.Errorf("rejection %+v", pub.events[0].Error)
	}
}

func TestRejection(t *testing.T) {
	if rejection(fmt.Errorf("x: %w", cart.ErrInvalidState)) != command.CodeInvalidState {
		t.Error("invalid state")
	}
	if rejection(fmt.Errorf("x: %w", statepool.ErrETagMismatch)) != "" || rejection(errors.New("daprd down")) != "" {
		t.Error("transient errors must be retried")
	}
}
