package metrics

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/budget"
	"github.com/cartworker/cartworker/internal/consumer"
)

func TestMetricsRecordAndServe(t *testing.T) {
	m := New()
	m.CommandDone("add-item", "applied", 3*time.Millisecond)
	m.CommandDone("add-item", "applied", 5*time.Millisecond)
	m.CommandDone("cache", "rejected", time.Millisecond)
	m.Redelivered()
	m.DeadLettered()
	m.Batch(1)
	m.Batch(20)
	m.Apply(1)
	m.Apply(12)
	hooks := m.StateHooks()
	hooks.OnDial()
	hooks.OnRequest("get", "200", 2*time.Millisecond)
	hooks.OnRequest("get", "200", 2*time.Millisecond)
	hooks.OnRequest("save", "409", 2*time.Millisecond)
	m.SetBreakerState(breaker.StateOpen)

	require.Equal(t, 2.0, testutil.ToFloat64(m.commands.WithLabelValues("add-item", "applied")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.commands.WithLabelValues("cache", "rejected")))
	require.Equal(t, 2.0, testutil.ToFloat64(m.stateRequests.WithLabelValues("get", "200")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.dials))
	require.Equal(t, 2.0, testutil.ToFloat64(m.breakerState))
	require.Equal(t, 1.0, testutil.ToFloat64(m.redeliveries))
	require.Equal(t, 1.0, testutil.ToFloat64(m.deadLetters))

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	for _, name := range []string{
		"cartworker_commands_total", "cartworker_command_duration_seconds_bucket", "cartworker_state_requests_total",
		"cartworker_state_connections_opened_total", "cartworker_breaker_state", "cartworker_redeliveries_total",
		"cartworker_dead_letters_total", "go_goroutines", "process_resident_memory_bytes",
		`cartworker_batch_size_bucket{le="1"} 1`, `cartworker_batch_size_bucket{le="32"} 2`, "cartworker_batch_size_sum 21",
		`cartworker_apply_carts_bucket{le="8"} 1`, `cartworker_apply_carts_bucket{le="16"} 2`, "cartworker_apply_carts_sum 13",
	} {
		require.Contains(t, rec.Body.String(), name)
	}
}

func TestOperatorGauges(t *testing.T) {
	m := New()
	require.Equal(t, 0.0, testutil.ToFloat64(m.ready), "not ready before a check is set")
	var notReady error
	m.ReadyFrom(func() error { return notReady })
	require.Equal(t, 1.0, testutil.ToFloat64(m.ready))
	notReady = errors.New("daprd unreachable")
	require.Equal(t, 0.0, testutil.ToFloat64(m.ready), "the gauge runs the check at every scrape")

	m.InFlight(3)
	m.InFlight(-2)
	m.Lag(42)
	m.DeadLetterDepth(7)
	m.SetBuildInfo("v1.2.3", "", "go1.26")
	m.StateHooks().OnRequest("get", "OK", 3*time.Millisecond)
	commands, carts, err := budget.Split(16 << 20)
	require.NoError(t, err)
	m.HeldFrom(commands, carts)
	require.NoError(t, carts.Take(context.Background(), 1000))

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range []string{
		"cartworker_inflight_commands 1",
		`cartworker_held_bytes{share="carts"} 1000`,
		`cartworker_held_bytes{share="commands"} 0`,
		`cartworker_held_max_bytes{share="carts"} 1.2582912e+07`,
		`cartworker_held_max_bytes{share="commands"} 4.194304e+06`,
		"cartworker_consumer_pending_messages 42",
		"cartworker_dead_letter_stream_messages 7",
		`cartworker_build_info{goversion="go1.26",revision="unknown",version="v1.2.3"} 1`,
		`cartworker_state_request_duration_seconds_bucket{code="OK",op="get",le="0.004"} 1`,
		`cartworker_state_request_duration_seconds_bucket{code="OK",op="get",le="0.002"} 0`,
		"cartworker_ready 0",
	} {
		require.Contains(t, rec.Body.String(), line)
	}
}

func TestRegistriesAreIndependent(t *testing.T) {
	a, b := New(), New()
	a.Redelivered()
	require.Equal(t, 0.0, testutil.ToFloat64(b.redeliveries))
}

func TestNamesListsTheWorkersMetrics(t *testing.T) {
	names := Names()
	for _, want := range []string{
		"cartworker_commands_total", "cartworker_inflight_commands", "cartworker_dead_letter_stream_messages",
		"cartworker_state_request_duration_seconds", "cartworker_build_info", "cartworker_consumer_pending_messages",
		"cartworker_ready", "cartworker_breaker_state",
	} {
		require.Contains(t, names, want)
	}
	require.NotContains(t, names, "go_goroutines", "only the worker's own prefix")
}

// Acked observes each stage of an applied command: a stage whose start is
// unknown is left out, and one that clocks make negative counts as 0.
func TestAckedObservesEachStage(t *testing.T) {
	m := New()
	t0 := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	m.Acked(consumer.Stages{Stored: at(0), Fetched: at(2), Started: at(5), Applied: at(9), Acked: at(10)})
	// JetStream's server clock ahead of this instance's: fetch is 0.
	m.Acked(consumer.Stages{Stored: at(3), Fetched: at(2), Started: at(4), Applied: at(6), Acked: at(7)})
	// No fetch time: fetch and queue are left out.
	m.Acked(consumer.Stages{Stored: at(0), Started: at(1), Applied: at(2), Acked: at(3)})

	sum := func(stage string) (count uint64, seconds float64) {
		h := &dto.Metric{}
		require.NoError(t, m.stages.WithLabelValues(stage).(prometheus.Histogram).Write(h))
		return h.GetHistogram().GetSampleCount(), h.GetHistogram().GetSampleSum()
	}
	for _, tc := range []struct {
		stage string
		count uint64
		ms    float64
	}{{"fetch", 2, 2}, {"queue", 2, 5}, {"apply", 3, 7}, {"ack", 3, 3}} {
		count, seconds := sum(tc.stage)
		require.Equal(t, tc.count, count, tc.stage)
		require.InDelta(t, tc.ms/1000, seconds, 1e-9, tc.stage)
	}
}
