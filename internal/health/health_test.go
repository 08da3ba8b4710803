package health

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEndpoints(t *testing.T) {
	var notReady error
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("m 1\n")) })
	tests := []struct {
		name      string
		pprof     bool
		notReady  error
		path      string
		wantCode  int
		inBody    string
		notInBody string // "" when nothing is ruled out
	}{
		{"healthz", false, nil, "/healthz", http.StatusOK, "ok", ""},
		{"healthz while not ready", false, errors.New("x"), "/healthz", http.StatusOK, "ok", ""},
		{"ready", false, nil, "/readyz", http.StatusOK, "ready", "not ready"},
		{"not ready says why", false, errors.New("state store breaker is open"), "/readyz", http.StatusServiceUnavailable, "breaker is open", ""},
		{"metrics", false, nil, "/metrics", http.StatusOK, "m 1", ""},
		// The pprof index lists its profiles, goroutine among them.
		{"pprof off", false, nil, "/debug/pprof/", http.StatusNotFound, "404 page not found", "goroutine"},
		{"pprof off, profile", false, nil, "/debug/pprof/goroutine?debug=1", http.StatusNotFound, "404 page not found", "goroutine"},
		{"pprof on", true, nil, "/debug/pprof/", http.StatusOK, "goroutine", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			notReady = tt.notReady
			h := Handler(func() error { return notReady }, metrics, tt.pprof)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			body := rec.Body.String()
			require.Equal(t, tt.wantCode, rec.Code, body)
			require.NotEmpty(t, tt.inBody, "every case must say what its body holds")
			require.Contains(t, body, tt.inBody)
			if tt.notInBody != "" {
				require.NotContains(t, body, tt.notInBody)
			}
		})
	}
}
