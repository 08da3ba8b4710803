package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/bench/loadkit"
	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// workerScenario sends the scenario's commands through NATS and waits for
// their outcome events: the latency is publish to outcome event.
type workerScenario struct {
	pub *publisher.Publisher
	seq atomic.Int64
}

// Do implements loadkit.Scenario: it publishes the command and waits for
// its outcome event.
func (w *workerScenario) Do(ctx context.Context, typ, cartID string, line int) error {
	_, err := w.pub.PublishAndWait(ctx, w.command(typ, cartID, line))
	return err
}

func (w *workerScenario) command(typ, cartID string, line int) command.Command {
	switch typ {
	case loadkit.TypeCache:
		return publisher.CacheCommand(cartID, publisher.NewCart{
			TenantID: "T0001", StoreCode: "S0001", TerminalNo: 1,
			Document: loadkit.CartHeader(int(w.seq.Add(1))),
		})
	case loadkit.TypeAddItem:
		it := loadkit.ItemFor(line)
		return publisher.AddItemCommand(cartID, command.Item{
			ItemCode: it.ItemCode, Quantity: it.Quantity, UnitPrice: money.FromInt(it.UnitPrice),
			Description: it.Description, TaxCode: it.TaxCode, CategoryCode: it.CategoryCode,
		})
	default:
		return publisher.DeleteCommand(cartID)
	}
}

// connectPublisher connects to NATS and returns a Publisher and a func that
// closes both.
func connectPublisher(ctx context.Context, url, prefix string, timeout time.Duration) (*publisher.Publisher, func(), error) {
	nc, err := nats.Connect(url, nats.Name("cartworker-loadgen"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	// The stream is created by the worker; fail early when it is missing.
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := js.Stream(sctx, command.StreamCommands); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("stream %s (is the worker running on %s?): %w", command.StreamCommands, url, err)
	}
	pub, err := publisher.New(js, nc, publisher.WithPrefix(prefix), publisher.WithWaitTimeout(timeout))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return pub, func() {
		_ = pub.Close()
		nc.Close()
	}, nil
}

// runWorker runs the scenario through NATS and the worker (or the
// Watermill peer) for one mode, scenario, user count and round, and writes
// the run.
func runWorker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", stderr)
	var d driveFlags
	d.register(fs)
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "NATS URL of the worker under test")
	prefix := fs.String("prefix", command.DefaultPrefix, "subject prefix (CART_SUBJECT_PREFIX)")
	mode := fs.String("mode", loadkit.ModePooled, "label of what consumes the commands: "+strings.Join(natsModes(), ", "))
	client := fs.String("client", "", "description of the consumer, recorded in the run (default: the worker with its state client mode)")
	var probe workerProbe
	fs.StringVar(&probe.metricsURL, "worker-metrics", "", "worker /metrics URL, read before and after the run for dials")
	pid := fs.Int("worker-pid", 0, "worker process id, sampled for RSS and CPU")
	fs.StringVar(&probe.spansURL, "spans", "", "span count URL of 'loadgen otlp-sink', read before and after the run (with -worker-metrics: spans per command)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if modes := append(natsModes(), loadkit.ModeTraced); !slices.Contains(modes, *mode) {
		return usageError{fmt.Errorf("-mode %q: want one of %s", *mode, strings.Join(modes, ", "))}
	}
	cfg, err := d.config()
	if err != nil {
		return err
	}
	pub, closePub, err := connectPublisher(ctx, *natsURL, *prefix, d.timeout)
	if err != nil {
		return err
	}
	defer closePub()

	run := d.newRun(*mode, cfg)
	run.Client = "publisher.PublishAndWait over NATS JetStream; worker state client " + *mode
	if *client != "" {
		run.Client = *client
	}
	if err := probe.before(ctx); err != nil {
		return err
	}
	sampler := loadkit.StartSampler(*pid, 200*time.Millisecond, d.watch)
	run.StartedAt = time.Now().UTC()
	rec, _, end := loadkit.Drive(ctx, &workerScenario{pub: pub}, cfg)
	sampler.Stop(run)
	rec.Fill(run, end)
	probe.after(context.WithoutCancel(ctx), run, stderr)
	if err := d.write(run, stdout, stderr); err != nil {
		return err
	}
	return ctx.Err()
}

// workerProbe reads the worker's counters, and the span count of the
// OTLP sink the worker exports to, before and after a run; either URL may
// be "" for none.
type workerProbe struct {
	metricsURL, spansURL string
	counters             workerCounters
	spans                int64
}

// before takes the readings the run's figures start from.
func (p *workerProbe) before(ctx context.Context) error {
	var err error
	if p.metricsURL != "" {
		if p.counters, err = scrapeWorker(ctx, p.metricsURL); err != nil {
			return fmt.Errorf("worker metrics before the run: %w", err)
		}
	}
	if p.spansURL != "" {
		if p.spans, err = settledSpanCount(ctx, p.spansURL, 10*time.Second); err != nil {
			return fmt.Errorf("span count before the run: %w", err)
		}
	}
	return nil
}

// after records the run's dials, state calls, handling time, time per
// stage and spans per command. A reading that fails leaves its figures unknown and the
// latencies kept, with a warning on stderr.
func (p *workerProbe) after(ctx context.Context, run *loadkit.Run, stderr io.Writer) {
	if p.metricsURL == "" {
		return
	}
	// The worker counts a call when it completes; outcome events are
	// sent after that, so the counters are complete by now.
	after, err := scrapeWorker(ctx, p.metricsURL)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: warning: worker metrics after the run: %v\n", err)
		return
	}
	before := p.counters
	run.Dials = int64p(after.Dials - before.Dials)
	run.StateCalls = int64p(after.StateCalls - before.StateCalls)
	run.DialsTotal = int64p(after.Dials)
	run.StateFailures = int64p(after.StateFailures - before.StateFailures)
	run.WorkerStagesMS = stageMeans(before.Stages, after.Stages)
	n := after.Handled - before.Handled
	if n <= 0 {
		return
	}
	run.WorkerHandleMS = (after.HandleS - before.HandleS) / float64(n) * 1000
	if p.spansURL == "" {
		return
	}
	spans, err := settledSpanCount(ctx, p.spansURL, 10*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: warning: span count after the run: %v\n", err)
		return
	}
	perCommand := float64(spans-p.spans) / float64(n)
	run.SpansPerCommand = &perCommand
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// natsModes are the modes whose commands go through NATS to a consumer.
func natsModes() []string {
	var out []string
	for _, m := range loadkit.Modes {
		if loadkit.ThroughNATS(m) {
			out = append(out, m)
		}
	}
	return out
}
