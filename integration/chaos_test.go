//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
)

// The chaos scenarios (order_test.go) each run once by default. CHAOS_RUNS=N
// (make chaos-order) repeats a scenario N times, each time on fresh carts
// and fresh worker processes, logs one line per run and fails at the end if
// any run had a violation.
const (
	chaosRunsEnv = "CHAOS_RUNS"
	maxChaosRuns = 1000
)

// chaosRuns reads CHAOS_RUNS: 1 when unset.
func chaosRuns(t *testing.T) int {
	t.Helper()
	v := os.Getenv(chaosRunsEnv)
	if v == "" {
		return 1
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, "%s=%q", chaosRunsEnv, v)
	require.True(t, n >= 1 && n <= maxChaosRuns, "%s=%d: want 1..%d", chaosRunsEnv, n, maxChaosRuns)
	return n
}

// runReport is what one run of a scenario found. violations, lost and
// doubled are the scenario's invariants; problems are the other checks
// that failed (a bound missed, a cart never created, ...), notes are
// figures worth reading either way.
type runReport struct {
	// violations counts the carts whose lines (or applied ids) are not in
	// scan order.
	violations int
	// lost counts the commands whose effect is missing from their cart;
	// doubled those applied, or reported applied, more than once.
	lost, doubled int
	// worst is the worst publish→first outcome event latency of the
	// commands that had one.
	worst time.Duration
	// carts, notCreated: how many carts the run used and how many of them
	// do not exist at the end. noOutcome counts commands without any
	// outcome event.
	carts, notCreated, noOutcome int

	problems []string
	notes    []string
}

func (r *runReport) problem(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

func (r *runReport) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func (r *runReport) failed() bool {
	return r.violations+r.lost+r.doubled+len(r.problems) > 0
}

func (r *runReport) line(scenario string, i, n int) string {
	return fmt.Sprintf("chaos: %s run %d/%d: violations=%d lost=%d doubled=%d worst_latency=%s not_created=%d/%d no_outcome=%d failed_checks=%d",
		scenario, i, n, r.violations, r.lost, r.doubled, r.worst.Round(time.Millisecond), r.notCreated, r.carts, r.noOutcome, len(r.problems))
}

// runChaos runs one scenario CHAOS_RUNS times, each as subtest run-i whose
// cleanup stops the run's processes. A run logs its chaos line, its notes,
// and fails with each of its problems; the parent fails at the end with
// the runs that had any. A run that stops on a failed precondition (a
// require: the test's own setup, not a product invariant) ends the loop.
func runChaos(t *testing.T, scenario string, run func(t *testing.T, r *runReport)) {
	n := chaosRuns(t)
	var bad []string
	for i := 1; i <= n; i++ {
		r := &runReport{}
		completed := false
		t.Run(fmt.Sprintf("run-%d", i), func(t *testing.T) {
			run(t, r)
			completed = true
			t.Log(r.line(scenario, i, n))
			for _, note := range r.notes {
				t.Logf("  %s", note)
			}
			if r.failed() {
				for _, p := range r.problems {
					t.Errorf("chaos: %s run %d/%d: %s", scenario, i, n, p)
				}
				if len(r.problems) == 0 {
					t.Errorf("chaos: %s run %d/%d: the invariants do not hold", scenario, i, n)
				}
			}
		})
		if !completed {
			t.Errorf("chaos: %s run %d/%d did not complete (see its failure); stopping here", scenario, i, n)
			return
		}
		if r.failed() {
			bad = append(bad, r.line(scenario, i, n))
		}
	}
	if len(bad) > 0 {
		t.Errorf("chaos: %s: %d of %d runs had violations:\n%s", scenario, len(bad), n, strings.Join(bad, "\n"))
		return
	}
	t.Logf("chaos: %s: %d of %d runs clean", scenario, n, n)
}

// owner is a worker process and its instance id, the value of the leases
// it holds in the partitions bucket.
type owner struct {
	*process
	id string
}

// leaseHolders reads the partitions bucket: lease key ("p<N>") → the id of
// the instance holding it.
func (b *bus) leaseHolders(ctx context.Context) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	kv, err := b.js.KeyValue(ctx, command.LeasesBucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", command.LeasesBucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", command.LeasesBucket, err)
	}
	defer func() { _ = w.Stop() }()
	out := map[string]string{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("watch of %s ended", command.LeasesBucket)
			}
			if e == nil { // every current key has been sent
				return out, nil
			}
			out[e.Key()] = string(e.Value())
		case <-ctx.Done():
			return nil, fmt.Errorf("read %s: %w", command.LeasesBucket, ctx.Err())
		}
	}
}

