package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cartworker/cartworker/bench/report"
)

// Worker metrics read around each run and after each drain.
const (
	metricDials      = "cartworker_state_connections_opened_total"
	metricStateCalls = "cartworker_state_requests_total"
	metricHandle     = "cartworker_command_duration_seconds"
	// metricBatchSize is the worker's histogram of commands per
	// read-modify-write, and metricApplyCarts of carts per apply.
	metricBatchSize  = "cartworker_batch_size"
	metricApplyCarts = "cartworker_apply_carts"
	// metricStages is the worker's histogram of the time an applied
	// command spent in each stage (loadkit.WorkerStages), by label stage.
	metricStages = "cartworker_command_stage_seconds"
)

// maxMetricsBytes bounds a /metrics page read.
const maxMetricsBytes = 8 << 20

// workerCounters are the worker's cumulative counters at one moment.
type workerCounters struct {
	Dials      int64
	StateCalls int64
	// StateFailures counts the state calls that got neither 200 nor 204
	// (409, 5xx, timeout, error), nor gRPC's OK.
	StateFailures int64
	// HandleS and Handled are the sum and count of the worker's own
	// command handling time (pull to ack), all types.
	HandleS float64
	Handled int64
	// Stages are the sum and count of each stage's histogram, by stage;
	// nil when the worker exports none.
	Stages map[string]sumCount
}

// sumCount is a histogram's sum and count of observations.
type sumCount struct{ Sum, Count float64 }

// scrapeWorker reads the worker's /metrics.
func scrapeWorker(ctx context.Context, url string) (workerCounters, error) {
	body, err := getBody(ctx, url)
	if err != nil {
		return workerCounters{}, err
	}
	return parseWorkerMetrics(strings.NewReader(body))
}

// scrapeHistogram reads the histogram metric from a /metrics URL.
func scrapeHistogram(ctx context.Context, url, metric string) (*report.BatchSizes, error) {
	body, err := getBody(ctx, url)
	if err != nil {
		return nil, err
	}
	return parseHistogram(strings.NewReader(body), metric)
}

// getBody GETs url (a /metrics page) within 3 seconds.
func getBody(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxMetricsBytes))
	return string(b), err
}

// parseMetrics reads the metric families of a page in the Prometheus text
// format.
func parseMetrics(r io.Reader) (map[string]*dto.MetricFamily, error) {
	// A parser holds its state while it reads, so each page gets its own.
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(io.LimitReader(r, maxMetricsBytes))
	if err != nil {
		return nil, fmt.Errorf("parsing metrics: %w", err)
	}
	return families, nil
}

// parseWorkerMetrics reads the dial counter, the state call counter summed
// over its labels (the failed calls apart), the command handling time's
// sum and count, and each stage's.
func parseWorkerMetrics(r io.Reader) (workerCounters, error) {
	families, err := parseMetrics(r)
	if err != nil {
		return workerCounters{}, err
	}
	var c workerCounters
	dials, ok := families[metricDials]
	if !ok {
		return c, fmt.Errorf("no %s in the worker's metrics", metricDials)
	}
	for _, m := range dials.GetMetric() {
		c.Dials += int64(sampleValue(m))
	}
	for _, m := range families[metricStateCalls].GetMetric() {
		v := int64(sampleValue(m))
		c.StateCalls += v
		if !stateCallOK(labelValue(m, "code")) {
			c.StateFailures += v
		}
	}
	if h := histogramOf(families, metricHandle); h != nil {
		c.HandleS, c.Handled = h.Sum, int64(h.Count)
	}
	c.Stages = histogramByLabel(families, metricStages, "stage")
	return c, nil
}

