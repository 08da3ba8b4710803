package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cartworker/cartworker/bench/loadkit"
	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/money"
)

const batchMetrics = `# HELP cartworker_batch_size Commands of one cart applied together in one read-modify-write.
# TYPE cartworker_batch_size histogram
cartworker_batch_size_bucket{le="1"} 10
cartworker_batch_size_bucket{le="2"} 40
cartworker_batch_size_bucket{le="4"} 90
cartworker_batch_size_bucket{le="8"} 100
cartworker_batch_size_bucket{le="+Inf"} 100
cartworker_batch_size_sum 350
cartworker_batch_size_count 100
cartworker_state_connections_opened_total 3
`

func TestParseBatchSizes(t *testing.T) {
	h, err := parseHistogram(strings.NewReader(batchMetrics), metricBatchSize)
	if err != nil || h == nil {
		t.Fatalf("%v %v", h, err)
	}
	if h.Count != 100 || h.Sum != 350 || h.Mean != 3.5 || len(h.Buckets) != 5 {
		t.Fatalf("%+v", h)
	}
	// 40 of 100 are at most 2, 90 at most 4: the median is in (2, 4].
	if h.P50 != "4" || h.P90 != "4" || h.Max != "8" {
		t.Errorf("p50 %s p90 %s max %s", h.P50, h.P90, h.Max)
	}
	// A worker without the histogram: n/a, not an error.
	if h, err := parseHistogram(strings.NewReader("cartworker_state_connections_opened_total 3\n"), metricBatchSize); err != nil || h != nil {
		t.Errorf("absent histogram: %v %v", h, err)
	}
	// Labels besides le are summed over.
	h, _ = parseHistogram(strings.NewReader(`cartworker_batch_size_bucket{type="a",le="1"} 2
cartworker_batch_size_bucket{le="1",type="b"} 3
cartworker_batch_size_bucket{type="a",le="+Inf"} 2
cartworker_batch_size_bucket{type="b",le="+Inf"} 3
cartworker_batch_size_sum{type="a"} 2
cartworker_batch_size_sum{type="b"} 3
cartworker_batch_size_count{type="a"} 2
cartworker_batch_size_count{type="b"} 3
`), metricBatchSize)
	if h == nil || h.Count != 5 || h.Buckets[0].Count != 5 || h.Max != "1" {
		t.Errorf("labelled %+v", h)
	}
}

func TestBacklogCommands(t *testing.T) {
	cmds := backlogCommands("bl-x", 3, 4)
	seen := map[string]bool{}
	for c, cart := range cmds {
		if len(cart) != 5 || cart[0].Type != command.TypeCache {
			t.Fatalf("cart %d: %d commands, first %s", c, len(cart), cart[0].Type)
		}
		for l, cmd := range cart {
			if seen[cmd.ID] {
				t.Fatalf("id %s twice", cmd.ID)
			}
			seen[cmd.ID] = true
			if err := cmd.Validate(); err != nil {
				t.Fatalf("%s: %v", cmd.ID, err)
			}
			if l > 0 && (cmd.Type != command.TypeAddItem || cmd.Items[0].ItemCode != loadkit.ItemFor(l).ItemCode) {
				t.Fatalf("cart %d line %d: %+v", c, l, cmd)
			}
		}
	}
	// 137 + 174 + 211 + 248, one each.
	if got := expectedSubtotal([]int{1, 2, 3, 4}); got != money.FromInt(770) {
		t.Errorf("subtotal %s", got)
	}
}

func TestEventWatch(t *testing.T) {
	w := newEventWatch([]string{"a", "b", "c", "d"}, command.CodeCartTooLarge)
	send := func(ev command.Event) {
		b, _ := json.Marshal(ev)
		w.handle(&nats.Msg{Data: b})
	}
	send(command.Event{CommandID: "a", Outcome: command.OutcomeApplied})
	send(command.Event{CommandID: "a", Outcome: command.OutcomeApplied}) // counted once
	send(command.Event{CommandID: "other", Outcome: command.OutcomeApplied})
	send(command.Event{CommandID: "b", Outcome: command.OutcomeApplied, Duplicate: true})
	select {
	case <-w.done:
		t.Fatal("done before every command")
	default:
	}
	send(command.Event{CommandID: "c", CartID: "x", Type: command.TypeAddItem, Outcome: command.OutcomeRejected,
		Error: &command.EventError{Code: command.CodeCartNotFound, Message: "no cart"}})
	// The scenario's expected refusal is counted apart from rejections.
	send(command.Event{CommandID: "d", CartID: "x", Type: command.TypeAddItem, Outcome: command.OutcomeRejected,
		Error: &command.EventError{Code: command.CodeCartTooLarge, Message: "too large"}})
	select {
	case <-w.done:
	case <-time.After(time.Second):
		t.Fatal("not done")
	}
	if len(w.applied) != 2 || !w.applied["b"] || w.rejected != 1 || w.refused != 1 || w.duplicates != 1 || len(w.examples) != 1 || !strings.Contains(w.examples[0], "cart_not_found") {
		t.Errorf("%+v", w)
	}
}
