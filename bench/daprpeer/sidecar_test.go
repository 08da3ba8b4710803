package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeDaprd writes a shell script that stands in for daprd and returns
// its path.
func fakeDaprd(t *testing.T, script string) config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "daprd")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.daprd, cfg.appID, cfg.daprdLogLevel = path, "cartworker", "warn"
	cfg.httpPort, cfg.grpcPort, cfg.internalPort, cfg.appPort = 1, 2, 3, 4
	return cfg
}

// A daprd that exits on SIGTERM within a minute at most.
const politeDaprd = `trap 'exit 0' TERM
i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done`

func TestSidecarStopsOnSIGTERM(t *testing.T) {
	s, err := startSidecar(fakeDaprd(t, politeDaprd), []string{"a"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
	default:
		t.Fatal("stop returned before daprd exited")
	}
	if err := s.stop(time.Second); err != nil {
		t.Fatalf("stopping again: %v", err)
	}
}

func TestSidecarKilledWhenItIgnoresSIGTERM(t *testing.T) {
	// It says when it ignores SIGTERM, which it cannot before its first
	// line has run.
	ready := filepath.Join(t.TempDir(), "ignoring")
	s, err := startSidecar(fakeDaprd(t, "trap '' TERM\ntouch "+ready+"\ni=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done"), nil, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if i == 1000 {
			t.Fatal("the fake daprd did not start within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.stop(200 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("stop = %v, want it killed", err)
	}
}

func TestWaitHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		http.Error(w, "not yet", http.StatusInternalServerError)
	}))
	defer srv.Close()
	s, err := startSidecar(fakeDaprd(t, politeDaprd), nil, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.stop(30 * time.Second) }()
	if err := s.waitHTTP(context.Background(), srv.URL+"/ok", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	gone, err := startSidecar(fakeDaprd(t, "exit 3"), nil, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	err = gone.waitHTTP(context.Background(), srv.URL+"/never", 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "daprd exited") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("waitHTTP on an exited daprd = %v", err)
	}
}

func TestDaprdArgs(t *testing.T) {
	args := strings.Join(daprdArgs(fakeDaprd(t, ""), []string{"/state", "/pubsub"}), " ")
	for _, want := range []string{
		"--app-id cartworker", "--app-port 4 --app-protocol grpc", "--dapr-http-port 1 --dapr-grpc-port 2",
		"--dapr-listen-addresses 127.0.0.1", "--resources-path /state --resources-path /pubsub",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("daprd args %q lack %q", args, want)
		}
	}
}
