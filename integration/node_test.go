//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/telemetry/telemetrytest"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
)

// TestNodePublisherExample runs examples/node/publish.mjs, the publisher
// that the README gives newcomers in other languages, against an
// in-process worker on the shared stack: every command it publishes must
// be one the worker decodes, with the headers the contract asks for, every
// event it prints must be applied, and the cart read back through Dapr
// must hold exactly the totals of its lines.
//
// It needs node and npm, and npm's registry for `npm ci`; without node it
// is skipped.
func TestNodePublisherExample(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH")
	}
	npm, err := exec.LookPath("npm")
	require.NoError(t, err, "node is on PATH but npm is not")
	ctx := testkit.Context(t, 5*time.Minute)

	// A copy, so that node_modules never lands in the work tree.
	dir := t.TempDir()
	for _, f := range []string{"package.json", "package-lock.json", "publish.mjs"} {
		b, err := os.ReadFile(filepath.Join("..", "examples", "node", f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), b, 0o644))
	}
	npmCI := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	npmCI.Dir = dir
	out, err := npmCI.CombinedOutput()
	require.NoError(t, err, "npm ci: %s", out)

	// The worker exports its spans to a collector the test serves, where
	// a newcomer would look the printed trace id up.
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
	collector := telemetrytest.NewSink(true)
	otlp := httptest.NewServer(collector)
	t.Cleanup(otlp.Close)

	st := sharedStack(t)
	b := connectBus(ctx, t, st.NATSURL())
	w := inProcessWorker(t, st, "node", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.URL})
	b.waitConsumer(ctx, t)
	cart := newCartIDs("node", 1)[0]

	run := func(env map[string]string, args ...string) (stdout string, code int) {
		t.Helper()
		cmd := exec.CommandContext(ctx, node, append([]string{"publish.mjs"}, args...)...)
		cmd.Dir = dir
		cmd.Env = os.Environ()
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			require.NoError(t, err, "run node: %s", e.String())
		}
		t.Logf("node publish.mjs %s:\n%s%s", strings.Join(args, " "), o.String(), e.String())
		return o.String(), cmd.ProcessState.ExitCode()
	}

	stdout, code := run(map[string]string{"NATS_URL": st.NATSURL(), "CART_ID": cart, "EVENT_TIMEOUT_MS": "30000"})
	require.Zero(t, code, "every command applied")
	traceID, events := parseNodeOutput(t, stdout)

	// The events it printed: a cache and three add-items, applied once.
	require.Len(t, events, 4)
	var ids []string
	for i, ev := range events {
		want := command.TypeAddItem
		if i == 0 {
			want = command.TypeCache
		}
		require.Equal(t, want, ev.Type, "event %d", i)
		require.Equal(t, cart, ev.CartID)
		require.Equal(t, command.OutcomeApplied, ev.Outcome)
		require.False(t, ev.Duplicate)
		require.Nil(t, ev.Error)
		require.NotContains(t, ids, ev.CommandID, "command ids are unique")
		ids = append(ids, ev.CommandID)
	}

	// The commands as stored: decoded by the worker's own decoder, with
	// Nats-Msg-Id set to the body's id and a traceparent of the printed
	// trace.
	cons, err := b.js.OrderedConsumer(ctx, command.StreamCommands, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"cart.pcmd.*." + cart + ".*"},
	})
	require.NoError(t, err)
	batch, err := cons.Fetch(len(ids), jetstream.FetchMaxWait(10*time.Second))
	require.NoError(t, err)
	traceparent := regexp.MustCompile(`^00-` + traceID + `-[0-9a-f]{16}-01$`)
	var stored []string
	for msg := range batch.Messages() {
		c, err := b.subj.Decode(b.subj.Published(msg.Subject()), msg.Data())
		require.NoError(t, err, "%s: %s", msg.Subject(), msg.Data())
		require.Equal(t, c.ID, msg.Headers().Get(command.HeaderMsgID))
		require.Regexp(t, traceparent, msg.Headers().Get("traceparent"))
		stored = append(stored, c.ID)
	}
	require.NoError(t, batch.Error())
	require.Equal(t, ids, stored, "the commands, in the order of their events")

	// The trace it printed is in the collector: the worker's consumer span
	// of each command, a child of the span Node sent it under.
	for _, id := range ids {
		span := waitOTLP(ctx, t, collector, func(s telemetrytest.Span) bool {
			return s.TraceID == traceID && s.Attributes["messaging.message.id"] == id
		}, "the consumer span of command "+id+" in Node's trace")
		require.Equal(t, "process cart.cmd.{cart_id}.{type}", span.Name)
		require.Equal(t, cart, span.Attributes["cartworker.cart_id"])
	}

	// The cart through Dapr, exactly: 2 × 120 at 01 (external 10 %: 24),
	// 1 × 450 at 11 (external 8 %: 36), 1 × 99.5 at 00 (exempt).
	d := readCart(ctx, t, st, cart)
	require.Equal(t, "EnteringItem", d.Status)
	require.Equal(t, []string{"T1", "S1"}, []string{d.TenantID, d.StoreCode})
	require.Equal(t, 1, d.TerminalNo)
	require.Len(t, d.LineItems, 3)
	var amounts []money.Amount
	for _, l := range d.LineItems {
		amounts = append(amounts, l.Amount)
	}
	require.Equal(t, []money.Amount{money.FromInt(240), money.FromInt(450), amount(t, "99.5")}, amounts)
	require.Equal(t, amount(t, "789.5"), d.SubtotalAmount)
	require.Equal(t, amount(t, "789.5"), d.Sales.TotalAmount)
	require.Equal(t, money.FromInt(60), d.Sales.TaxAmount)
	require.Equal(t, amount(t, "849.5"), d.Sales.TotalAmountWithTax)
	require.Equal(t, 4, d.Sales.TotalQuantity)
	require.Equal(t, amount(t, "849.5"), d.BalanceAmount)
	require.Equal(t, ids, d.AppliedCommandIDs)

	// With --delete the same run ends by removing the cart.
	other := newCartIDs("node-delete", 1)[0]
	stdout, code = run(map[string]string{"NATS_URL": st.NATSURL(), "CART_ID": other, "EVENT_TIMEOUT_MS": "30000"}, "--delete")
	require.Zero(t, code)
	_, events = parseNodeOutput(t, stdout)
	require.Len(t, events, 5)
	require.Equal(t, command.TypeDelete, events[4].Type)
	require.Equal(t, command.OutcomeApplied, events[4].Outcome)

	// A publish JetStream refuses (no stream holds the subject) ends it
	// non-zero.
	_, code = run(map[string]string{"NATS_URL": st.NATSURL(), "CART_SUBJECT_PREFIX": "nostream", "EVENT_TIMEOUT_MS": "2000"})
	require.Equal(t, 2, code)

	m := w.metrics(t)
	require.Equal(t, 9.0, m.get(t, "cartworker_commands_total", "outcome", "applied"), "4 + 5 commands")
	requireNoPanic(t, w)
}

// parseNodeOutput reads publish.mjs's output: the "trace id: <hex>" line
// and an "event: <json>" line per outcome.
func parseNodeOutput(t *testing.T, stdout string) (traceID string, events []command.Event) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		line := sc.Text()
		if id, ok := strings.CutPrefix(line, "trace id: "); ok {
			traceID = id
		}
		if raw, ok := strings.CutPrefix(line, "event: "); ok {
			var ev command.Event
			require.NoError(t, json.Unmarshal([]byte(raw), &ev), raw)
			events = append(events, ev)
		}
	}
	require.NoError(t, sc.Err())
	require.Regexp(t, `^[0-9a-f]{32}$`, traceID)
	return traceID, events
}
