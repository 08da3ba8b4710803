package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/daprfake"
)

func decodeEvent(t *testing.T, s string) command.Event {
	t.Helper()
	var ev command.Event
	require.NoError(t, json.Unmarshal([]byte(s), &ev), s)
	return ev
}

func TestAddGetRoundTrip(t *testing.T) {
	e := newEnv(t, daprfake.WithAPIToken("s3cret-token"))
	e.vars["DAPR_API_TOKEN"] = "s3cret-token"
	e.startWorker(t)

	r := e.run(t, "cache", "-cart", "c-1", "-tenant", "T1", "-store-code", "S1", "-terminal", "7")
	require.NoError(t, r.err, r.stderr)
	ev := decodeEvent(t, r.stdout)
	require.Equal(t, command.OutcomeApplied, ev.Outcome)
	require.Equal(t, command.TypeCache, ev.Type)

	r = e.run(t, "add", "-cart", "c-1", "-item", "ITEM001", "-qty", "2", "-price", "120", "-tax", "01", "-desc", "Coffee")
	require.NoError(t, r.err, r.stderr)
	ev = decodeEvent(t, r.stdout)
	require.Equal(t, command.OutcomeApplied, ev.Outcome)
	require.Equal(t, command.TypeAddItem, ev.Type)
	// The command carries the trace cartctl printed (the worker's
	// forwarding of it is tested in internal/consumer and integration).
	st, err := e.js.Stream(ctx(t), command.StreamCommands)
	require.NoError(t, err)
	stored, err := st.GetMsg(ctx(t), 2)
	require.NoError(t, err)
	requireTraceOf(t, r.stderr, stored.Header)

	r = e.run(t, "add", "-cart", "c-1", "-items",
		`[{"item_code":"ITEM002","quantity":1,"unit_price":450,"tax_code":"11"},{"item_code":"ITEM003","quantity":1,"unit_price":110.5,"tax_code":"00"}]`)
	require.NoError(t, r.err, r.stderr)

	r = e.run(t, "get", "-cart", "c-1")
	require.NoError(t, r.err, r.stderr)
	require.Contains(t, r.stdout, "\n  \"cart_id\": \"c-1\"", "pretty-printed")
	var cart struct {
		TenantID   string `json:"tenant_id"`
		TerminalNo int    `json:"terminal_no"`
		LineItems  []struct {
			ItemCode string  `json:"item_code"`
			Amount   float64 `json:"amount"`
		} `json:"line_items"`
		Sales struct {
			TotalAmountWithTax float64 `json:"total_amount_with_tax"`
		} `json:"sales"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &cart))
	require.Equal(t, "T1", cart.TenantID)
	require.Equal(t, 7, cart.TerminalNo)
	require.Len(t, cart.LineItems, 3)
	require.Equal(t, "ITEM001", cart.LineItems[0].ItemCode)
	require.Equal(t, 240.0, cart.LineItems[0].Amount)
	// 240 + 24 (10 %) + 450 + 36 (8 %) + 110.5 (exempt)
	require.Equal(t, 860.5, cart.Sales.TotalAmountWithTax)

	r = e.run(t, "delete", "-cart", "c-1")
	require.NoError(t, r.err, r.stderr)
	r = e.run(t, "get", "-cart", "c-1")
	require.ErrorIs(t, r.err, errCartNotFound)
	require.Contains(t, r.err.Error(), "cart not found")
}

func TestTokenNeverPrinted(t *testing.T) {
	e := newEnv(t, daprfake.WithAPIToken("right"))
	e.vars["DAPR_API_TOKEN"] = "wrong-s3cret"
	e.vars["NATS_URL"] = "nats://user:natspass@127.0.0.1:1"

	r := e.run(t, "get", "-cart", "c-1")
	require.Error(t, r.err)
	require.Contains(t, r.err.Error(), "401")
	r2 := e.run(t, "demo", "-h")
	require.NoError(t, r2.err)
	r3 := e.run(t, "delete", "-cart", "c-1", "-timeout", "500ms")
	require.Error(t, r3.err)
	for _, out := range []string{r.err.Error(), r.stdout, r.stderr, r2.stdout, r2.stderr, r3.err.Error(), r3.stdout, r3.stderr} {
		require.NotContains(t, out, "s3cret")
		require.NotContains(t, out, "natspass")
	}
	require.Contains(t, r3.err.Error(), "127.0.0.1:1", "the server tried is named")
}

func TestGetNotFoundAndStoreFlag(t *testing.T) {
	e := newEnv(t, daprfake.WithStoreName("other"))
	e.dapr.Put("c-9", []byte(`{"cart_id":"c-9"}`))

	r := e.run(t, "get", "-cart", "missing", "-store", "other")
	require.Error(t, r.err)
	require.Equal(t, 1, exitCode(r.err, &bytes.Buffer{}))
	require.Contains(t, r.err.Error(), "cart not found")

	e.vars["CART_STATE_STORE"] = "other"
	r = e.run(t, "get", "-cart", "c-9")
	require.NoError(t, r.err)
	require.JSONEq(t, `{"cart_id":"c-9"}`, r.stdout)

	r = e.run(t, "get", "-cart", "c-9", "-store", "cartstore")
	require.Error(t, r.err, "the flag beats the environment")
	require.Contains(t, r.err.Error(), "400")
}

func TestCacheFromFile(t *testing.T) {
	e := newEnv(t)
	e.startWorker(t)
	file := filepath.Join(t.TempDir(), "cart.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"cart_id":"c-file","status":"Idle","memo":"kept verbatim"}`), 0o600))

	r := e.run(t, "cache", "-file", file)
	require.NoError(t, r.err, r.stderr)
	require.Equal(t, "c-file", decodeEvent(t, r.stdout).CartID)
	doc, ok := e.dapr.Get("c-file")
	require.True(t, ok)
	require.Contains(t, string(doc), `"memo":"kept verbatim"`)

	require.NoError(t, os.WriteFile(file, []byte(`[1]`), 0o600))
	r = e.run(t, "cache", "-cart", "c-file", "-file", file)
	var uerr *usageError
	require.ErrorAs(t, r.err, &uerr)
	require.Contains(t, r.err.Error(), command.CodeInvalidCart)
}

