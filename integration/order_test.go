//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/cartworkertest"
	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
)

// The order scenarios: POS terminals scan items into carts while an
// instance, daprd or NATS fails, and every run checks, black-box, that
// each cart holds its lines in exactly the order they were scanned, every
// command applied once and reported, within a latency bound. Each is
// repeated by CHAOS_RUNS (chaos_test.go, make chaos-order).
const (
	// orderCarts terminals scan orderScans items each at orderScanEvery,
	// all at once: 12 × 40 scans in 4 s.
	orderCarts     = 12
	orderScans     = 40
	orderScanEvery = 100 * time.Millisecond
	// orderOutcomeWait is how long a run waits, after its last publish,
	// for every command's outcome event before it counts the missing ones.
	orderOutcomeWait = 60 * time.Second
)

// TestOrderSIGKILLWithQueuedCommands: three instances take paced scans;
// 0.5 s in daprd is frozen (docker pause), so that every instance holds
// commands of its carts it cannot finish; 3 s later the instance holding
// the most partitions is SIGKILLed and daprd thawed. Its carts must
// continue in scan order on the survivors, each command applied once,
// none more than 10 s from its publish to its outcome event.
func TestOrderSIGKILLWithQueuedCommands(t *testing.T) {
	const (
		pauseAt     = 500 * time.Millisecond
		pauseFor    = 3 * time.Second
		worstBound  = 10 * time.Second
		workerCount = 3
	)
	runChaos(t, "sigkill-queued", func(t *testing.T, r *runReport) {
		ctx := testkit.Context(t, 4*time.Minute)
		st := sharedStack(t)
		b := connectBus(ctx, t, st.NATSURL())
		owners := startOwners(ctx, t, b, st, workerCount, "sq", nil)

		s := newScanOf(b, "sq", orderCarts, orderScans)
		s.cache(ctx, t)
		published := make(chan error, 1)
		go func() { published <- s.publish(ctx, orderScanEvery) }()
		waitUntil(ctx, t, s.waitStarted(ctx, t).Add(pauseAt))
		unpause := pauseDaprd(ctx, t, st)
		paused := time.Now()

		waitUntil(ctx, t, paused.Add(pauseFor))
		victim, held := b.mostPartitions(ctx, r, owners)
		inflight := inflightOf(owners)
		victim.signal(t, syscall.SIGKILL)
		killed := time.Now()
		unpause()
		code, _ := victim.waitExit(t, 10*time.Second)
		require.Equal(t, -1, code, "SIGKILL leaves no exit code")
		r.note("daprd paused %s into the scans for %s; SIGKILL of %s, which held %s and had %s commands in flight (in flight per instance: %v)",
			pauseAt, killed.Sub(paused).Round(time.Millisecond), victim.name, heldText(held, owners, victim), inflight[victim.name], inflight)
		require.NoError(t, <-published, "publish the scans")

		s.audit(ctx, t, st, r, others(owners, victim), worstBound)
	})
}

