package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

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
