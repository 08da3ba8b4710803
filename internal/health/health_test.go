package health

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEndpoints(t *testing.T) {
	var notReady error
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("m 1\n")) })
	tests := []struct {
		name       string
		pprof      bool
		notReady   error
		path       string
		wantCode   int
		wantInBody string
	}{
		{"healthz", false, nil, "/healthz", http.StatusOK, "ok"},
		{"healthz while not ready", false, errors.New("x"), "/healthz", http.StatusOK, "ok"},
		{"ready", false, nil, "/readyz", http.StatusOK, "ready"},
		{"not ready says why", false, errors.New("state store breaker is open"), "/readyz", http.StatusServiceUnavailable, "breaker is open"},
		{"metrics", false, nil, "/metrics", http.StatusOK, "m 1"},
		{"pprof off", false, nil, "/debug/pprof/", http.StatusNotFound, ""},
		{"pprof on", true, nil, "/debug/pprof/", http.StatusOK, "goroutine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			notReady = tt.notReady
			h := Handler(func() error { return notReady }, metrics, tt.pprof)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			require.Equal(t, tt.wantCode, rec.Code)
			require.True(t, strings.Contains(rec.Body.String(), tt.wantInBody), rec.Body.String())
		})
	}
}
