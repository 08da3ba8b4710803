package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// sidecar is the peer's daprd, a child process.
type sidecar struct {
	cmd *exec.Cmd
	// done is closed once daprd has exited and err holds how.
	done chan struct{}
	err  error
}

// daprdArgs is daprd's command line: everything on 127.0.0.1, no metrics
// server, the app reached over gRPC.
func daprdArgs(cfg config, resources []string) []string {
	args := []string{
		"--app-id", cfg.appID,
		"--app-port", strconv.Itoa(cfg.appPort), "--app-protocol", "grpc", "--app-channel-address", "127.0.0.1",
		"--dapr-http-port", strconv.Itoa(cfg.httpPort), "--dapr-grpc-port", strconv.Itoa(cfg.grpcPort),
		"--dapr-internal-grpc-port", strconv.Itoa(cfg.internalPort),
		"--dapr-listen-addresses", "127.0.0.1", "--dapr-internal-grpc-listen-address", "127.0.0.1",
		"--enable-metrics=false", "--log-level", cfg.daprdLogLevel,
	}
	for _, r := range resources {
		args = append(args, "--resources-path", r)
	}
	return args
}

// startSidecar starts daprd with its output on out. It is killed if the
// peer dies without stopping it, so that a killed peer leaves no daprd
// holding its ports.
func startSidecar(cfg config, resources []string, out io.Writer) (*sidecar, error) {
	cmd := exec.Command(cfg.daprd, daprdArgs(cfg, resources)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s := &sidecar{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		defer close(s.done)
		// The kernel sends Pdeathsig when the thread that started the
		// child exits, not the process: keep this one until daprd is gone.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			s.err = err
			started <- err
			return
		}
		started <- nil
		s.err = cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start daprd %s: %w", cfg.daprd, err)
	}
	return s, nil
}

// exitErr is how daprd exited; call it once done is closed.
func (s *sidecar) exitErr() error {
	if s.err == nil {
		return errors.New("exit status 0")
	}
	return s.err
}

// stop asks daprd to shut down gracefully and kills it after timeout; it
// returns once daprd has exited.
func (s *sidecar) stop(timeout time.Duration) error {
	select {
	case <-s.done:
		return nil
	default:
	}
	// An error means it has exited already, which done is about to say.
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.done:
		return nil
	case <-t.C:
		_ = s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("daprd did not stop within %s: killed", timeout)
	}
}

// waitHTTP polls url until it answers 2xx, daprd exits, ctx ends or timeout
// passes.
func (s *sidecar) waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if httpOK(ctx, client, url) {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("daprd exited before %s answered: %w", url, s.exitErr())
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", url, ctx.Err())
		case <-tick.C:
		}
	}
}

// httpOK reports whether a GET of url answers 2xx.
func httpOK(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300
}