// TestOrderSIGSTOPTenSeconds: three instances take paced scans; 1 s in,
// the instance holding the most partitions is frozen (SIGSTOP) for 10 s,
// longer than its leases live, then thawed (SIGCONT) while the others
// hold its partitions. What it held when frozen must not land on its
// carts after the others' commands; it must be ready again within 10 s.
func TestOrderSIGSTOPTenSeconds(t *testing.T) {
	const (
		stopAt      = time.Second
		stopFor     = 10 * time.Second
		readyBound  = 10 * time.Second
		worstBound  = 10 * time.Second
		workerCount = 3
	)
	runChaos(t, "sigstop-10s", func(t *testing.T, r *runReport) {
		ctx := testkit.Context(t, 4*time.Minute)
		st := sharedStack(t)
		b := connectBus(ctx, t, st.NATSURL())
		owners := startOwners(ctx, t, b, st, workerCount, "ss", nil)

		s := newScanOf(b, "ss", orderCarts, orderScans)
		s.cache(ctx, t)
		published := make(chan error, 1)
		go func() { published <- s.publish(ctx, orderScanEvery) }()
		waitUntil(ctx, t, s.waitStarted(ctx, t).Add(stopAt))

		victim, held := b.mostPartitions(ctx, r, owners)
		inflight := inflightOf(owners)
		victim.signal(t, syscall.SIGSTOP)
		stopped := time.Now()
		// Should the test end here, the cleanup's stop thaws the process
		// (cartworkertest's Stop sends SIGCONT after SIGTERM).
		waitUntil(ctx, t, stopped.Add(stopFor))
		victim.signal(t, syscall.SIGCONT)
		woke := time.Now()
		r.note("SIGSTOP of %s %s into the scans, for %s; it held %s and had %s commands in flight (per instance: %v)",
			victim.name, stopped.Sub(s.startedAt()).Round(time.Millisecond), woke.Sub(stopped).Round(time.Millisecond),
			heldText(held, owners, victim), inflight[victim.name], inflight)

		ready, err := waitReady(ctx, victim.worker, woke, 3*readyBound)
		switch {
		case err != nil:
			r.problem("%s not ready %s after SIGCONT: %v", victim.name, 3*readyBound, err)
		case ready > readyBound:
			r.problem("%s ready again %s after SIGCONT, over the %s bound", victim.name, ready.Round(time.Millisecond), readyBound)
		default:
			r.note("%s ready again %s after SIGCONT", victim.name, ready.Round(time.Millisecond))
		}
		// Not a requirement: when the woken instance takes a share again.
		victimAt := slices.Index(owners, victim)
		var counts []int
		if err := pollErr(ctx, 20*time.Second, 100*time.Millisecond, func() error {
			h, err := b.leaseHolders(ctx)
			if err != nil {
				return err
			}
			if counts = heldBy(h, owners); counts[victimAt] == 0 {
				return fmt.Errorf("partitions per instance %v", counts)
			}
			return nil
		}); err != nil {
			r.note("%s holds no partition 20 s after the SIGCONT: %v", victim.name, err)
		} else {
			r.note("%s holds partitions again %s after the SIGCONT: %v", victim.name, time.Since(woke).Round(time.Millisecond), counts)
		}
		require.NoError(t, <-published, "publish the scans")

		s.audit(ctx, t, st, r, workersOf(owners), worstBound)
	})
}