func TestAddRejected(t *testing.T) {
	e := newEnv(t)
	e.startWorker(t)

	r := e.run(t, "add", "-cart", "nope", "-item", "A", "-price", "1", "-tax", "01")
	require.Error(t, r.err)
	require.Equal(t, 1, exitCode(r.err, &bytes.Buffer{}))
	require.Contains(t, r.err.Error(), "rejected: cart_not_found")
	ev := decodeEvent(t, r.stdout)
	require.Equal(t, command.OutcomeRejected, ev.Outcome)
	require.Equal(t, command.CodeCartNotFound, ev.Error.Code)
}

// A command that would make the cart too large is reported with its code,
// the size and the limit, on stderr and in the event on stdout.
func TestAddRejectedAsTooLarge(t *testing.T) {
	e := newEnv(t)
	e.maxCartBytes = 3000
	e.startWorker(t)

	r := e.run(t, "cache", "-cart", "c-big", "-tenant", "T1", "-store-code", "S1", "-terminal", "1")
	require.NoError(t, r.err)
	items := "[" + strings.TrimSuffix(strings.Repeat(`{"item_code":"A","quantity":1,"unit_price":10,"tax_code":"01"},`, 20), ",") + "]"
	r = e.run(t, "add", "-cart", "c-big", "-items", items)
	require.Error(t, r.err)
	require.Equal(t, 1, exitCode(r.err, &bytes.Buffer{}))
	require.Regexp(t, `add-item \S+ on cart c-big rejected: cart_too_large: cart would be \d+ bytes, over WORKER_MAX_CART_BYTES 3000$`, r.err.Error())
	ev := decodeEvent(t, r.stdout)
	require.Equal(t, command.OutcomeRejected, ev.Outcome)
	require.Equal(t, command.CodeCartTooLarge, ev.Error.Code)
	require.Contains(t, ev.Error.Message, "over WORKER_MAX_CART_BYTES 3000")
}

