//go:build integration

package integration

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/cartworkertest"
)

// worker is a cartworkertest worker as the tests use it: its name, its
// HTTP endpoints and its output.
type worker struct {
	*cartworkertest.Worker
	name string
	logs workerLogs
}

// process is a worker running as its own OS process (./cmd/worker).
type process struct{ *worker }

// workerLogs is a worker's output.
type workerLogs struct{ w *cartworkertest.Worker }

func (l workerLogs) String() string { return l.w.Logs() }

// tail is the last n lines of the output.
func (l workerLogs) tail(n int) string { return lastLines(l.w.Logs(), n) }

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// inProcessWorker runs a worker through internal/app in the test's process
// on st, with extra over the stack's environment. It returns once the
// worker serves /healthz. Cleanup stops it, failing t if it does not stop
// within 30s or app.Run returned an error.
func inProcessWorker(t *testing.T, st *stack, name string, extra map[string]string) *worker {
	t.Helper()
	return addWorker(t, st, name, extra, true)
}

// startProcess runs the worker binary on st, with extra over the stack's
// environment ("" unsets a variable). Cleanup stops it (SIGTERM, SIGKILL
// after 30s) if it still runs.
func startProcess(t *testing.T, st *stack, name string, extra map[string]string) *process {
	t.Helper()
	return &process{addWorker(t, st, name, extra, false)}
}

// addWorker adds a worker to st, in-process or as a process, and stops it
// at cleanup.
func addWorker(t *testing.T, st *stack, name string, extra map[string]string, inProcess bool) *worker {
	t.Helper()
	kind := cartworkertest.WorkerBinary(workerBin)
	if inProcess {
		kind = cartworkertest.WorkerInProcess()
	}
	w, err := st.AddWorker(t.Context(), kind, cartworkertest.WorkerName(name),
		cartworkertest.WorkerEnv(extra), cartworkertest.WorkerWaitHealthy())
	require.NoError(t, err, "worker %s", name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("worker %s did not stop: %v", name, err)
		}
		if err := w.Err(); err != nil && inProcess {
			t.Errorf("worker %s: app.Run returned %v", name, err)
		}
		if t.Failed() {
			t.Logf("--- last log lines of worker %s ---\n%s", name, workerLogs{w}.tail(60))
		}
	})
	return &worker{Worker: w, name: name, logs: workerLogs{w}}
}

func (p *process) running() bool { return !p.Exited() }

// signal sends sig to the process (and only to it).
func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, p.Signal(t.Context(), sig), "signal %s to worker %s", sig, p.name)
}

// waitExit waits up to timeout for the process to exit and returns its exit
// code and how long it took.
func (p *process) waitExit(t *testing.T, timeout time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	code, err := p.Wait(ctx)
	require.NoError(t, err, "worker %s did not exit within %s", p.name, timeout)
	return code, time.Since(start)
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// get fetches path from the worker's HTTP endpoint.
func (w *worker) get(path string) (int, string, error) {
	resp, err := httpClient.Get(w.URL() + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// readyz returns the status of GET /readyz.
func (w *worker) readyz() (int, error) {
	code, _, err := w.get("/readyz")
	return code, err
}

// metrics returns the worker's /metrics text.
func (w *worker) metrics(t *testing.T) metricsText {
	t.Helper()
	code, body, err := w.get("/metrics")
	require.NoError(t, err, "metrics of %s", w.name)
	require.Equal(t, http.StatusOK, code)
	return metricsText(body)
}

// metricsText is a Prometheus text exposition.
type metricsText string

// value sums the samples of metric name whose labels include every pair of
// labels ("k", "v", ...). ok is false when no sample matched.
func (m metricsText) value(name string, labels ...string) (float64, bool) {
	var sum float64
	found := false
	sc := bufio.NewScanner(strings.NewReader(string(m)))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		series, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		metric, rawLabels, _ := strings.Cut(series, "{")
		if metric != name || !hasLabels(strings.TrimSuffix(rawLabels, "}"), labels) {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			sum += f
			found = true
		}
	}
	return sum, found
}

// get is value, failing t when the metric is absent.
func (m metricsText) get(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, ok := m.value(name, labels...)
	require.True(t, ok, "metric %s%v not exported", name, labels)
	return v
}

func hasLabels(raw string, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		if !strings.Contains(","+raw+",", ","+want[i]+`="`+want[i+1]+`",`) {
			return false
		}
	}
	return true
}

// requireNoPanic fails t if a worker's output shows a panic or a data race.
func requireNoPanic(t *testing.T, ws ...*worker) {
	t.Helper()
	for _, w := range ws {
		out := w.logs.String()
		for _, bad := range []string{"panic:", "goroutine ", "DATA RACE"} {
			require.NotContains(t, out, bad, "worker %s output", w.name)
		}
	}
}