// TestOrderNATSRestartThenLeave: two instances on a NATS of the test's
// own, with its JetStream store in a volume and its port fixed. nats-server
// is killed (SIGKILL) and started again on the same store; once both
// instances are ready again, one is stopped (SIGTERM) and, once it has
// exited, 12 new carts are each cached and scanned 20 times. Every cart must be created and hold
// its lines in scan order, every command must have its outcome within
// 60 s, and the remaining instance must hold every partition within 10 s
// of the SIGTERM.
func TestOrderNATSRestartThenLeave(t *testing.T) {
	const (
		scans       = 20
		readyBound  = 60 * time.Second
		ownBound    = 10 * time.Second
		worstBound  = 60 * time.Second
		workerCount = 2
	)
	// NATS of its own: its store is in a volume and its port stays across
	// the restart (cartworkertest.KillNATS, StartNATS).
	st := newTestStack(t)
	runChaos(t, "nats-restart-leave", func(t *testing.T, r *runReport) {
		ctx := testkit.Context(t, 5*time.Minute)
		b := connectBus(ctx, t, st.NATSURL())
		owners := startOwners(ctx, t, b, st, workerCount, "nl", nil)
		stream, err := b.js.Stream(ctx, command.StreamCommands)
		require.NoError(t, err)
		created := stream.CachedInfo().Created

		require.NoError(t, st.KillNATS(ctx))
		killed := time.Now()
		// Each instance notices: NATS is not connected.
		for _, o := range owners {
			if err := pollErr(ctx, 15*time.Second, 50*time.Millisecond, func() error {
				if code, err := o.readyz(); err == nil && code == http.StatusOK {
					return errors.New("still ready")
				}
				return nil
			}); err != nil {
				r.note("%s did not report not ready while NATS was down: %v", o.name, err)
			}
		}
		require.NoError(t, st.StartNATS(ctx))
		restarted := time.Now()
		// The same store: the stream is the one created before the kill.
		poll(ctx, t, 30*time.Second, "the command stream back from the store", func() error {
			info, err := stream.Info(ctx)
			if err != nil {
				return err
			}
			if !info.Created.Equal(created) {
				return fmt.Errorf("stream created %s, not %s: the store did not survive", info.Created, created)
			}
			return nil
		})
		r.note("nats-server killed, started again %s later on the same store", restarted.Sub(killed).Round(time.Millisecond))
		for _, o := range owners {
			ready, err := waitReady(ctx, o.worker, restarted, readyBound)
			if err != nil {
				r.problem("%s not ready again %s after the NATS restart: %v", o.name, readyBound, err)
				continue
			}
			r.note("%s ready again %s after the NATS restart", o.name, ready.Round(time.Millisecond))
		}

		leaver, held := b.mostPartitions(ctx, r, owners)
		stayer := owners[0]
		if stayer == leaver {
			stayer = owners[1]
		}
		stayerID := stayer.id
		leaver.signal(t, syscall.SIGTERM)
		termed := time.Now()
		code, _ := leaver.waitExit(t, 60*time.Second)
		r.note("SIGTERM of %s, which held %s: it exited %d %s later", leaver.name, heldText(held, owners, leaver), code, time.Since(termed).Round(time.Millisecond))
		if code != 0 {
			r.problem("%s exited %d after SIGTERM, not 0", leaver.name, code)
		}

		// New carts once it is gone: only the remaining instance can take
		// them.
		s := newScanOf(b, "nl", orderCarts, scans)
		s.cacheInline()
		published := make(chan error, 1)
		go func() { published <- s.publish(ctx, orderScanEvery) }()

		// The remaining instance takes every partition.
		var lastHeld string
		err = pollErr(ctx, max(time.Until(termed.Add(3*ownBound)), time.Second), 50*time.Millisecond, func() error {
			h, err := b.leaseHolders(ctx)
			if err != nil {
				lastHeld = err.Error()
				return err
			}
			mine := 0
			for _, id := range h {
				if id == stayerID {
					mine++
				}
			}
			lastHeld = fmt.Sprintf("%d of %d leases, %d of them %s's", len(h), b.partitions, mine, stayer.name)
			if mine < b.partitions {
				return errors.New(lastHeld)
			}
			return nil
		})
		owned := time.Since(termed)
		switch {
		case err != nil:
			r.problem("%s does not hold every partition %s after the SIGTERM: %s", stayer.name, owned.Round(time.Second), lastHeld)
		case owned > ownBound:
			r.problem("%s held every partition %s after the SIGTERM, over the %s bound", stayer.name, owned.Round(time.Millisecond), ownBound)
		default:
			r.note("%s held every partition %s after the SIGTERM", stayer.name, owned.Round(time.Millisecond))
		}
		require.NoError(t, <-published, "publish the carts")

		s.audit(ctx, t, st, r, []*worker{stayer.worker}, worstBound)
	})
}