func TestPublishWithoutWaitAndRetryByID(t *testing.T) {
	e := newEnv(t)

	r := e.run(t, "delete", "-cart", "c-1", "-id", "del-1", "-wait=false")
	require.NoError(t, r.err, r.stderr)
	var rc receiptJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rc))
	require.Equal(t, receiptJSON{CommandID: "del-1", Subject: "cart.cmd.c-1.delete", Stream: command.StreamCommands, Seq: 1}, rc)

	// No worker runs: waiting for the same id times out, and says why.
	r = e.run(t, "delete", "-cart", "c-1", "-id", "del-1", "-timeout", "300ms")
	require.Error(t, r.err)
	require.Contains(t, r.err.Error(), "already held a command with this id")
	r = e.run(t, "delete", "-cart", "c-2", "-timeout", "300ms")
	require.Error(t, r.err)
	require.Contains(t, r.err.Error(), "the command is stored and will be applied when cartworker gets to it")
	require.Equal(t, uint64(2), e.streamState(t, command.StreamCommands).Msgs)
}

func TestDemo(t *testing.T) {
	e := newEnv(t)
	e.startWorker(t)

	r := e.run(t, "demo", "-cart", "demo-test")
	require.NoError(t, r.err, r.stderr)
	out := r.stdout
	t.Log("\n" + out)
	for _, want := range []string{
		"cart demo-test\n",
		"cache", "add-item Coffee 2×120", "add-item Sandwich 1×450", "add-item Water 1×110",
		"cart demo-test: status EnteringItem, 3 lines, 4 items",
		"ITEM002", "Sandwich",
		"raw JSON: cartctl get -cart demo-test",
		"GET " + e.dapr.URL() + "/v1.0/state/cartstore/demo-test",
	} {
		require.Contains(t, out, want)
	}
	require.Equal(t, 4, strings.Count(out, " applied "), "one applied line per command")
	require.Regexp(t, `subtotal\s+800\b`, out)
	require.Regexp(t, `tax 01 External 10%\s+24\s+on 240\n`, out)
	require.Regexp(t, `tax 11 External 8%\s+36\s+on 450\n`, out)
	require.Regexp(t, `tax 02 Internal 10%\s+10\s+on 110, included in the price\n`, out)
	require.Regexp(t, `(?m)^\s+1\s+ITEM001\s+Coffee\s+2\s+120\s+240\s+01$`, out)
	require.Regexp(t, `total with tax\s+860\b`, out)

	// A random cart id by default.
	r = e.run(t, "demo")
	require.NoError(t, r.err, r.stderr)
	require.Regexp(t, `^cart demo-[0-9a-f]{8}\n`, r.stdout)
}

func TestDemoReadBackFails(t *testing.T) {
	e := newEnv(t)
	e.startWorker(t)
	r := e.run(t, "demo", "-cart", "demo-x", "-dapr", "http://127.0.0.1:1", "-timeout", "2s")
	require.Error(t, r.err)
	require.Contains(t, r.err.Error(), "read the cart back")
	require.Contains(t, r.stdout, "add-item Water 1×110", "the commands were applied first")
}

func TestDemoWithoutWorker(t *testing.T) {
	e := newEnv(t)
	r := e.run(t, "demo", "-cart", "demo-x", "-timeout", "300ms")
	require.Error(t, r.err)
	require.Contains(t, r.err.Error(), "cache: no outcome for cache")
}

