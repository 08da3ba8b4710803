package metrics

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/breaker"
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
	hooks := m.StateHooks()
	hooks.OnDial()
	hooks.OnRequest("get", "200")
	hooks.OnRequest("get", "200")
	hooks.OnRequest("save", "409")
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
	} {
		require.Contains(t, rec.Body.String(), name)
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
