package main

import (
	"bytes"
	"context"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// The traced worker is 20 % slower at saturation on the same CPU time, so
// each command (502 a second off, 402 on) costs a quarter more CPU, and it
// exported 4 and 5 spans per command in its two rounds.
func TestTracingCost(t *testing.T) {
	in := testInput()
	for round := 1; round <= 2; round++ {
		off := fakeRun(loadkit.ModePooled, loadkit.ScenarioClosed, 64, round, 100, 500, 0, 3000)
		on := fakeRun(loadkit.ModeTraced, loadkit.ScenarioClosed, 64, round, 100, 400, 0, 2400)
		off.WorkerCPUS, on.WorkerCPUS = 0.5, 0.5
		on.SpansPerCommand = f64(float64(3 + round))
		in.tracing = append(in.tracing, off, on)
	}
	res, md, _, err := buildReport(in)
	if err != nil {
		t.Fatal(err)
	}
	tr := res.Tracing
	if tr == nil {
		t.Fatal("no tracing results")
	}
	near := func(name string, got *float64, want float64) {
		t.Helper()
		if got == nil {
			t.Errorf("%s not measured, want %v", name, want)
		} else if math.Abs(*got-want) > 0.01 {
			t.Errorf("%s = %v, want %v", name, *got, want)
		}
	}
	near("off add-items/s", tr.OffAddItemPerS, 500)
	near("on add-items/s", tr.OnAddItemPerS, 400)
	near("throughput cost", tr.ThroughputCostPct, 20)
	near("CPU cost", tr.CPUCostPct, (502.0/402-1)*100)
	near("spans per command", tr.SpansPerCommand, 4.5)
	if tr.Users != 64 || tr.Rounds != 2 {
		t.Errorf("users %d rounds %d", tr.Users, tr.Rounds)
	}
	if !strings.Contains(string(md), "## Tracing cost") || !strings.Contains(string(md), "costs 20 % of the add-item throughput") {
		t.Errorf("report:\n%s", md)
	}
	// The tracing rounds stay out of every other table.
	for _, p := range res.Points {
		if p.Mode == loadkit.ModeTraced {
			t.Fatalf("traced point among the main points: %+v", p)
		}
	}

	res, md, _, err = buildReport(testInput())
	if err != nil {
		t.Fatal(err)
	}
	if res.Tracing != nil || !strings.Contains(string(md), "Not measured (BENCH_TRACING=0") {
		t.Errorf("tracing without its rounds: %+v", res.Tracing)
	}
}

// otlp-sink counts the spans of OTLP/HTTP exports; settledSpanCount reads
// the count once it stops growing.
func TestOTLPSinkCounts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stdout, stderr bytes.Buffer
	go func() { done <- runOTLPSink(ctx, []string{"-addr", addr}, &stdout, &stderr) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("otlp-sink: %v", err)
		}
	}()

	req := &collectortrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{Name: "a"}, {Name: "b"}, {Name: "c"}}}},
	}}}
	body, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Post(base+"/v1/traces", "application/x-protobuf", bytes.NewReader(body))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("export: %s", resp.Status)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink never listened: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // waiting for the listener, not asserting
	}
	n, err := settledSpanCount(context.Background(), base+spanCountPath, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("count %d, want 3", n)
	}
	if _, err := getSpanCount(context.Background(), base+"/nothing"); err == nil {
		t.Error("a wrong URL must fail")
	}
}