func TestWatch(t *testing.T) {
	e := newEnv(t)
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- e.cli(&stdout, &stderr).run(ctx(t), []string{"watch", "-cart", "c-1", "-count", "2"}) }()
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "watching cart.evt.c-1.*") },
		10*time.Second, 5*time.Millisecond, stderr.String())

	var s command.Subjects
	publish := func(ev command.Event) {
		b, err := command.MarshalEvent(ev)
		require.NoError(t, err)
		require.NoError(t, e.nc.Publish(s.Event(ev.CartID, ev.Outcome), b))
	}
	publish(command.Event{CommandID: "x", CartID: "c-2", Type: command.TypeDelete, Outcome: command.OutcomeApplied})
	require.NoError(t, e.nc.Publish("cart.evt.c-1.applied", []byte("not json")))
	publish(command.Event{CommandID: "a", CartID: "c-1", Type: command.TypeCache, Outcome: command.OutcomeApplied})
	publish(command.Event{CommandID: "b", CartID: "c-1", Type: command.TypeAddItem, Outcome: command.OutcomeRejected,
		Error: &command.EventError{Code: "invalid_state", Message: "no"}})
	require.NoError(t, e.nc.Flush())

	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not stop after -count events")
	}
	got := lines(stdout.String())
	require.Len(t, got, 2)
	require.JSONEq(t, `{"command_id":"a","type":"cache","cart_id":"c-1","outcome":"applied","duplicate":false}`, got[0])
	require.Equal(t, "b", decodeEvent(t, got[1]).CommandID)
	require.Contains(t, stderr.String(), "not JSON")
}

func TestWatchStopsOnCancel(t *testing.T) {
	e := newEnv(t)
	var stdout, stderr syncBuffer
	c, cancel := contextWithCancel(t)
	done := make(chan error, 1)
	go func() { done <- e.cli(&stdout, &stderr).run(c, []string{"watch"}) }()
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "watching cart.evt.>") },
		10*time.Second, 5*time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "ctrl-C is the normal way to stop")
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not stop on cancel")
	}
}