// TestOrderCheckerWithoutFaults is the scenarios' control: their harness
// with no fault must find nothing, and the same audit of deliberately
// wrong expectations must find exactly what was planted. A scenario's
// failure is then the product's, not the checker's.
func TestOrderCheckerWithoutFaults(t *testing.T) {
	ctx := testkit.Context(t, 4*time.Minute)
	st := sharedStack(t)
	b := connectBus(ctx, t, st.NATSURL())
	owners := startOwners(ctx, t, b, st, 3, "ok", nil)

	s := newScanOf(b, "ok", orderCarts, orderScans)
	s.cache(ctx, t)
	require.NoError(t, s.publish(ctx, orderScanEvery), "publish the scans")
	var r runReport
	s.audit(ctx, t, st, &r, workersOf(owners), 10*time.Second)
	t.Log(r.line("no-fault", 1, 1))
	for _, n := range r.notes {
		t.Logf("  %s", n)
	}
	require.False(t, r.failed(), "a run without faults: %v", r.problems)

	// Plant one of each: a cart whose expected order has two scans
	// swapped, a scan expected that was never published, and a second
	// report of an applied command that is not marked duplicate.
	swapped, short := s.carts[0], s.carts[1]
	cmds := s.cmds[swapped]
	cmds[3], cmds[4] = cmds[4], cmds[3]
	never := s.cmds[short][0]
	never.ID = short + "-never"
	s.cmds[short] = append(s.cmds[short], never)
	twice := s.cmds[s.carts[2]][5]
	body, err := json.Marshal(command.Event{CommandID: twice.ID, Type: twice.Type, CartID: twice.CartID, Outcome: command.OutcomeApplied})
	require.NoError(t, err)
	require.NoError(t, b.nc.Publish(b.subj.Event(twice.CartID, command.OutcomeApplied), body))
	require.NoError(t, b.nc.Flush())
	poll(ctx, t, 10*time.Second, "the planted report", func() error {
		if n := len(b.events.of(twice.CartID, twice.ID)); n < 2 {
			return fmt.Errorf("%d reports", n)
		}
		return nil
	})
	var planted runReport
	s.audit(ctx, t, st, &planted, workersOf(owners), 10*time.Second)
	t.Log(planted.line("planted", 1, 1))
	require.Equal(t, 1, planted.violations, "the cart with two scans swapped: %v", planted.problems)
	require.Equal(t, 1, planted.lost, "the scan never published: %v", planted.problems)
	require.Equal(t, 1, planted.doubled, "the command reported twice: %v", planted.problems)
}

// waitStarted waits until publish has begun and returns when it did.
func (s *scan) waitStarted(ctx context.Context, t *testing.T) time.Time {
	t.Helper()
	var began time.Time
	poll(ctx, t, 10*time.Second, "the scans to start", func() error {
		if began = s.startedAt(); began.IsZero() {
			return errors.New("not yet")
		}
		return nil
	})
	return began
}

// waitReady polls w's /readyz from now until it answers 200, for at most
// limit, and returns how long after since that was.
func waitReady(ctx context.Context, w *worker, since time.Time, limit time.Duration) (time.Duration, error) {
	last := ""
	err := pollErr(ctx, limit, 50*time.Millisecond, func() error {
		code, body, err := w.get("/readyz")
		if err != nil {
			last = err.Error()
			return err
		}
		if code != http.StatusOK {
			last = fmt.Sprintf("readyz %d: %s", code, strings.TrimSpace(body))
			return errors.New(last)
		}
		return nil
	})
	return time.Since(since), err
}

// inflightOf reads each owner's cartworker_inflight_commands, "?" when its
// metrics do not answer.
func inflightOf(owners []*owner) map[string]string {
	out := map[string]string{}
	for _, o := range owners {
		code, body, err := o.get("/metrics")
		if err != nil || code != http.StatusOK {
			out[o.name] = "?"
			continue
		}
		v, _ := metricsText(body).value("cartworker_inflight_commands")
		out[o.name] = fmt.Sprint(v)
	}
	return out
}

// heldText says how many partitions o held of the counts per owner.
func heldText(held []int, owners []*owner, o *owner) string {
	i := slices.Index(owners, o)
	if i < 0 || i >= len(held) {
		return "partitions unknown"
	}
	return fmt.Sprintf("%d partitions (per instance %v)", held[i], held)
}

// others returns the workers of owners other than o.
func others(owners []*owner, o *owner) []*worker {
	var out []*worker
	for _, x := range owners {
		if x != o {
			out = append(out, x.worker)
		}
	}
	return out
}

func workersOf(owners []*owner) []*worker {
	var out []*worker
	for _, o := range owners {
		out = append(out, o.worker)
	}
	return out
}

