package cartworkertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/testcontainers/testcontainers-go"
)

// Worker is one cartworker worker of a stack, however it runs. Its methods
// are safe for concurrent use.
type Worker struct {
	name string
	kind workerKind
	// url is the base URL of its HTTP endpoints on the loopback.
	url string

	// logs is the output of an in-process or host-process worker.
	logs *logBuffer
	// ctr is a container worker's container.
	ctr *testcontainers.DockerContainer
	// proc is a host-process worker's process.
	proc *os.Process
	// stop ends an in-process worker gracefully, abort as a kill would.
	stop      context.CancelFunc
	abort     chan struct{}
	abortOnce sync.Once

	// done is closed once an in-process or host-process worker has exited,
	// with exitErr and exitCode set.
	done     chan struct{}
	exitErr  error
	exitCode int
}

// Name is the worker's name (WorkerName, else "worker-<index>").
func (w *Worker) Name() string { return w.name }

// URL is the base URL of the worker's HTTP endpoints on the loopback
// (http://127.0.0.1:port).
func (w *Worker) URL() string { return w.url }

// HealthURL is the worker's liveness endpoint, /healthz.
func (w *Worker) HealthURL() string { return w.url + "/healthz" }

// ReadyURL is the worker's readiness endpoint, /readyz: 200 when it
// consumes, 503 with the reason when not.
func (w *Worker) ReadyURL() string { return w.url + "/readyz" }

// MetricsURL is the worker's Prometheus endpoint, /metrics.
func (w *Worker) MetricsURL() string { return w.url + "/metrics" }

// Logs returns the worker's output so far (LOG_FORMAT=text unless set).
func (w *Worker) Logs() string {
	if w.ctr != nil {
		return containerTail(w.ctr, 1<<30)
	}
	return w.logs.String()
}

// Container is a container worker's container, nil for the others.
func (w *Worker) Container() *testcontainers.DockerContainer { return w.ctr }

// Signal sends sig to a host-process worker (WithWorkerBinary) or to a
// container worker's process (docker kill --signal). An in-process worker
// has no process of its own: use StopWorker or KillWorker.
func (w *Worker) Signal(ctx context.Context, sig syscall.Signal) error {
	switch w.kind {
	case hostProcess:
		if err := w.proc.Signal(sig); err != nil {
			return fmt.Errorf("cartworkertest: signal %s to worker %s: %w", sig, w.name, err)
		}
		return nil
	case container:
		return w.dockerSignal(ctx, sig)
	}
	return fmt.Errorf("cartworkertest: worker %s runs in the test's process and cannot be signalled: "+
		"run it with WithWorkerBinary, or use StopWorker or KillWorker", w.name)
}

func (w *Worker) dockerSignal(ctx context.Context, sig syscall.Signal) error {
	return withDocker(ctx, func(cli *testcontainers.DockerClient) error {
		_, err := cli.ContainerKill(ctx, w.ctr.GetContainerID(), killOptions(sig))
		if err != nil {
			return fmt.Errorf("cartworkertest: signal %s to worker container %s: %w", sig, w.name, err)
		}
		return nil
	})
}

