//go:build integration

package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

const (
	// soCarts POS terminals scan soScans items each, per phase.
	soCarts = 12
	soScans = 40
	// soScanEvery paces a terminal's scans in the phases where processes
	// come and go, so that they happen mid-scan: 40 scans take 3 s.
	soScanEvery = 75 * time.Millisecond
	// soAckWait is the worker's default WORKER_ACK_WAIT, how long a killed
	// instance's carts wait.
	soAckWait = 5 * time.Second
	// soSlowDapr is the extra latency of every reply daprd sends to the
	// process that is killed and to the one that leaves: each command they
	// take is held for a few round trips of it, so that the SIGKILL and
	// the SIGTERM certainly find commands in their hands.
	soSlowDapr = 25 * time.Millisecond
)

// TestScaleOutKeepsCartOrder runs POS scans against several worker
// processes sharing the partitioned command stream and checks, through
// daprd, that every cart holds its lines in exactly the order they were
// scanned, each command applied once, with exact totals:
//
//  1. three processes take a burst of 12 × 40 scans;
//  2. paced scans while a fourth process joins and one of the first three
//     is SIGKILLed: its partitions stall for AckWait and no longer;
//  3. paced scans while a process is SIGTERMed: it leaves without any
//     command waiting for AckWait.
func TestScaleOutKeepsCartOrder(t *testing.T) {
	ctx := testkit.Context(t, 3*time.Minute)
	st := sharedStack(t)
	b := connectBus(ctx, t, st.NATSURL())

	daprHost := hostPort(t, st.DaprHTTPEndpoint())
	links := map[*process]*slowLink{}
	start := func(name string, slow time.Duration) *process {
		endpoint := st.DaprHTTPEndpoint()
		var link *slowLink
		if slow > 0 {
			link = startSlowLink(t, daprHost, slow)
			endpoint = "http://" + link.addr()
		}
		// The slow link delays HTTP calls.
		p := startProcess(t, st, name, map[string]string{"DAPR_HTTP_ENDPOINT": endpoint, "WORKER_STATE_PROTOCOL": "http"})
		links[p] = link
		return p
	}
	// waitBusy returns just after p sent daprd a request, whose reply is
	// then at least half the link's delay away: a signal sent at once
	// certainly finds p holding a command it has not acknowledged.
	waitBusy := func(p *process) {
		t.Helper()
		link := links[p]
		err := pollErr(ctx, 10*time.Second, time.Millisecond, func() error {
			if since := link.sinceRequest(); since > link.delay/2 {
				return fmt.Errorf("last request to daprd %s ago", since)
			}
			return nil
		})
		require.NoError(t, err, "%s busy", p.name)
	}
	// scale-0 is killed in phase 2; scale-3 joins in phase 2 and leaves in
	// phase 3. Both reach daprd over a slow link.
	procs := []*process{start("scale-0", soSlowDapr), start("scale-1", 0), start("scale-2", 0)}
	b.waitConsumer(ctx, t)
	b.waitSpread(ctx, t, len(procs))

	// Phase 1: a burst of scans on three processes.
	burst := newScan(b, "burst")
	burst.cache(ctx, t)
	before := handled(t, procs)
	require.NoError(t, burst.publish(ctx, 0), "publish the burst")
	b.events.waitApplied(ctx, t, time.Minute, burst.ids())
	burstViolations, unreported := burst.verify(ctx, t, st)
	require.Zero(t, unreported, "scans applied without a non-duplicate applied event, with no process killed")
	lat := burst.latencies(t)
	t.Logf("burst: %d scans on %d carts in %d partitions, 3 processes: %d order violations; latency p50 %s, p99 %s, worst %s; commands per process %v",
		len(lat.all), soCarts, burst.partitions(ctx, t), burstViolations, lat.quantile(0.5), lat.quantile(0.99), lat.worst(), delta(handled(t, procs), before))

	// Phase 2: paced scans; a fourth process joins a third of the way
	// through, scale-0 is killed half way.
	kill := newScan(b, "kill")
	kill.cache(ctx, t)
	before = handled(t, procs)
	published := make(chan error, 1)
	go func() { published <- kill.publish(ctx, soScanEvery) }()
	kill.waitPublished(ctx, t, soCarts*soScans/3)
	joinAt := time.Since(kill.startedAt())
	procs = append(procs, start("scale-3", soSlowDapr))
	kill.waitPublished(ctx, t, soCarts*soScans/2)
	victim := procs[0]
	victimHandled := valueOr(victim.metrics(t), "cartworker_commands_total")
	waitBusy(victim)
	victim.signal(t, syscall.SIGKILL)
	killed := time.Now()
	killAt := killed.Sub(kill.startedAt())
	code, _ := victim.waitExit(t, 10*time.Second)
	require.Equal(t, -1, code, "SIGKILL leaves no exit code")
	require.NoError(t, <-published, "publish the scans")

	b.events.waitApplied(ctx, t, time.Minute, kill.ids())
	killViolations, killUnreported := kill.verify(ctx, t, st)
	lat = kill.latencies(t)
	stalled := lat.over(soAckWait / 2)
	require.NotEmpty(t, stalled, "no command waited for AckWait: scale-0 held none when it was killed")
	firstStalled, lastStalled := stalled[0].applied, stalled[0].applied
	for _, c := range stalled {
		if c.applied.Before(firstStalled) {
			firstStalled = c.applied
		}
		if c.applied.After(lastStalled) {
			lastStalled = c.applied
		}
	}
	require.LessOrEqual(t, lat.worst(), 10*time.Second, "worst publish→applied latency")
	after := handled(t, procs[1:])
	require.Positive(t, after[2], "scale-3 shared the work once it joined")
	t.Logf("join and SIGKILL: scale-3 joined %s into the scan, scale-0 was killed %s into it (having handled %.0f commands): %d scans, %d order violations",
		joinAt.Round(time.Millisecond), killAt.Round(time.Millisecond), victimHandled, len(lat.all), killViolations)
	t.Logf("  latency publish→applied: p50 %s, p99 %s, worst %s; %d scans stalled behind scale-0's: they resumed %s and the last was applied %s after the SIGKILL (AckWait %s)",
		lat.quantile(0.5), lat.quantile(0.99), lat.worst(), len(stalled),
		firstStalled.Sub(killed).Round(time.Millisecond), lastStalled.Sub(killed).Round(time.Millisecond), soAckWait)
	t.Logf("  commands per process scale-1, scale-2, scale-3 in this phase %v; %.0f redeliveries on the survivors, %d of them of scans scale-0 had stored but not reported",
		delta(after, before[1:]), redeliveries(t, procs[1:]), killUnreported)

	// Phase 3: paced scans; scale-3 is stopped half way.
	term := newScan(b, "term")
	term.cache(ctx, t)
	go func() { published <- term.publish(ctx, soScanEvery) }()
	term.waitPublished(ctx, t, soCarts*soScans/2)
	leaver := procs[3]
	waitBusy(leaver)
	leaver.signal(t, syscall.SIGTERM)
	termed := time.Now()
	code, took := leaver.waitExit(t, 30*time.Second)
	require.Zero(t, code, "exit code after SIGTERM; output:\n%s", leaver.logs.tail(20))
	require.NoError(t, <-published, "publish the scans")

	b.events.waitApplied(ctx, t, time.Minute, term.ids())
	termViolations, unreported := term.verify(ctx, t, st)
	require.Zero(t, unreported, "scans applied without a non-duplicate applied event, with no process killed")
	lat = term.latencies(t)
	around := lat.between(termed.Add(-time.Second), termed.Add(2*time.Second))
	t.Logf("SIGTERM: scale-3 exited 0 in %s; %d scans, %d order violations; latency p50 %s, p99 %s, worst %s (worst of the %d applied from 1 s before to 2 s after the SIGTERM: %s)",
		took.Round(time.Millisecond), len(lat.all), termViolations, lat.quantile(0.5), lat.quantile(0.99), lat.worst(), len(around.all), around.worst())
	// A command the leaver took and neither applied nor handed back would
	// wait AckWait for another process.
	require.Less(t, lat.worst(), soAckWait/2, "worst publish→applied latency around the SIGTERM")

	poll(ctx, t, 10*time.Second, "the consumers to settle", func() error { return b.consumerSettled(ctx) })
	n, err := b.deadLetterCount(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "dead letters")
	requireNoPanic(t, procs[1].worker, procs[2].worker, procs[3].worker)
}

