//go:build integration

package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/app"
	"github.com/cartworker/cartworker/internal/config"
	"github.com/cartworker/cartworker/internal/testkit"
)

// workerEnv is the environment of a worker on st: NATS and Dapr endpoints,
// a loopback HTTP address of its own, text logs. extra wins.
func workerEnv(t *testing.T, st, natsStack *stack, extra map[string]string) map[string]string {
	t.Helper()
	env := map[string]string{
		"NATS_URL":           natsStack.NATSURL,
		"DAPR_HTTP_ENDPOINT": st.DaprURL,
		"DAPR_GRPC_ENDPOINT": "http://" + st.DaprGRPCAddr,
		"DAPR_API_TOKEN":     st.DaprToken,
		"WORKER_HTTP_ADDR":   fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"LOG_FORMAT":         "text",
		"LOG_LEVEL":          "info",
	}
	maps.Copy(env, extra)
	return env
}

// worker is the part of a running worker the tests observe: its HTTP
// endpoints and its log output.
type worker struct {
	name     string
	httpAddr string
	logs     *syncBuffer
}

// inProcessWorker runs app.Run in a goroutine owned by t. Cleanup cancels it
// and waits for Run to return, failing t if it does not within 30s or
// returns an error.
func inProcessWorker(t *testing.T, name string, env map[string]string) *worker {
	t.Helper()
	cfg, err := config.Load(nil, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err, "worker config")
	w := &worker{name: name, httpAddr: cfg.HTTPAddr, logs: &syncBuffer{}}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg, app.NewLogger(cfg, w.logs)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("worker %s: app.Run returned %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("worker %s: app.Run did not return within 30s of cancel", name)
		}
		if t.Failed() {
			t.Logf("--- last log lines of worker %s ---\n%s", name, w.logs.tail(60))
		}
	})
	w.waitHTTP(t)
	return w
}

// process is a worker running as its own OS process (./cmd/worker).
type process struct {
	*worker
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// startProcess starts the worker binary with exactly env. Cleanup sends
// SIGTERM (SIGKILL after 30s) if it still runs and logs its output if t
// failed.
func startProcess(t *testing.T, name string, env map[string]string) *process {
	t.Helper()
	p := &process{
		worker: &worker{name: name, httpAddr: env["WORKER_HTTP_ADDR"], logs: &syncBuffer{}},
		done:   make(chan struct{}),
	}
	p.cmd = exec.Command(workerBin)
	keys := slices.Sorted(maps.Keys(env))
	for _, k := range keys {
		if env[k] != "" {
			p.cmd.Env = append(p.cmd.Env, k+"="+env[k])
		}
	}
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	require.NoError(t, p.cmd.Start(), "start worker %s", name)
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.running() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				t.Errorf("worker %s ignored SIGTERM for 30s; killing it", name)
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
		if t.Failed() {
			t.Logf("--- last log lines of worker process %s ---\n%s", name, p.logs.tail(60))
		}
	})
	p.waitHTTP(t)
	return p
}

func (p *process) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig to the process (and only to it).
func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig), "signal %s to worker %s", sig, p.name)
}

// waitExit waits up to timeout for the process to exit and returns its exit
// code and how long it took.
func (p *process) waitExit(t *testing.T, timeout time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("worker %s did not exit within %s", p.name, timeout)
	}
	return p.cmd.ProcessState.ExitCode(), time.Since(start)
}

// waitHTTP waits until the worker serves /healthz, failing early if the
// process died.
func (w *worker) waitHTTP(t *testing.T) {
	t.Helper()
	err := pollErr(t.Context(), 30*time.Second, 50*time.Millisecond, func() error {
		code, _, err := w.get("/healthz")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("healthz %d", code)
		}
		return nil
	})
	require.NoError(t, err, "worker %s HTTP endpoint; logs:\n%s", w.name, w.logs.tail(40))
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// get fetches path from the worker's HTTP endpoint.
func (w *worker) get(path string) (int, string, error) {
	resp, err := httpClient.Get("http://" + w.httpAddr + path)
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

// syncBuffer collects a worker's output while the test reads it, and gives
// the last lines for failure messages.
type syncBuffer struct{ testkit.SyncBuffer }

func (b *syncBuffer) tail(n int) string { return tailLines(strings.NewReader(b.String()), n) }

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
