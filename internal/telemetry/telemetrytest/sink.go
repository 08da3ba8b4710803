// Package telemetrytest receives OTLP trace exports in process: an
// http.Handler that decodes OTLP/HTTP protobuf requests, for the tests that
// check what the worker exports and for the benchmark's span counter.
package telemetrytest

import (
	"compress/gzip"
	"encoding/hex"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TracesPath is where OTLP/HTTP exporters send traces under their base
// endpoint.
const TracesPath = "/v1/traces"

// maxBody bounds one export request; the SDK's batches are far smaller.
const maxBody = 32 << 20

// Span is the part of an exported span the tests look at. Ids are
// lower-case hex, as in traceparent; ParentSpanID is "" for a root span.
type Span struct {
	Service      string
	Name         string
	Kind         tracepb.Span_SpanKind
	TraceID      string
	SpanID       string
	ParentSpanID string
	// Attributes holds each attribute's value as text.
	Attributes map[string]string
	// Links are the span ids the span links to.
	Links []string
	// Error is set when the span's status is Error.
	Error bool
}

// Sink is an OTLP/HTTP trace receiver. It counts every span it is sent and,
// when made with keep, keeps them. It is safe for concurrent use.
type Sink struct {
	keep     bool
	count    atomic.Int64
	requests atomic.Int64

	mu    sync.Mutex
	spans []Span
}

// NewSink returns a Sink that keeps the spans it receives when keep is set,
// or only counts them (for load, where keeping them would grow without
// bound).
func NewSink(keep bool) *Sink { return &Sink{keep: keep} }

// ServeHTTP accepts POST requests of ExportTraceServiceRequest in protobuf,
// gzipped or not, on any path, and answers an empty success.
func (s *Sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, maxBody)
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.Record(&req)
	out, err := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// Record counts, and keeps if asked, the spans of one export request,
// however it arrived (an OTLP/gRPC test server calls it too).
func (s *Sink) Record(req *collectortrace.ExportTraceServiceRequest) {
	s.requests.Add(1)
	n := 0
	var kept []Span
	for _, rs := range req.GetResourceSpans() {
		service := attrText(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			n += len(ss.GetSpans())
			if !s.keep {
				continue
			}
			for _, sp := range ss.GetSpans() {
				kept = append(kept, convert(service, sp))
			}
		}
	}
	s.count.Add(int64(n))
	if len(kept) > 0 {
		s.mu.Lock()
		s.spans = append(s.spans, kept...)
		s.mu.Unlock()
	}
}

// Count is how many spans were received.
func (s *Sink) Count() int64 { return s.count.Load() }

// Requests is how many export requests were received.
func (s *Sink) Requests() int64 { return s.requests.Load() }

// Spans returns a copy of the spans kept so far.
func (s *Sink) Spans() []Span {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Span(nil), s.spans...)
}

func convert(service string, sp *tracepb.Span) Span {
	out := Span{
		Service:    service,
		Name:       sp.GetName(),
		Kind:       sp.GetKind(),
		TraceID:    hex.EncodeToString(sp.GetTraceId()),
		SpanID:     hex.EncodeToString(sp.GetSpanId()),
		Attributes: attrText(sp.GetAttributes()),
		Error:      sp.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
	}
	if p := sp.GetParentSpanId(); len(p) > 0 {
		out.ParentSpanID = hex.EncodeToString(p)
	}
	for _, l := range sp.GetLinks() {
		out.Links = append(out.Links, hex.EncodeToString(l.GetSpanId()))
	}
	return out
}

// attrText renders attribute values as text: strings as they are, other
// scalars in their protobuf text form.
func attrText(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch x := v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = x.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = strconv.FormatInt(x.IntValue, 10)
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = strconv.FormatBool(x.BoolValue)
		default:
			m[kv.GetKey()] = v.String()
		}
	}
	return m
}