// scan is one phase's POS scans: a number of add-items on each of some
// carts (soScans on soCarts unless made by newScanOf), each cart's
// published in a row by one goroutine.
type scan struct {
	b     *bus
	carts []string
	// cmds are each cart's add-items in scan order; a command's id is also
	// its line's item_code.
	cmds     map[string][]command.Command
	cacheIDs map[string]string
	// caches, when set (cacheInline), are each cart's cache command,
	// which publish stores just before the cart's first add-item.
	caches map[string]command.Command

	published atomic.Int64
	mu        sync.Mutex
	began     time.Time
	sent      map[string]time.Time // cart/id → when its publish began
	seqs      map[string][]uint64  // cart → stream sequences in scan order
}

func newScan(b *bus, name string) *scan { return newScanOf(b, name, soCarts, soScans) }

// newScanOf plans scans add-items on each of carts new carts.
func newScanOf(b *bus, name string, carts, scans int) *scan {
	s := &scan{
		b:     b,
		carts: newCartIDs(name, carts),
		cmds:  map[string][]command.Command{},
		sent:  map[string]time.Time{},
		seqs:  map[string][]uint64{},
	}
	for _, cart := range s.carts {
		for i := range scans {
			id := fmt.Sprintf("%s-%02d", cart, i)
			s.cmds[cart] = append(s.cmds[cart], command.Command{
				ID: id, Type: command.TypeAddItem, CartID: cart,
				Items: []command.Item{{
					ItemCode:  id,
					Quantity:  1 + i%3,
					UnitPrice: money.FromInt(int64(100 + (i%7)*15)),
					TaxCode:   loadTaxCodes[i%len(loadTaxCodes)],
				}},
			})
		}
	}
	return s
}

