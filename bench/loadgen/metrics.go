package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Worker metrics read around each run.
const (
	metricDials      = "cartworker_state_connections_opened_total"
	metricStateCalls = "cartworker_state_requests_total"
	metricHandleSum  = "cartworker_command_duration_seconds_sum"
	metricHandleN    = "cartworker_command_duration_seconds_count"
)

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
}

// scrapeWorker reads the worker's /metrics.
func scrapeWorker(ctx context.Context, url string) (workerCounters, error) {
	body, err := getBody(ctx, url)
	if err != nil {
		return workerCounters{}, err
	}
	return parseWorkerMetrics(strings.NewReader(body))
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
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return string(b), err
}

// parseWorkerMetrics reads the Prometheus text format: the dial counter, and
// the state call counter summed over its labels.
func parseWorkerMetrics(r io.Reader) (workerCounters, error) {
	var c workerCounters
	foundDials := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, ok := splitSample(line)
		if !ok {
			continue
		}
		switch name {
		case metricDials:
			c.Dials = int64(value)
			foundDials = true
		case metricStateCalls:
			c.StateCalls += int64(value)
			// HTTP answers 200 or 204; over gRPC a call succeeds with "OK".
			if !strings.Contains(line, `code="200"`) && !strings.Contains(line, `code="204"`) && !strings.Contains(line, `code="OK"`) {
				c.StateFailures += int64(value)
			}
		case metricHandleSum:
			c.HandleS += value
		case metricHandleN:
			c.Handled += int64(value)
		}
	}
	if err := sc.Err(); err != nil {
		return c, err
	}
	if !foundDials {
		return c, fmt.Errorf("no %s in the worker's metrics", metricDials)
	}
	return c, nil
}

// splitSample splits `name{labels} value [timestamp]`.
func splitSample(line string) (string, float64, bool) {
	nameEnd := strings.IndexAny(line, "{ ")
	if nameEnd < 0 {
		return "", 0, false
	}
	name := line[:nameEnd]
	rest := line[nameEnd:]
	if rest[0] == '{' {
		close := strings.LastIndexByte(rest, '}')
		if close < 0 {
			return "", 0, false
		}
		rest = rest[close+1:]
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return "", 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return "", 0, false
	}
	return name, v, true
}