// startOwners starts n worker processes one after the other, each once
// the partitions have spread to the one before, which tells each one's
// instance id: the holder that appears in the partitions bucket when it
// starts. It returns once every partition is held by one of them (a
// previous run's killed instance's leases have expired) and each holds
// some.
func startOwners(ctx context.Context, t *testing.T, b *bus, st *stack, n int, name string, extra map[string]string) []*owner {
	t.Helper()
	var owners []*owner
	ours := map[string]bool{}
	for i := range n {
		before := map[string]bool{}
		if h, err := b.leaseHolders(ctx); err == nil {
			for _, id := range h {
				before[id] = true
			}
		}
		p := startProcess(t, st, fmt.Sprintf("%s-%d", name, i), extra)
		if i == 0 {
			b.waitConsumer(ctx, t)
		}
		o := &owner{process: p}
		poll(ctx, t, 30*time.Second, p.name+" holding partitions", func() error {
			h, err := b.leaseHolders(ctx)
			if err != nil {
				return err
			}
			for _, id := range h {
				if !before[id] && !ours[id] {
					o.id = id
					return nil
				}
			}
			return fmt.Errorf("no new holder among %d leases", len(h))
		})
		ours[o.id] = true
		owners = append(owners, o)
	}
	poll(ctx, t, 30*time.Second, "every partition held by this run's instances", func() error {
		h, err := b.leaseHolders(ctx)
		if err != nil {
			return err
		}
		counts := heldBy(h, owners)
		for k, id := range h {
			if !ours[id] {
				return fmt.Errorf("lease %s still held by %s, not one of this run's", k, id)
			}
		}
		if len(h) < b.partitions {
			return fmt.Errorf("%d of %d partitions held: %v", len(h), b.partitions, counts)
		}
		for i, c := range counts {
			if c == 0 {
				return fmt.Errorf("%s holds none: %v", owners[i].name, counts)
			}
		}
		return nil
	})
	return owners
}

// heldBy counts the partitions each owner holds.
func heldBy(holders map[string]string, owners []*owner) []int {
	out := make([]int, len(owners))
	for _, id := range holders {
		for i, o := range owners {
			if o.id == id {
				out[i]++
			}
		}
	}
	return out
}

// mostPartitions returns the owner holding the most partitions now, and
// what each holds; owners[0] (noted in r) when the bucket cannot be read.
func (b *bus) mostPartitions(ctx context.Context, r *runReport, owners []*owner) (*owner, []int) {
	h, err := b.leaseHolders(ctx)
	if err != nil {
		r.note("partitions unreadable (%v): took %s", err, owners[0].name)
		return owners[0], nil
	}
	counts := heldBy(h, owners)
	best := 0
	for i, c := range counts {
		if c > counts[best] {
			best = i
		}
	}
	return owners[best], counts
}

// waitUntil waits until at, or fails t if ctx ends first. It schedules a
// fault; it never stands in for waiting on a condition.
func waitUntil(ctx context.Context, t *testing.T, at time.Time) {
	t.Helper()
	timer := time.NewTimer(time.Until(at))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
		t.Fatalf("waiting until %s: %v", at.Format(time.TimeOnly), ctx.Err())
	}
}

// pauseDaprd freezes st's daprd (docker pause) and returns the function
// that thaws it. t's cleanup thaws it if the test ends first, so that a
// shared daprd is never left frozen.
func pauseDaprd(ctx context.Context, t *testing.T, st *stack) (unpause func()) {
	t.Helper()
	require.NoError(t, st.PauseDaprd(ctx))
	t.Cleanup(func() {
		uctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := st.UnpauseDaprd(uctx); err != nil {
			t.Errorf("unpause daprd: %v", err)
		}
	})
	return func() {
		t.Helper()
		require.NoError(t, st.UnpauseDaprd(ctx))
	}
}