// audit is a run's verdict on its scan, into r, failing t only when the
// test itself cannot go on (daprd does not answer). It waits up to
// orderOutcomeWait for every command's outcome event, then for the
// consumers and the live instances to hold nothing, then reads every
// cart through daprd and counts:
//   - violations: carts whose lines, or whose applied ids, are not in scan
//     order (the cache first);
//   - lost: add-items whose line is missing, caches whose cart is;
//   - doubled: commands with two lines, two entries in applied ids, or two
//     outcome events that are not duplicates (a redelivery that found the
//     command applied reports it with duplicate=true: that is no double);
//   - the worst publish→first outcome event latency, a problem over worst;
//
// and as problems: carts never created, commands with no outcome event,
// totals that differ from the lines', unsettled consumers.
func (s *scan) audit(ctx context.Context, t *testing.T, st *stack, r *runReport, live []*worker, worst time.Duration) {
	t.Helper()
	s.mu.Lock()
	sent := make(map[string]time.Time, len(s.sent))
	for k, v := range s.sent {
		sent[k] = v
	}
	for _, cart := range s.carts {
		// Each cart's publisher waits for every store before the next:
		// the stream holds its scans in scan order, which is what the
		// instances must keep.
		require.True(t, slices.IsSorted(s.seqs[cart]), "cart %s: stream order is not scan order: %v", cart, s.seqs[cart])
	}
	s.mu.Unlock()
	r.carts = len(s.carts)

	missingOutcomes := func() []string {
		var out []string
		for k := range sent {
			cart, id, _ := strings.Cut(k, "/")
			if _, ok := s.b.events.outcomeAt(cart, id); !ok {
				out = append(out, k)
			}
		}
		sort.Strings(out)
		return out
	}
	_ = pollErr(ctx, orderOutcomeWait, 100*time.Millisecond, func() error {
		if m := missingOutcomes(); len(m) > 0 {
			return fmt.Errorf("%d without an outcome", len(m))
		}
		return nil
	})
	if err := pollErr(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		if err := s.b.consumerSettled(ctx); err != nil {
			return err
		}
		for _, w := range live {
			code, body, err := w.get("/metrics")
			if err != nil {
				return err
			}
			if code != http.StatusOK {
				return fmt.Errorf("%s metrics: %d", w.name, code)
			}
			if v, _ := metricsText(body).value("cartworker_inflight_commands"); v != 0 {
				return fmt.Errorf("%s has %.0f commands in flight", w.name, v)
			}
		}
		return nil
	}); err != nil {
		r.problem("commands left unsettled: %v", err)
	}

	// Latency: publish → first outcome event.
	var lat latencies
	for k, at := range sent {
		cart, id, _ := strings.Cut(k, "/")
		if got, ok := s.b.events.outcomeAt(cart, id); ok {
			lat.all = append(lat.all, latency{id: id, applied: got, took: got.Sub(at)})
		}
	}
	slices.SortFunc(lat.all, func(a, b latency) int { return int(a.took - b.took) })
	r.worst = lat.worst()
	if r.worst > worst {
		r.problem("worst publish→outcome latency %s, over the %s bound (%d commands over it)", r.worst, worst, len(lat.over(worst)))
	}
	r.note("latency publish→outcome of %d commands: p50 %s, p99 %s, worst %s", len(lat.all), lat.quantile(0.5), lat.quantile(0.99), lat.worst())
	if m := missingOutcomes(); len(m) > 0 {
		r.noOutcome = len(m)
		r.problem("%d of %d commands have no outcome event %s after the last publish, e.g. %s", len(m), len(sent), orderOutcomeWait, m[0])
	}

	lost := map[string]bool{}
	doubled := map[string]bool{}
	var outOfOrder, notCreated []string
	for _, cart := range s.carts {
		d, err := st.Cart(ctx, cart)
		if errors.Is(err, cartworkertest.ErrCartNotFound) {
			notCreated = append(notCreated, cart)
			lost[cart+"/"+s.cacheIDs[cart]] = true
			for _, c := range s.cmds[cart] {
				lost[cart+"/"+c.ID] = true
			}
			continue
		}
		require.NoError(t, err, "GET cart %s through Dapr", cart)

		index := map[string]int{s.cacheIDs[cart]: -1}
		for i, c := range s.cmds[cart] {
			index[c.ID] = i
		}
		lines := map[string]int{}
		var codes []string
		var unknown []string
		for _, line := range d.LineItems {
			if _, ok := index[line.ItemCode]; !ok {
				unknown = append(unknown, line.ItemCode)
				continue
			}
			lines[line.ItemCode]++
			codes = append(codes, line.ItemCode)
		}
		if len(unknown) > 0 {
			r.problem("cart %s has lines of no command of its own: %v", cart, unknown)
		}
		applied := map[string]int{}
		var appliedSeq []string
		for _, id := range d.AppliedCommandIDs {
			if _, ok := index[id]; ok {
				applied[id]++
				appliedSeq = append(appliedSeq, id)
			}
		}
		cartLost, cartDoubled := 0, 0
		for _, c := range s.cmds[cart] {
			k := cart + "/" + c.ID
			switch {
			case lines[c.ID] == 0:
				lost[k] = true
				cartLost++
			case lines[c.ID] > 1 || applied[c.ID] > 1:
				doubled[k] = true
				cartDoubled++
			}
		}
		if applied[s.cacheIDs[cart]] > 1 {
			doubled[cart+"/"+s.cacheIDs[cart]] = true
		}
		inOrder := func(ids []string) bool {
			return slices.IsSortedFunc(ids, func(a, b string) int { return index[a] - index[b] })
		}
		if !inOrder(codes) || !inOrder(appliedSeq) {
			outOfOrder = append(outOfOrder, fmt.Sprintf("cart %s: lines %v, applied %v", cart, scanIndexes(codes, index), scanIndexes(appliedSeq, index)))
		}
		if cartLost == 0 && cartDoubled == 0 {
			l := &load{carts: []string{cart}, cmds: s.cmds[cart]}
			want := l.expected()[cart]
			if money.FromInt(want.subtotal) != d.SubtotalAmount || money.FromInt(want.tax) != d.Sales.TaxAmount ||
				money.FromInt(want.subtotal+want.tax) != d.Sales.TotalAmountWithTax || want.qty != d.Sales.TotalQuantity {
				r.problem("cart %s totals: subtotal %v tax %v with tax %v qty %d, want %d %d %d %d", cart,
					d.SubtotalAmount, d.Sales.TaxAmount, d.Sales.TotalAmountWithTax, d.Sales.TotalQuantity,
					want.subtotal, want.tax, want.subtotal+want.tax, want.qty)
			}
		}
	}

	// Outcome events: one that is not a duplicate per command.
	reports := map[string]int{}
	dupReports := 0
	rejected := map[string]int{}
	for _, ev := range s.b.events.all() {
		k := ev.CartID + "/" + ev.CommandID
		if _, ok := sent[k]; !ok {
			continue
		}
		switch {
		case ev.Duplicate:
			dupReports++
		default:
			reports[k]++
		}
		if ev.Outcome == command.OutcomeRejected {
			code := "?"
			if ev.Error != nil {
				code = ev.Error.Code
			}
			rejected[code]++
		}
	}
	for k, n := range reports {
		if n > 1 {
			doubled[k] = true
		}
	}

	r.violations = len(outOfOrder)
	r.lost = len(lost)
	r.doubled = len(doubled)
	r.notCreated = len(notCreated)
	if len(outOfOrder) > 0 {
		r.problem("%d of %d carts out of scan order (line and applied id → scan index, the cache -1), e.g. %s", len(outOfOrder), len(s.carts), outOfOrder[0])
		for _, o := range outOfOrder[1:min(len(outOfOrder), 3)] {
			r.note("out of order: %s", o)
		}
	}
	if len(notCreated) > 0 {
		r.problem("%d of %d carts never created, e.g. %s", len(notCreated), len(s.carts), notCreated[0])
	}
	if len(lost) > 0 {
		carts := map[string]bool{}
		for k := range lost {
			cart, _, _ := strings.Cut(k, "/")
			carts[cart] = true
		}
		r.problem("%d commands lost (no effect on their cart) in %d of %d carts, e.g. %s", len(lost), len(carts), len(s.carts), firstKey(lost))
	}
	if len(doubled) > 0 {
		r.problem("%d commands doubled (applied or reported applied twice), e.g. %s", len(doubled), firstKey(doubled))
	}
	r.note("%d commands published; %d outcome events marked duplicate (redeliveries of applied commands); rejections by code %v",
		len(sent), dupReports, rejected)
}

// scanIndexes turns command ids into their scan indexes, for messages.
func scanIndexes(ids []string, index map[string]int) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = index[id]
	}
	return out
}

func firstKey(m map[string]bool) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		return ""
	}
	return keys[0]
}
