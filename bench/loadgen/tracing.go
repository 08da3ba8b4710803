package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/cartworker/cartworker/bench/loadkit"
	"github.com/cartworker/cartworker/internal/telemetry/telemetrytest"
)

// The cost of tracing: scripts/bench.sh runs the pooled worker at
// saturation twice per round, as shipped (nothing exported) and with its
// OTLP export on ("traced": the same binary with OTEL_EXPORTER_OTLP_ENDPOINT
// pointed at `loadgen otlp-sink`). The report compares the two.

// spanCountPath is where otlp-sink tells how many spans it has received.
const spanCountPath = "/count"

// runOTLPSink serves an OTLP/HTTP trace receiver that counts the spans it
// is sent and forgets them, until interrupted.
func runOTLPSink(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("otlp-sink", stderr)
	addr := fs.String("addr", "127.0.0.1:4318", "address to listen on (traces on "+telemetrytest.TracesPath+", the count on "+spanCountPath+")")
	if err := parse(fs, args); err != nil {
		return err
	}
	sink := telemetrytest.NewSink(false)
	mux := http.NewServeMux()
	mux.Handle("POST "+telemetrytest.TracesPath, sink)
	mux.HandleFunc("GET "+spanCountPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(spanCount{Spans: sink.Count(), Requests: sink.Requests()})
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(stdout, "loadgen: OTLP sink on http://%s\n", ln.Addr())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
		fmt.Fprintf(stdout, "loadgen: OTLP sink received %d spans in %d requests\n", sink.Count(), sink.Requests())
		return nil
	case err := <-done:
		return err
	}
}

// spanCount is otlp-sink's answer on spanCountPath.
type spanCount struct {
	Spans    int64 `json:"spans"`
	Requests int64 `json:"requests"`
}

func getSpanCount(ctx context.Context, url string) (int64, error) {
	body, err := getBody(ctx, url)
	if err != nil {
		return 0, err
	}
	var c spanCount
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		return 0, fmt.Errorf("%s: %w", url, err)
	}
	return c.Spans, nil
}

// settledSpanCount waits until the sink's count stops growing: the worker
// exports in batches, every few seconds or when a batch fills, so the spans
// of a run's last commands arrive after it. It gives up after limit and
// returns the count then.
func settledSpanCount(ctx context.Context, url string, limit time.Duration) (int64, error) {
	const quiet = 1500 * time.Millisecond
	deadline := time.Now().Add(limit)
	last, err := getSpanCount(ctx, url)
	if err != nil {
		return 0, err
	}
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(quiet):
		}
		n, err := getSpanCount(ctx, url)
		if err != nil {
			return 0, err
		}
		if n == last {
			return n, nil
		}
		last = n
	}
	return last, nil
}

// Tracing compares the pooled worker at saturation with its span export off
// and on (medians over rounds; CPU per command from the worker's CPU time).
type Tracing struct {
	Users  int `json:"users"`
	Rounds int `json:"rounds"`
	// Add-items per second and add-item p99, export off and on.
	OffAddItemPerS *float64 `json:"off_add_item_per_s"`
	OnAddItemPerS  *float64 `json:"on_add_item_per_s"`
	OffP99MS       *float64 `json:"off_add_item_p99_ms"`
	OnP99MS        *float64 `json:"on_add_item_p99_ms"`
	// The worker's CPU milliseconds per command, off and on.
	OffCPUMSPerCommand *float64 `json:"off_cpu_ms_per_command"`
	OnCPUMSPerCommand  *float64 `json:"on_cpu_ms_per_command"`
	// ThroughputCostPct is how much add-item throughput export costs,
	// (1 - on / off) × 100; CPUCostPct how much more CPU each command
	// takes, (on / off - 1) × 100.
	ThroughputCostPct *float64 `json:"throughput_cost_pct"`
	CPUCostPct        *float64 `json:"cpu_cost_pct"`
	// SpansPerCommand is the spans the sink received per command the
	// traced worker handled (median over rounds): a delivery, an apply
	// and its state calls, shared by a batch; fewer than expected means
	// the exporter's queue dropped some.
	SpansPerCommand *float64 `json:"spans_per_command"`
}

// readTracing reads the tracing runs of dir ("": none).
func readTracing(dir string) ([]*loadkit.Run, error) {
	if dir == "" {
		return nil, nil
	}
	return readRuns(dir)
}

// computeTracing summarises the off (pooled) and on (traced) runs; nil
// without runs of both.
func computeTracing(runs []*loadkit.Run) *Tracing {
	var on, off bool
	satUsers := 0
	rounds := map[int]bool{}
	var spans []float64
	for _, r := range runs {
		satUsers = max(satUsers, r.Users)
		rounds[r.Round] = true
		switch r.Mode {
		case loadkit.ModePooled:
			off = true
		case loadkit.ModeTraced:
			on = true
			if r.SpansPerCommand != nil {
				spans = append(spans, *r.SpansPerCommand)
			}
		}
	}
	if !on || !off {
		return nil
	}
	points := loadkit.Aggregate(runs)
	cl, add := loadkit.ScenarioClosed, loadkit.TypeAddItem
	cpuMS := func(mode string) *float64 {
		cpu := field(points, mode, cl, satUsers, add, func(p loadkit.Point) float64 { return p.WorkerCPUPct })
		return cpuPerCommand(cpu, commandsPerS(points, mode, cl, satUsers))
	}
	t := &Tracing{
		Users: satUsers, Rounds: len(rounds),
		OffAddItemPerS: field(points, loadkit.ModePooled, cl, satUsers, add, thr),
		OnAddItemPerS:  field(points, loadkit.ModeTraced, cl, satUsers, add, thr),
		OffP99MS:       field(points, loadkit.ModePooled, cl, satUsers, add, p99),
		OnP99MS:        field(points, loadkit.ModeTraced, cl, satUsers, add, p99),

		OffCPUMSPerCommand: cpuMS(loadkit.ModePooled),
		OnCPUMSPerCommand:  cpuMS(loadkit.ModeTraced),
	}
	if r := ratio(t.OnAddItemPerS, t.OffAddItemPerS); r != nil {
		t.ThroughputCostPct = f64((1 - *r) * 100)
	}
	if r := ratio(t.OnCPUMSPerCommand, t.OffCPUMSPerCommand); r != nil {
		t.CPUCostPct = f64((*r - 1) * 100)
	}
	if len(spans) > 0 {
		t.SpansPerCommand = f64(loadkit.Median(spans))
	}
	return t
}