func TestDLQListAndReplay(t *testing.T) {
	e := newEnv(t)
	body1 := `{"id":"cmd-1","type":"add-item","cart_id":"c-9","items":[{"item_code":"A","quantity":1,"unit_price":5}]}`
	seq1 := e.putDeadLetter(t, "c-9", "add-item", "", body1, "max_deliveries", "failed 10 deliveries, last: dapr: 503")
	seq2 := e.putDeadLetter(t, "c-8", "cache", "", `{"id":"cmd-2","type":"cache","cart_id":"c-8","cart":[1]}`, "invalid_cart", "cart must be a JSON object")
	// Its original subject is outside the command stream: replaying it
	// must fail rather than publish where the worker never reads.
	e.putDeadLetter(t, "_invalid_", "unknown", "elsewhere.cmd", `{not json`, "malformed_json", "invalid character 'n'")

	r := e.run(t, "dlq", "list")
	require.NoError(t, r.err, r.stderr)
	got := lines(r.stdout)
	require.Len(t, got, 4, r.stdout)
	require.Regexp(t, `^SEQ\s+SUBJECT\s+CODE\s+REASON\s+ORIGINAL SUBJECT\s+TIME`, got[0])
	require.Regexp(t, `^1\s+cart\.dlq\.c-9\.add-item\s+max_deliveries\s+"failed 10 deliveries, last: dapr: 503"\s+cart\.cmd\.c-9\.add-item\s+\d{4}-`, got[1])
	require.Regexp(t, `^2\s+cart\.dlq\.c-8\.cache\s+invalid_cart\s+`, got[2])
	require.Contains(t, r.stderr, "holds 3 dead letters")

	r = e.run(t, "dlq", "list", "-limit", "1", "-from", "2", "-json")
	require.NoError(t, r.err, r.stderr)
	got = lines(r.stdout)
	require.Len(t, got, 1)
	var dl deadLetter
	require.NoError(t, json.Unmarshal([]byte(got[0]), &dl))
	require.Equal(t, seq2, dl.Seq)
	require.Equal(t, "cmd-2", dl.CommandID)
	require.Equal(t, "cart.cmd.c-8.cache", dl.OriginalSubject)
	require.Contains(t, r.stderr, "use -from 3")

	// Replay one: it goes back to its subject with a new id, without the
	// worker's annotations, and leaves the DLQ.
	r = e.run(t, "dlq", "replay", "-seq", strconv.FormatUint(seq1, 10))
	require.NoError(t, r.err, r.stderr)
	require.Contains(t, r.stdout, "seq 1 replayed to cart.cmd.c-9.add-item as cmd-1-replay-1 (CART_COMMANDS seq 1)")
	require.Contains(t, r.stdout, "deleted from CART_DLQ")
	cmds, err := e.js.Stream(ctx(t), command.StreamCommands)
	require.NoError(t, err)
	m, err := cmds.GetLastMsgForSubject(ctx(t), "cart.cmd.c-9.add-item")
	require.NoError(t, err)
	require.JSONEq(t, body1, string(m.Data))
	require.Equal(t, "cmd-1-replay-1", m.Header.Get(nats.MsgIdHdr))
	require.Equal(t, "00-abc-def-01", m.Header.Get("Traceparent"))
	for k := range m.Header {
		require.False(t, strings.HasPrefix(k, "Cartworker-"), "header %s copied", k)
	}
	_, err = (command.Subjects{}).Decode(m.Subject, m.Data)
	require.NoError(t, err)

	r = e.run(t, "dlq", "replay", "-seq", "1")
	require.Error(t, r.err)
	require.Contains(t, r.err.Error(), "no dead letter at seq 1")

	// Replay the rest, keeping them: the one outside the command stream is
	// reported, the other replayed and kept.
	r = e.run(t, "dlq", "replay", "-all", "-keep")
	require.Error(t, r.err)
	require.Contains(t, r.err.Error(), "1 dead letters not replayed")
	require.Contains(t, r.err.Error(), "seq 3: publish to elsewhere.cmd")
	require.Contains(t, r.stdout, "seq 2 replayed to cart.cmd.c-8.cache as cmd-2-replay-2")
	require.Contains(t, r.stdout, "kept in CART_DLQ")
	require.Contains(t, r.stderr, "seq 2: dead-lettered as invalid_cart")
	require.Contains(t, r.stderr, "replayed 1 dead letters")
	require.Equal(t, uint64(2), e.streamState(t, command.StreamDeadLetters).Msgs)

	// Replaying again within the duplicate window publishes nothing new.
	r = e.run(t, "dlq", "replay", "-seq", "2")
	require.NoError(t, r.err, r.stderr)
	require.Contains(t, r.stdout, "duplicate of an earlier replay")
	require.Contains(t, r.stdout, "deleted from CART_DLQ")
}

func TestDLQEmptyAndMissing(t *testing.T) {
	e := newEnv(t)
	r := e.run(t, "dlq", "list")
	require.NoError(t, r.err)
	require.Empty(t, r.stdout)
	require.Contains(t, r.stderr, "CART_DLQ is empty")

	require.NoError(t, e.js.DeleteStream(ctx(t), command.StreamDeadLetters))
	r = e.run(t, "dlq", "list")
	require.Error(t, r.err)
	require.Contains(t, r.err.Error(), "stream CART_DLQ not found")
}

