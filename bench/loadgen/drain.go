package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/bench/loadkit"
	"github.com/cartworker/cartworker/bench/report"
	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/publisher"
)

// This file is one drain of `loadgen backlog`, step by step: publish the
// backlog while the consumer is stopped, launch the consumer, wait for the
// outcome event of every command, read the consumer's figures, and read
// every cart back.

// drainBacklog runs one drain as f describes it. It returns the drain
// measured so far with an error that came after the measuring (reading the
// carts back), and no drain with an error before it.
func drainBacklog(ctx context.Context, f backlogFlags, stderr io.Writer) (*report.BacklogRun, error) {
	res := newBacklogRun(f)
	bs, err := openBacklog(ctx, f)
	if err != nil {
		return nil, err
	}
	defer bs.close()
	// Publish: each publisher owns some carts and sends them round-robin,
	// line by line, so that a cart's commands are stored in order and the
	// carts interleave as a busy store's would.
	t := time.Now()
	if err := publishBacklog(ctx, bs.pub, bs.cmds, f.publishers); err != nil {
		return nil, err
	}
	res.PublishS = time.Since(t).Seconds()
	fmt.Fprintf(stderr, "loadgen: published %d commands (%d carts) in %.1fs; launching the consumer\n", res.Commands, f.carts, res.PublishS)

	c, err := launchConsumer(f.launch, f.launchLog)
	if err != nil {
		return nil, err
	}
	defer c.close()
	sampler := loadkit.StartSampler(c.pid(), 100*time.Millisecond, f.watch)
	heap := startHeapProfiles(ctx, f.heapURL, c.pid())
	ready, err := awaitDrain(ctx, f, c, bs.watch, res)
	if err != nil {
		return nil, err
	}
	seen, first, last := bs.watch.snapshot()
	recordBatches(ctx, f.metricsURL, c.stopped, res)
	heap.stop()
	recordProcess(sampler, c, res)
	c.stop()
	saveHeapProfile(heap, f.heapProfile, res, stderr)
	applied := recordEvents(bs.watch, res)
	recordTiming(res, c.launched, ready, seen, first, last)
	return res, checkBacklogCarts(ctx, f, res, applied)
}

// newBacklogRun is the drain's record before it starts: what is published.
func newBacklogRun(f backlogFlags) *report.BacklogRun {
	shape, _ := backlogShapeOf(f.scenario)
	return &report.BacklogRun{
		Kind: "backlog", Mode: f.mode, Scenario: f.scenario, Round: f.round, Client: f.client,
		Carts: f.carts, AddItemsPerCart: f.lines, Commands: f.carts * (f.lines + 1),
		RefusalCode: shape.refusal, StartedAt: time.Now().UTC(),
	}
}

// backlogStream is the NATS side of a drain: the connection, the
// publisher, the backlog's commands per cart and the watch on their
// outcome events.
type backlogStream struct {
	nc    *nats.Conn
	pub   *publisher.Publisher
	sub   *nats.Subscription
	cmds  [][]command.Command
	watch *eventWatch
}

