package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
)

// splitJSON decodes the JSON documents printed one after another.
func splitJSON(t *testing.T, out string) []map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	var docs []map[string]any
	for dec.More() {
		var d map[string]any
		require.NoError(t, dec.Decode(&d), out)
		docs = append(docs, d)
	}
	return docs
}

func TestPublishRaw(t *testing.T) {
	e := newEnv(t)
	e.startWorker(t)
	file := filepath.Join(t.TempDir(), "cache.json")
	body := `{"id":"raw-cache-1","type":"cache","cart_id":"c-raw","tenant_id":"T1","store_code":"S1","terminal_no":1}`
	require.NoError(t, os.WriteFile(file, []byte(body), 0o600))

	// A command subject: the ack, then the outcome of the body's id.
	r := e.run(t, "publish", "-raw", "-msg-id", "m-1", "cart.cmd.c-raw.cache", file)
	require.NoError(t, r.err, r.stderr)
	docs := splitJSON(t, r.stdout)
	require.Len(t, docs, 2, r.stdout)
	require.Equal(t, map[string]any{"subject": "cart.cmd.c-raw.cache", "msg_id": "m-1", "stream": command.StreamCommands,
		"seq": 1.0, "duplicate": false}, docs[0])
	require.Equal(t, "raw-cache-1", docs[1]["command_id"])
	require.Equal(t, "applied", docs[1]["outcome"])
	_, ok := e.dapr.Get("c-raw")
	require.True(t, ok, "the worker applied it")

	// The stored message is the file's bytes, with the Nats-Msg-Id asked for.
	st, err := e.js.Stream(ctx(t), command.StreamCommands)
	require.NoError(t, err)
	m, err := st.GetMsg(ctx(t), 1)
	require.NoError(t, err)
	require.Equal(t, body, string(m.Data))
	require.Equal(t, "m-1", m.Header.Get(nats.MsgIdHdr))
	requireTraceOf(t, r.stderr, m.Header)

	// The same Nats-Msg-Id again: JetStream drops it, and nothing is awaited.
	r = e.run(t, "publish", "-raw", "-msg-id", "m-1", "cart.cmd.c-raw.cache", file)
	require.NoError(t, r.err, r.stderr)
	require.Equal(t, true, splitJSON(t, r.stdout)[0]["duplicate"])
	require.Contains(t, r.stderr, "no outcome to wait for")

	// From stdin, with a new random id, and a rejection fails the command.
	add := `{"id":"raw-add-1","type":"add-item","cart_id":"c-none","items":[{"item_code":"A","quantity":1,"unit_price":1,"tax_code":"01"}]}`
	r = e.runWithStdin(t, add, "publish", "-raw", "cart.cmd.c-none.add-item", "-")
	require.Error(t, r.err)
	require.Contains(t, r.err.Error(), "add-item raw-add-1 on cart c-none rejected: cart_not_found")
	docs = splitJSON(t, r.stdout)
	require.Len(t, docs, 2, r.stdout)
	require.NotEmpty(t, docs[0]["msg_id"])
	require.NotEqual(t, "m-1", docs[0]["msg_id"])
	require.Equal(t, "rejected", docs[1]["outcome"])

	// Without waiting, a body the worker cannot read is only stored.
	r = e.runWithStdin(t, "{not json", "publish", "-raw", "-wait=false", "cart.cmd.c-raw.cache", "-")
	require.NoError(t, r.err, r.stderr)
	require.Len(t, splitJSON(t, r.stdout), 1)

	// No event is awaited on a subject that is not a command's, and one
	// that no stream holds is an error.
	r = e.runWithStdin(t, "x", "publish", "-raw", "cart.dlq.c-raw.cache", "-")
	require.NoError(t, r.err, r.stderr)
	require.Equal(t, command.StreamDeadLetters, splitJSON(t, r.stdout)[0]["stream"])
	r = e.runWithStdin(t, "x", "publish", "-raw", "-timeout", "2s", "nowhere.at.all", "-")
	require.Error(t, r.err)
	require.Contains(t, r.err.Error(), "publish to nowhere.at.all")
}

// A command subject whose outcome never comes: the wait ends at -timeout
// and says how to look for it later.
func TestPublishRawTimesOut(t *testing.T) {
	e := newEnv(t)
	r := e.runWithStdin(t, `{"id":"x"}`, "publish", "-raw", "-timeout", "300ms", "cart.cmd.c-1.delete", "-")
	require.Error(t, r.err)
	require.Contains(t, r.err.Error(), "no outcome on cart c-1 within 300ms")
	require.Contains(t, r.err.Error(), "'cartctl watch -cart c-1'")
	require.Len(t, splitJSON(t, r.stdout), 1, "the ack is printed")
}

// -items reads prices as the worker does: real digits past the fourth
// decimal are refused, not rounded into another price.
func TestAddItemsRefusesRealDigitsPastFourDecimals(t *testing.T) {
	_, err := readItems(`[{"item_code":"A","quantity":1,"unit_price":1.23456,"tax_code":"T1"}]`)
	require.ErrorContains(t, err, "unit_price")
	items, err := readItems(`[{"item_code":"A","quantity":1,"unit_price":0.30000000000000004,"tax_code":"T1"}]`)
	require.NoError(t, err)
	require.Equal(t, "0.3", items[0].UnitPrice.String())
	_, err = readItems(`[{"item_code":"A","quantity":1,"unit_price":1,"tax_code":"T1","colour":"red"}]`)
	require.ErrorContains(t, err, "colour")
}

// requireTraceOf checks that the stored command carries a sampled W3C
// traceparent in the trace whose id cartctl printed on stderr.
func requireTraceOf(t *testing.T, stderr string, h nats.Header) {
	t.Helper()
	_, after, ok := strings.Cut(stderr, "trace id: ")
	require.True(t, ok, "cartctl printed no trace id: %s", stderr)
	tid, _, _ := strings.Cut(after, "\n")
	require.Len(t, tid, 32)
	tp := h.Get("Traceparent")
	require.Regexp(t, "^00-"+tid+"-[0-9a-f]{16}-01$", tp)
}