// Exited reports whether the worker has stopped.
func (w *Worker) Exited() bool {
	if w.ctr != nil {
		st, err := w.ctr.State(context.Background())
		return err == nil && !st.Running
	}
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// Wait waits until the worker has exited, or ctx ends, and returns its
// exit code: a process's (-1 when a signal ended it), a container's, and
// for an in-process worker 0, or 1 when app.Run failed (Err says why).
func (w *Worker) Wait(ctx context.Context) (int, error) {
	if w.ctr != nil {
		return w.waitContainer(ctx)
	}
	select {
	case <-w.done:
		return w.exitCode, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("cartworkertest: worker %s still runs: %w", w.name, ctx.Err())
	}
}

// Err is what ended an in-process or host-process worker: app.Run's error
// or the process's exit status; nil while it runs or after a clean exit.
func (w *Worker) Err() error {
	select {
	case <-w.done:
		return w.exitErr
	default:
		return nil
	}
}

func (w *Worker) waitContainer(ctx context.Context) (int, error) {
	code := 0
	err := poll(ctx, 0, "worker "+w.name+" to exit", func() error {
		st, err := w.ctr.State(ctx)
		if err != nil {
			return fmt.Errorf("state of worker container %s: %w", w.name, err)
		}
		if st.Running {
			return errors.New("still running")
		}
		code = st.ExitCode
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("cartworkertest: %w", err)
	}
	return code, nil
}

// Stop stops the worker gracefully: it drains what it holds, hands back
// the rest and gives its partitions back (SIGTERM, docker stop, or the end
// of an in-process worker's context). It waits for the exit, and kills the
// worker if ctx ends first.
func (w *Worker) Stop(ctx context.Context) error {
	switch w.kind {
	case inProcess:
		w.stop()
	case hostProcess:
		// SIGCONT too: a frozen process would not act on the SIGTERM.
		if err := w.proc.Signal(syscall.SIGTERM); err == nil {
			_ = w.proc.Signal(syscall.SIGCONT)
		}
	case container:
		grace := DefaultStopTimeout
		if err := w.ctr.Stop(ctx, &grace); err != nil {
			return fmt.Errorf("cartworkertest: stop worker container %s: %w", w.name, err)
		}
		return nil
	}
	if _, err := w.Wait(ctx); err != nil {
		return errors.Join(err, w.Kill(context.WithoutCancel(ctx)))
	}
	return nil
}

// Kill ends the worker at once, without its graceful drain: SIGKILL for a
// process or a container; for an in-process worker see KillWorker. It
// waits for the exit.
func (w *Worker) Kill(ctx context.Context) error {
	switch w.kind {
	case inProcess:
		// The abort first, then the context: Run may not watch the abort
		// yet (it still connects), and then ends on the context alone.
		w.abortOnce.Do(func() { close(w.abort) })
		w.stop()
	case hostProcess:
		_ = w.proc.Kill() // fails only if it has exited already
	case container:
		if err := w.dockerSignal(ctx, syscall.SIGKILL); err != nil && !w.Exited() {
			return err
		}
	}
	_, err := w.Wait(ctx)
	return err
}

// stopOrKill stops the worker, killing it after DefaultStopTimeout.
func (w *Worker) stopOrKill(ctx context.Context) error {
	if w.Exited() {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, DefaultStopTimeout)
	defer cancel()
	return w.Stop(sctx)
}

// checkBinary says clearly when WithWorkerBinary names no executable.
func checkBinary(path string) error {
	fi, err := os.Stat(path)
	if err == nil && (fi.IsDir() || fi.Mode()&0o111 == 0) {
		err = errors.New("not an executable file")
	}
	if err != nil {
		return fmt.Errorf("cartworkertest: WithWorkerBinary(%q): %w (build one with BuildWorker)", path, err)
	}
	return nil
}

// startProcess starts the worker binary with exactly env.
func startProcess(w *Worker, binary string, env map[string]string) error {
	cmd := exec.Command(binary)
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if env[k] != "" {
			cmd.Env = append(cmd.Env, k+"="+env[k])
		}
	}
	cmd.Stdout, cmd.Stderr = w.logs, w.logs
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cartworkertest: start worker %s (%s): %w", w.name, binary, err)
	}
	w.proc = cmd.Process
	// Owned by the worker: it ends when the process does, which Stop,
	// Kill and Terminate see to.
	go func() {
		err := cmd.Wait()
		w.exitErr, w.exitCode = err, cmd.ProcessState.ExitCode()
		close(w.done)
	}()
	return nil
}

// loopbackURL turns a listen address (":8080", "0.0.0.0:8080") into the
// URL a client on this machine uses.
func loopbackURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("WORKER_HTTP_ADDR %q: %w", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// logBuffer collects a worker's output while tests read it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tail is the last n lines of the output.
func (b *logBuffer) tail(n int) string { return tailLines(strings.NewReader(b.String()), n) }