func TestUsage(t *testing.T) {
	e := newEnv(t)
	e.vars["DAPR_API_TOKEN"] = "env-s3cret"
	e.vars["NATS_URL"] = "nats://env-host:4222"

	r := e.run(t, "-h")
	require.NoError(t, r.err)
	for _, sc := range subcommands() {
		require.Contains(t, r.stdout, "  "+sc.name+" ")
	}
	require.Contains(t, r.stdout, "NATS_CREDS")

	flagsOf := map[string][]string{
		"cache":      {"-cart", "-tenant", "-store-code", "-terminal", "-file", "-id", "-wait", "-nats-url", "-prefix", "-timeout"},
		"add":        {"-cart", "-item", "-qty", "-price", "-tax", "-desc", "-category", "-items", "-id", "-wait", "-nats-url", "-prefix", "-timeout"},
		"delete":     {"-cart", "-id", "-wait", "-nats-url", "-prefix", "-timeout"},
		"get":        {"-cart", "-dapr", "-dapr-token", "-store", "-timeout"},
		"watch":      {"-cart", "-count", "-nats-url", "-prefix", "-timeout"},
		"dlq list":   {"-limit", "-from", "-json", "-nats-url", "-prefix", "-timeout"},
		"dlq replay": {"-seq", "-all", "-keep", "-nats-url", "-prefix", "-timeout"},
		"dlq rm":     {"-seq", "-yes", "-nats-url", "-nats-tls-ca", "-prefix", "-timeout"},
		"dlq purge":  {"-yes", "-nats-url", "-nats-nkey-seed", "-prefix", "-timeout"},
		"publish":    {"-raw", "-msg-id", "-wait", "-nats-url", "-nats-tls-ca", "-nats-tls-cert", "-nats-tls-key", "-nats-nkey-seed", "-prefix", "-timeout"},
		"demo":       {"-cart", "-tenant", "-store-code", "-terminal", "-nats-url", "-prefix", "-dapr", "-dapr-token", "-store", "-timeout"},
	}
	for cmd, flags := range flagsOf {
		r := e.run(t, append(strings.Fields(cmd), "-h")...)
		require.NoError(t, r.err, cmd)
		require.Contains(t, r.stdout, "Usage: cartctl "+cmd+" ")
		for _, f := range flags {
			require.Regexp(t, `(?m)^  `+f+`\b`, r.stdout, "%s %s", cmd, f)
		}
		if strings.Contains(r.stdout, "-nats-url") {
			require.Contains(t, r.stdout, `(env NATS_URL) (default "nats://127.0.0.1:4222")`, "built-in defaults, not the environment's")
		}
		require.Contains(t, r.stdout, "(default 10s)")
		require.NotContains(t, r.stdout, "env-s3cret")
		require.NotContains(t, r.stdout, "env-host")
	}

	r = e.run(t, "help", "add")
	require.NoError(t, r.err)
	require.Contains(t, r.stdout, "Usage: cartctl add ")
	r = e.run(t, "dlq", "-h")
	require.NoError(t, r.err)
	require.Contains(t, r.stdout, "cartctl dlq <list|replay|rm|purge>")
}