// cache creates the scan's carts.
func (s *scan) cache(ctx context.Context, t *testing.T) {
	t.Helper()
	s.cacheIDs = cacheCarts(ctx, t, s.b, s.carts)
}

// cacheInline makes publish store each cart's cache command right before
// its first add-item, without waiting for the cart to be created.
func (s *scan) cacheInline() {
	s.caches = map[string]command.Command{}
	s.cacheIDs = map[string]string{}
	for _, cart := range s.carts {
		c := publisher.CacheCommand(cart, publisher.NewCart{TenantID: "T1", StoreCode: "S1", TerminalNo: 1})
		c.ID = cart + "-cache"
		s.caches[cart] = c
		s.cacheIDs[cart] = c.ID
	}
}

// publish runs one publisher per cart, each storing its cart's add-items
// one after the other: every publish waits for JetStream's ack before the
// next, so the stream holds them in scan order. every > 0 paces them like
// a cashier. It does not wait for outcomes.
func (s *scan) publish(ctx context.Context, every time.Duration) error {
	s.mu.Lock()
	s.began = time.Now()
	s.mu.Unlock()
	errs := make([]error, len(s.carts))
	var wg sync.WaitGroup
	for ci, cart := range s.carts {
		wg.Go(func() {
			var tick *time.Ticker
			if every > 0 {
				tick = time.NewTicker(every)
				defer tick.Stop()
			}
			if c, ok := s.caches[cart]; ok {
				sent := time.Now()
				r, err := s.b.pub.Publish(ctx, c)
				if err == nil && r.Duplicate {
					err = errors.New("dropped as a JetStream duplicate")
				}
				if err != nil {
					errs[ci] = fmt.Errorf("cache of cart %s: %w", cart, err)
					return
				}
				s.mu.Lock()
				s.sent[cart+"/"+c.ID] = sent
				s.mu.Unlock()
			}
			for i, cmd := range s.cmds[cart] {
				if tick != nil && i > 0 {
					select {
					case <-tick.C:
					case <-ctx.Done():
						errs[ci] = ctx.Err()
						return
					}
				}
				sent := time.Now()
				r, err := s.b.pub.Publish(ctx, cmd)
				if err == nil && r.Duplicate {
					err = errors.New("dropped as a JetStream duplicate")
				}
				if err != nil {
					errs[ci] = fmt.Errorf("scan %s of cart %s: %w", cmd.ID, cart, err)
					return
				}
				s.mu.Lock()
				s.sent[cart+"/"+cmd.ID] = sent
				s.seqs[cart] = append(s.seqs[cart], r.Seq)
				s.mu.Unlock()
				s.published.Add(1)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitPublished waits until n add-items are stored.
func (s *scan) waitPublished(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	err := pollErr(ctx, 30*time.Second, time.Millisecond, func() error {
		if got := s.published.Load(); got < int64(n) {
			return fmt.Errorf("%d of %d published", got, n)
		}
		return nil
	})
	require.NoError(t, err)
}

// ids returns each cart's add-item ids, for eventLog.waitApplied.
func (s *scan) ids() map[string][]string {
	out := map[string][]string{}
	for cart, cmds := range s.cmds {
		for _, c := range cmds {
			out[cart] = append(out[cart], c.ID)
		}
	}
	return out
}

// verify reads every cart through daprd: its lines are exactly its scans
// in scan order, its applied ids the cache then every scan in that order,
// its totals exact; no scan has two applied events that are not
// duplicates. It returns the order violations, lines that follow a line
// scanned after them, which fail t unless there are none, and how many
// scans have only a duplicate applied event: a process died between
// storing the cart and reporting it, and the redelivery found the scan
// applied.
func (s *scan) verify(ctx context.Context, t *testing.T, st *stack) (violations, unreported int) {
	t.Helper()
	for _, cart := range s.carts {
		seqs := s.seqs[cart]
		require.True(t, slices.IsSorted(seqs), "cart %s: stream order is not scan order: %v", cart, seqs)
	}

	// Lines, totals, each command once (in any order).
	l := &load{carts: s.carts}
	for _, cart := range s.carts {
		l.cmds = append(l.cmds, s.cmds[cart]...)
	}
	l.verify(ctx, t, st, s.cacheIDs)

	outOfOrder := 0
	var example string
	for _, cart := range s.carts {
		d := readCart(ctx, t, st, cart)
		want := []string{s.cacheIDs[cart]}
		index := map[string]int{}
		for i, c := range s.cmds[cart] {
			want = append(want, c.ID)
			index[c.ID] = i
		}
		var codes []string
		for i, line := range d.LineItems {
			codes = append(codes, line.ItemCode)
			if i > 0 && index[line.ItemCode] < index[d.LineItems[i-1].ItemCode] {
				violations++
			}
		}
		if !slices.Equal(codes, want[1:]) || !slices.Equal(d.AppliedCommandIDs, want) {
			outOfOrder++
			if example == "" {
				example = fmt.Sprintf("cart %s lines %v, applied %v", cart, codes, d.AppliedCommandIDs)
			}
		}
	}
	require.Zero(t, violations, "order violations; %d carts out of scan order, e.g. %s", outOfOrder, example)
	require.Zero(t, outOfOrder, "carts out of scan order, e.g. %s", example)

	nonDup := map[string]int{}
	for _, ev := range s.b.events.all() {
		if ev.Outcome == command.OutcomeApplied && !ev.Duplicate {
			nonDup[ev.CartID+"/"+ev.CommandID]++
		}
	}
	for cart, cmds := range s.cmds {
		for _, c := range cmds {
			n := nonDup[cart+"/"+c.ID]
			require.LessOrEqual(t, n, 1, "applied events of %s that are not duplicates", c.ID)
			if n == 0 {
				unreported++
			}
		}
	}
	return violations, unreported
}

// partitions returns how many partitions the scan's carts were stored in,
// read from the stored subjects.
func (s *scan) partitions(ctx context.Context, t *testing.T) int {
	t.Helper()
	stream, err := s.b.js.Stream(ctx, command.StreamCommands)
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, cart := range s.carts {
		m, err := stream.GetMsg(ctx, s.seqs[cart][0])
		require.NoError(t, err)
		p := partitionOf(t, s.b.subj, m.Subject)
		require.Equal(t, s.b.subj.Command(cart, command.TypeAddItem), s.b.subj.Published(m.Subject), "stored subject %s", m.Subject)
		seen[p] = true
	}
	return len(seen)
}

// partitionOf returns the partition token of a stored partitioned subject,
// "<prefix>.pcmd.<p>.<cart_id>.<type>".
func partitionOf(t *testing.T, subj command.Subjects, stored string) string {
	t.Helper()
	prefix := subj.Prefix
	if prefix == "" {
		prefix = command.DefaultPrefix
	}
	tokens := strings.Split(strings.TrimPrefix(stored, prefix+"."), ".")
	require.Len(t, tokens, 4, "stored subject %s", stored)
	require.Equal(t, "pcmd", tokens[0], "stored subject %s", stored)
	_, err := strconv.Atoi(tokens[1])
	require.NoError(t, err, "stored subject %s", stored)
	return tokens[1]
}

// latency is one command's time from the start of its publish to the
// first applied event.
type latency struct {
	id      string
	applied time.Time
	took    time.Duration
}

type latencies struct{ all []latency }

// latencies returns the latency of every scan, sorted, shortest first.
func (s *scan) latencies(t *testing.T) latencies {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out latencies
	for key, sent := range s.sent {
		cart, id, _ := strings.Cut(key, "/")
		at, ok := s.b.events.appliedAt(cart, id)
		require.True(t, ok, "no applied event of %s", key)
		out.all = append(out.all, latency{id: id, applied: at, took: at.Sub(sent)})
	}
	slices.SortFunc(out.all, func(a, b latency) int { return int(a.took - b.took) })
	return out
}

func (l latencies) worst() time.Duration {
	if len(l.all) == 0 {
		return 0
	}
	return l.all[len(l.all)-1].took.Round(time.Millisecond)
}

// quantile returns the nearest-rank q-quantile.
func (l latencies) quantile(q float64) time.Duration {
	if len(l.all) == 0 {
		return 0
	}
	i := int(q*float64(len(l.all))+0.999999) - 1
	return l.all[max(0, min(i, len(l.all)-1))].took.Round(time.Millisecond)
}

// over returns the commands that took longer than d.
func (l latencies) over(d time.Duration) []latency {
	var out []latency
	for _, c := range l.all {
		if c.took > d {
			out = append(out, c)
		}
	}
	return out
}

// between returns the commands applied within [from, to].
func (l latencies) between(from, to time.Time) latencies {
	var out latencies
	for _, c := range l.all {
		if !c.applied.Before(from) && !c.applied.After(to) {
			out.all = append(out.all, c)
		}
	}
	return out
}

// startedAt is when publish began.
func (s *scan) startedAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.began
}

// appliedAt returns when the first applied event of a command was seen.
func (l *eventLog) appliedAt(cartID, commandID string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.firstApplied[cartID+"/"+commandID]
	return at, ok
}

// handled returns how many command deliveries each process has handled.
func handled(t *testing.T, procs []*process) []float64 {
	t.Helper()
	out := make([]float64, len(procs))
	for i, p := range procs {
		out[i] = valueOr(p.metrics(t), "cartworker_commands_total")
	}
	return out
}

// redeliveries sums the processes' redelivered commands.
func redeliveries(t *testing.T, procs []*process) float64 {
	t.Helper()
	var sum float64
	for _, p := range procs {
		sum += valueOr(p.metrics(t), "cartworker_redeliveries_total")
	}
	return sum
}

func delta(after, before []float64) []float64 {
	out := make([]float64, len(after))
	for i := range after {
		out[i] = after[i]
		if i < len(before) {
			out[i] -= before[i]
		}
	}
	return out
}

// hostPort is the host:port of an http URL.
func hostPort(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	return u.Host
}

// slowLink is a TCP proxy to target that holds every chunk of a reply for
// delay before passing it on: daprd on a slow network. It also tells when
// the last request was sent.
type slowLink struct {
	ln     net.Listener
	target string
	delay  time.Duration
	// sent is when the last request began, in Unix nanoseconds.
	sent   atomic.Int64
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
	closed bool
}

func startSlowLink(t *testing.T, target string, delay time.Duration) *slowLink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := &slowLink{ln: ln, target: target, delay: delay}
	l.wg.Go(l.accept)
	t.Cleanup(l.close)
	return l
}

func (l *slowLink) addr() string { return l.ln.Addr().String() }

// sinceRequest is the time since the last request began; its reply is
// at least delay from its start.
func (l *slowLink) sinceRequest() time.Duration {
	sent := l.sent.Load()
	if sent == 0 {
		return time.Duration(1<<63 - 1)
	}
	return time.Since(time.Unix(0, sent))
}

func (l *slowLink) accept() {
	for {
		in, err := l.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", l.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		if !l.track(in, out) {
			return
		}
		// awaiting is set from a request's first bytes until its reply's
		// (HTTP/1.1: one request at a time on a connection).
		var awaiting atomic.Bool
		l.wg.Go(func() {
			defer out.Close()
			buf := make([]byte, 32*1024)
			for {
				n, err := in.Read(buf)
				if n > 0 {
					if awaiting.CompareAndSwap(false, true) {
						l.sent.Store(time.Now().UnixNano())
					}
					if _, werr := out.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		})
		l.wg.Go(func() {
			defer in.Close()
			buf := make([]byte, 32*1024)
			for {
				n, err := out.Read(buf)
				if n > 0 {
					time.Sleep(l.delay)
					awaiting.Store(false)
					if _, werr := in.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		})
	}
}

// track records a connection pair, or closes it once the link is closed.
func (l *slowLink) track(c ...net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		for _, x := range c {
			_ = x.Close()
		}
		return false
	}
	l.conns = append(l.conns, c...)
	return true
}

func (l *slowLink) close() {
	l.mu.Lock()
	l.closed = true
	for _, c := range l.conns {
		_ = c.Close()
	}
	l.conns = nil
	l.mu.Unlock()
	_ = l.ln.Close()
	l.wg.Wait()
}