// openBacklog connects to the consumer's NATS server, checks that no
// earlier backlog is left, and watches the outcome events of the backlog's
// commands before any is published.
func openBacklog(ctx context.Context, f backlogFlags) (*backlogStream, error) {
	nc, err := nats.Connect(f.natsURL, nats.Name("cartworker-loadgen-backlog"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS %s: %w", f.natsURL, err)
	}
	bs := &backlogStream{nc: nc}
	if err := bs.open(ctx, f); err != nil {
		bs.close()
		return nil, err
	}
	return bs, nil
}

func (bs *backlogStream) open(ctx context.Context, f backlogFlags) error {
	js, err := jetstream.New(bs.nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if err := checkIdle(ctx, js); err != nil {
		return err
	}
	if bs.pub, err = publisher.New(js, bs.nc, publisher.WithPrefix(f.prefix)); err != nil {
		return fmt.Errorf("publisher: %w", err)
	}
	bs.cmds = backlogCommands(f.cartPrefix, f.carts, f.lines)
	var ids []string
	for _, c := range bs.cmds {
		for _, cmd := range c {
			ids = append(ids, cmd.ID)
		}
	}
	shape, _ := backlogShapeOf(f.scenario)
	bs.watch = newEventWatch(ids, shape.refusal)
	if bs.sub, err = bs.nc.Subscribe(bs.pub.Subjects().Events(), bs.watch.handle); err != nil {
		return fmt.Errorf("subscribe to the outcome events: %w", err)
	}
	_ = bs.sub.SetPendingLimits(-1, -1)
	return bs.nc.FlushTimeout(5 * time.Second)
}

// close unsubscribes and closes the publisher and the connection.
func (bs *backlogStream) close() {
	if bs.sub != nil {
		_ = bs.sub.Unsubscribe()
	}
	if bs.pub != nil {
		_ = bs.pub.Close()
	}
	bs.nc.Close()
}

// consumer is the consumer process a drain launches.
type consumer struct {
	proc     *exec.Cmd
	exited   chan error // its Wait's result, once
	stopped  bool       // it exited, or stop was called
	launched time.Time
	log      *os.File // nil when its output is discarded
}

// launchConsumer starts the launcher (which execs the consumer), its
// output to logPath or discarded when logPath is "".
func launchConsumer(launch, logPath string) (*consumer, error) {
	c := &consumer{exited: make(chan error, 1)}
	var out io.Writer = io.Discard
	if logPath != "" {
		lf, err := os.Create(logPath)
		if err != nil {
			return nil, fmt.Errorf("consumer log: %w", err)
		}
		c.log, out = lf, lf
	}
	c.proc = exec.Command(launch)
	c.proc.Stdout, c.proc.Stderr = out, out
	c.launched = time.Now()
	if err := c.proc.Start(); err != nil {
		c.closeLog()
		return nil, fmt.Errorf("launch %s: %w", launch, err)
	}
	go func() { c.exited <- c.proc.Wait() }()
	return c, nil
}

func (c *consumer) pid() int { return c.proc.Process.Pid }

// stop sends the consumer SIGTERM and waits for it to exit, killing it
// after 25 s; it does nothing once the consumer has exited or been stopped.
func (c *consumer) stop() {
	if c.stopped {
		return
	}
	c.stopped = true
	_ = c.proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(25 * time.Second):
		_ = c.proc.Process.Kill()
		<-c.exited
	}
}

// close stops the consumer and closes its log.
func (c *consumer) close() {
	c.stop()
	c.closeLog()
}

func (c *consumer) closeLog() {
	if c.log != nil {
		_ = c.log.Close()
	}
}

// watchReady probes url every 10 ms until it answers 200 and sends the
// time it did; nothing is sent when url is "". Call the func returned to
// stop probing.
func watchReady(ctx context.Context, url string) (<-chan time.Time, func()) {
	readyCh := make(chan time.Time, 1)
	ctx, cancel := context.WithCancel(ctx)
	if url == "" {
		return readyCh, cancel
	}
	go func() {
		for ctx.Err() == nil {
			if probeHTTP(ctx, url, 200) == nil {
				readyCh <- time.Now()
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return readyCh, cancel
}

// awaitDrain waits until the outcome event of every command has arrived,
// the consumer exits or f.timeout passes (noted in res.Error), and returns
// when the consumer became ready: zero if it never answered. It fails only
// when ctx ends.
func awaitDrain(ctx context.Context, f backlogFlags, c *consumer, watch *eventWatch, res *report.BacklogRun) (time.Time, error) {
	readyCh, cancelReady := watchReady(ctx, f.readyURL)
	defer cancelReady()
	timer := time.NewTimer(f.timeout)
	defer timer.Stop()
	var ready time.Time
wait:
	for {
		select {
		case ready = <-readyCh:
		case <-watch.done:
			break wait
		case err := <-c.exited:
			c.stopped = true
			res.Error = fmt.Sprintf("the consumer exited during the drain (%v); see its log", err)
			break wait
		case <-timer.C:
			res.Error = fmt.Sprintf("timed out after %s", f.timeout)
			break wait
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
	cancelReady()
	if ready.IsZero() {
		select {
		case ready = <-readyCh:
		default:
		}
	}
	return ready, nil
}

// recordBatches reads the consumer's batch-size and carts-per-apply
// histograms after the drain, unless it exited: the process was started
// for this drain, so its histograms are the drain's.
func recordBatches(ctx context.Context, metricsURL string, exited bool, res *report.BacklogRun) {
	res.BatchNote = "n/a: no -metrics URL (not the worker)"
	if metricsURL == "" || exited {
		return
	}
	switch h, err := scrapeHistogram(ctx, metricsURL, metricBatchSize); {
	case err != nil:
		res.BatchNote = "n/a: " + err.Error()
	case h == nil:
		res.BatchNote = "n/a: no " + metricBatchSize + " in the consumer's metrics"
	default:
		res.Batch, res.BatchNote = h, ""
		res.ApplyCarts, _ = scrapeHistogram(ctx, metricsURL, metricApplyCarts)
	}
}

// recordProcess stops the sampler and records the consumer's peak RSS and
// CPU, with the kernel's record of its largest RSS while it still runs.
func recordProcess(sampler *loadkit.Sampler, c *consumer, res *report.BacklogRun) {
	var pr loadkit.Run
	sampler.Stop(&pr)
	res.PeakRSSMiB = pr.WorkerRSSMaxMiB
	if kib, err := loadkit.ProcHWMKiB(c.pid()); err == nil && !c.stopped {
		res.PeakRSSMiB = max(res.PeakRSSMiB, float64(kib)/1024)
	}
	if pr.ElapsedS > 0 {
		res.CPUPct = pr.WorkerCPUS / pr.ElapsedS * 100
	}
	res.HostBusyPct, res.ProcCPUS = pr.HostBusyPct, pr.ProcCPUS
}

// saveHeapProfile writes the heap profile kept to path, if one is wanted
// and was read; a drain without one is still measured.
func saveHeapProfile(heap *heapProfiles, path string, res *report.BacklogRun, stderr io.Writer) {
	if path == "" {
		return
	}
	if err := heap.write(path); err != nil {
		fmt.Fprintf(stderr, "loadgen: no heap profile: %v\n", err)
		return
	}
	res.HeapProfile = path
}

// recordEvents copies the outcome counts into res and returns the ids
// applied, for the totals check.
func recordEvents(watch *eventWatch, res *report.BacklogRun) map[string]bool {
	watch.mu.Lock()
	defer watch.mu.Unlock()
	res.Applied, res.Refused, res.Rejected, res.Duplicates = len(watch.applied), watch.refused, watch.rejected, watch.duplicates
	res.Examples = append([]string(nil), watch.examples...)
	return maps.Clone(watch.applied)
}

// recordTiming times the drain from readiness (or the first outcome event,
// when that came first) to the last outcome event; the rates only when
// every command's event arrived.
func recordTiming(res *report.BacklogRun, launched, ready time.Time, seen int, first, last time.Time) {
	if seen == 0 {
		return
	}
	start := first
	if !ready.IsZero() && ready.Before(first) {
		start = ready
	}
	res.ReadyS = start.Sub(launched).Seconds()
	res.FirstEventS = first.Sub(launched).Seconds()
	res.WallS = last.Sub(launched).Seconds()
	res.DrainS = last.Sub(start).Seconds()
	if seen == res.Commands && res.DrainS > 0 {
		res.CommandsPerS = float64(res.Commands) / res.DrainS
		res.WallCommandsPerS = float64(res.Commands) / res.WallS
	}
}

// checkBacklogCarts reads every cart back through Dapr and checks it
// against what was applied, then deletes the carts unless they are to be
// kept.
func checkBacklogCarts(ctx context.Context, f backlogFlags, res *report.BacklogRun, applied map[string]bool) error {
	client, err := statepool.New(statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: f.dapr, StoreName: f.store, Mode: statepool.ModePooled})
	if err != nil {
		return fmt.Errorf("state client for %s: %w", f.dapr, err)
	}
	defer client.Close()
	checkTotals(ctx, client, res, f.cartPrefix, func(c, line int) bool { return applied[fmt.Sprintf("%s-%d-%d", f.cartPrefix, c, line)] })
	if !f.keepCarts {
		deleteCarts(ctx, client, f.cartPrefix, f.carts)
	}
	return nil
}