func TestUsageErrors(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		args []string
		want string
	}{
		{nil, "cartctl: no command given"},
		{[]string{"frobnicate"}, `cartctl: unknown command "frobnicate"`},
		{[]string{"add", "-item", "A", "-price", "1"}, "cartctl add: -cart is required"},
		{[]string{"delete"}, "cartctl delete: -cart is required"},
		{[]string{"get"}, "cartctl get: -cart is required"},
		{[]string{"cache"}, "cartctl cache: -cart is required"},
		{[]string{"add", "-cart", "c-1"}, "give -item or -items"},
		{[]string{"add", "-cart", "c-1", "-item", "A"}, "-price is required with -item"},
		{[]string{"add", "-cart", "c-1", "-price", "1"}, "give -item too"},
		{[]string{"add", "-cart", "c-1", "-item", "A", "-price", "abc"}, "-price: money: invalid amount"},
		{[]string{"add", "-cart", "c-1", "-items", `[{"item_code":"A","qty":1}]`}, `unknown field "qty"`},
		{[]string{"add", "-cart", "c-1", "-item", "A", "-price", "1", "-tax", "01", "-qty", "0"}, "invalid_quantity"},
		{[]string{"add", "-cart", "c.1", "-item", "A", "-price", "1", "-tax", "01"}, "invalid_cart_id"},
		{[]string{"add", "-cart", "c-1", "-item", "A", "-price", "1"}, "cartctl add: -tax is required with -item: the worker rejects a line without a tax code"},
		{[]string{"add", "-cart", "c-1", "-items", `[{"item_code":"A","quantity":1,"unit_price":1,"tax_code":"01"},{"item_code":"B","quantity":1,"unit_price":1}]`},
			"cartctl add: -items: line 2 has no tax_code"},
		{[]string{"delete", "-cart", "c-1", "extra"}, `unexpected argument "extra"`},
		{[]string{"delete", "-nope"}, "flag provided but not defined: -nope"},
		{[]string{"delete", "-cart", "c-1", "-timeout", "soon"}, "invalid value"},
		{[]string{"watch", "-count", "-1"}, "must not be negative"},
		{[]string{"watch", "-cart", "a.b"}, `-cart "a.b"`},
		{[]string{"dlq"}, "cartctl dlq: no dlq command given"},
		{[]string{"dlq", "frob"}, `unknown dlq command "frob": want list, replay, rm or purge`},
		{[]string{"dlq", "rm"}, "cartctl dlq rm: -seq is required"},
		{[]string{"dlq", "purge", "extra"}, `unexpected argument "extra"`},
		{[]string{"publish", "cart.cmd.c-1.delete", "-"}, "cartctl publish: -raw is required"},
		{[]string{"publish", "-raw", "cart.cmd.c-1.delete"}, "want SUBJECT FILE after the flags"},
		{[]string{"publish", "-raw", "a", "b", "c"}, `unexpected argument "c"`},
		{[]string{"publish", "-raw", "cart.cmd.*.delete", "-"}, `subject "cart.cmd.*.delete": want tokens`},
		{[]string{"publish", "-raw", "cart.cmd.c-1.delete", "/nonexistent/body.json"}, "FILE: open /nonexistent/body.json"},
		{[]string{"delete", "-cart", "c-1", "-nats-tls-cert", "/x/cert.pem"}, "NATS_TLS_CERT and NATS_TLS_KEY must be set together"},
		{[]string{"delete", "-cart", "c-1", "-nats-tls-ca", "/nonexistent/ca.pem"}, "NATS_TLS_CA: open /nonexistent/ca.pem"},
		{[]string{"dlq", "replay"}, "give -seq or -all"},
		{[]string{"dlq", "replay", "-seq", "1", "-all"}, "exclude each other"},
		{[]string{"dlq", "list", "-limit", "0"}, "want at least 1"},
		{[]string{"get", "-cart", "c-1", "-dapr", "localhost:3500"}, "want http://host:port"},
		{[]string{"delete", "-cart", "c-1", "-prefix", "a.>"}, "subject prefix"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := e.run(t, tt.args...)
			var uerr *usageError
			require.ErrorAs(t, r.err, &uerr)
			require.Contains(t, r.err.Error(), tt.want)
			var stderr bytes.Buffer
			require.Equal(t, 2, exitCode(r.err, &stderr))
			require.Contains(t, stderr.String(), "for usage.")
		})
	}

	e.vars["CART_SUBJECT_PREFIX"] = "bad prefix"
	r := e.run(t, "delete", "-cart", "c-1")
	require.Error(t, r.err)
	require.Contains(t, r.err.Error(), "subject prefix")
}

func TestExitCode(t *testing.T) {
	var stderr bytes.Buffer
	require.Equal(t, 0, exitCode(nil, &stderr))
	require.Empty(t, stderr.String())
	require.Equal(t, 1, exitCode(errors.New("boom"), &stderr))
	require.Equal(t, "cartctl: boom\n", stderr.String())
}
