package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

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