// histogramByLabel is the sum and count of the histogram metric per value
// of label, summed over any other labels; nil when the page has none of it.
// As in histogramOf, a histogram without its "# TYPE" line is read from
// its untyped metric_sum and metric_count families.
func histogramByLabel(families map[string]*dto.MetricFamily, metric, label string) map[string]sumCount {
	out := map[string]sumCount{}
	add := func(m *dto.Metric, sum, count float64) {
		k := labelValue(m, label)
		if k == "" {
			return
		}
		sc := out[k]
		sc.Sum += sum
		sc.Count += count
		out[k] = sc
	}
	if mf := families[metric]; mf.GetType() == dto.MetricType_HISTOGRAM {
		for _, m := range mf.GetMetric() {
			add(m, m.GetHistogram().GetSampleSum(), histogramCount(m.GetHistogram()))
		}
	}
	for _, m := range families[metric+"_sum"].GetMetric() {
		add(m, sampleValue(m), 0)
	}
	for _, m := range families[metric+"_count"].GetMetric() {
		add(m, 0, sampleValue(m))
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// stageMeans is each stage's mean time between two readings, in ms: the
// observations added between them, over how many there were; a stage
// nothing was added to is left out, and nil is returned for none.
func stageMeans(before, after map[string]sumCount) map[string]float64 {
	var out map[string]float64
	for st, a := range after {
		b := before[st]
		n := a.Count - b.Count
		if n <= 0 {
			continue
		}
		if out == nil {
			out = map[string]float64{}
		}
		out[st] = (a.Sum - b.Sum) / n * 1000
	}
	return out
}

// stateCallOK reports whether a state call's code is a success: HTTP
// answers 200 or 204; over gRPC a call succeeds with "OK".
func stateCallOK(code string) bool {
	return code == "200" || code == "204" || code == "OK"
}

// parseHistogram reads the histogram metric (cartworker_batch_size,
// cartworker_apply_carts) from the Prometheus text format, summed over any
// labels besides le; nil when it is absent.
func parseHistogram(r io.Reader, metric string) (*report.BatchSizes, error) {
	families, err := parseMetrics(r)
	if err != nil {
		return nil, err
	}
	return histogramOf(families, metric), nil
}

// histogramOf sums the histogram metric over its label sets (all but le);
// nil when the page has none of it. A histogram the page gives no "# TYPE"
// line parses as three untyped families, metric_bucket, metric_sum and
// metric_count; they are read too.
func histogramOf(families map[string]*dto.MetricFamily, metric string) *report.BatchSizes {
	buckets := map[string]float64{}
	var sum, count float64
	found := false
	if mf := families[metric]; mf.GetType() == dto.MetricType_HISTOGRAM {
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			sum += h.GetSampleSum()
			count += histogramCount(h)
			for _, b := range h.GetBucket() {
				buckets[boundText(b.GetUpperBound())] += bucketCount(b)
			}
			found = true
		}
	}
	for _, m := range families[metric+"_bucket"].GetMetric() {
		if le := labelValue(m, "le"); le != "" {
			buckets[le] += sampleValue(m)
			found = true
		}
	}
	for _, m := range families[metric+"_sum"].GetMetric() {
		sum += sampleValue(m)
		found = true
	}
	for _, m := range families[metric+"_count"].GetMetric() {
		count += sampleValue(m)
		found = true
	}
	if !found {
		return nil
	}
	var bs []report.Bucket
	for le, c := range buckets {
		bs = append(bs, report.Bucket{LE: le, Count: c})
	}
	return report.NewBatchSizes(bs, sum, count)
}

// sampleValue is the value of a counter, gauge or untyped sample.
func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	default:
		return m.GetUntyped().GetValue()
	}
}

// histogramCount is a histogram's observations, given as an integer or,
// for a float histogram, a float.
func histogramCount(h *dto.Histogram) float64 {
	if h.SampleCountFloat != nil {
		return h.GetSampleCountFloat()
	}
	return float64(h.GetSampleCount())
}

// bucketCount is a bucket's cumulative count, integer or float.
func bucketCount(b *dto.Bucket) float64 {
	if b.CumulativeCountFloat != nil {
		return b.GetCumulativeCountFloat()
	}
	return float64(b.GetCumulativeCount())
}

// boundText is a bucket bound as the text format writes it in le ("+Inf",
// "0.005", "128"), so that the drains' bucket names match the page's.
func boundText(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// labelValue is the value of label name of a sample, "" without it.
func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
