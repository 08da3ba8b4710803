package cartworkertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"

	"github.com/cartworker/cartworker/internal/app"
	"github.com/cartworker/cartworker/internal/config"
)

// WorkerEnv returns the environment a worker on this machine gets from the
// stack (NATS_URL, DAPR_HTTP_ENDPOINT, DAPR_GRPC_ENDPOINT, DAPR_API_TOKEN,
// LOG_FORMAT, LOG_LEVEL), without WithWorkerEnv's and without
// WORKER_HTTP_ADDR: for a worker process a test runs itself.
func (s *Stack) WorkerEnv() map[string]string {
	return map[string]string{
		"NATS_URL":           s.natsURL,
		"DAPR_HTTP_ENDPOINT": s.daprHTTP,
		"DAPR_GRPC_ENDPOINT": "http://" + s.daprGRPC,
		"DAPR_API_TOKEN":     s.set.daprToken,
		"LOG_FORMAT":         "text",
		"LOG_LEVEL":          "info",
	}
}

// containerEnv is WorkerEnv for a worker on the stack's network.
func (s *Stack) containerEnv() map[string]string {
	env := s.WorkerEnv()
	env["NATS_URL"] = "nats://" + natsAlias + ":4222"
	env["DAPR_HTTP_ENDPOINT"] = "http://" + daprAlias + ":3500"
	env["DAPR_GRPC_ENDPOINT"] = "http://" + daprAlias + ":50001"
	env["WORKER_HTTP_ADDR"] = ":8080"
	return env
}

// startWorkers starts n workers of the stack's kind side by side and
// waits until each is ready.
func (s *Stack) startWorkers(ctx context.Context, n int) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = s.AddWorker(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// AddWorker starts one more worker, as Run's options say unless opts
// change it, and returns it once it is ready (/readyz 200; with
// WorkerWaitHealthy once it serves /healthz). A worker that exits or does
// not get there within the startup timeout is an error with its readiness
// reason and its last log lines; it is stopped by then.
func (s *Stack) AddWorker(ctx context.Context, opts ...WorkerOption) (*Worker, error) {
	spec := s.set.worker
	var errs []error
	for _, opt := range opts {
		errs = append(errs, opt(&spec))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("cartworkertest: AddWorker: %w", err)
	}
	s.mu.Lock()
	if s.terminated {
		s.mu.Unlock()
		return nil, errors.New("cartworkertest: AddWorker on a terminated stack")
	}
	// Its number, and its place in workers once it has started: Terminate
	// stops only workers whose start is over, and this one is stopped
	// below should Terminate come first.
	i := len(s.workers)
	s.workers = append(s.workers, nil)
	s.mu.Unlock()
	if spec.name == "" {
		spec.name = "worker-" + strconv.Itoa(i)
	}
	w := &Worker{name: spec.name, kind: spec.kind, logs: &logBuffer{}, abort: make(chan struct{}), done: make(chan struct{})}

	var err error
	switch spec.kind {
	case inProcess:
		err = s.runInProcess(w, spec)
	case hostProcess:
		err = s.runProcess(w, spec)
	case container:
		err = s.runWorkerContainer(ctx, w, spec)
	}
	if err != nil {
		return nil, err // it never ran (a container that did is removed by Terminate)
	}
	s.mu.Lock()
	s.workers[i] = w
	terminated := s.terminated
	s.mu.Unlock()
	if terminated {
		return nil, errors.Join(fmt.Errorf("cartworkertest: the stack was terminated while worker %s started", w.name),
			w.stopOrKill(context.WithoutCancel(ctx)))
	}
	if err := s.waitWorker(ctx, w, spec.healthyOnly); err != nil {
		return nil, errors.Join(err, w.stopOrKill(context.WithoutCancel(ctx)))
	}
	return w, nil
}

// hostEnv is a host-side worker's environment: the stack's, then the
// spec's.
func (s *Stack) hostEnv(spec workerSpec) map[string]string {
	env := s.WorkerEnv()
	maps.Copy(env, spec.env)
	return env
}

// runInProcess runs app.Run in a goroutine that the worker owns: Stop ends
// its context, Kill aborts it, and done is closed when Run has returned.
func (s *Stack) runInProcess(w *Worker, spec workerSpec) error {
	env := s.hostEnv(spec)
	var ln net.Listener
	if env["WORKER_HTTP_ADDR"] == "" {
		// A port of its own, known before Run starts, that nothing can
		// take in between.
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return fmt.Errorf("cartworkertest: worker %s: listen: %w", w.name, err)
		}
		env["WORKER_HTTP_ADDR"] = ln.Addr().String()
	}
	cfg, err := config.Load(nil, func(k string) string { return env[k] }, io.Discard)
	if err == nil {
		w.url, err = loopbackURL(cfg.HTTPAddr)
	}
	if err != nil {
		if ln != nil {
			_ = ln.Close()
		}
		return fmt.Errorf("cartworkertest: worker %s: %w", w.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.stop = cancel
	runOpts := []app.Option{app.WithAbort(w.abort)}
	if ln != nil {
		runOpts = append(runOpts, app.WithListener(ln))
	}
	go func() {
		defer cancel()
		err := app.Run(ctx, cfg, app.NewLogger(cfg, w.logs), runOpts...)
		select {
		case <-w.abort: // what a killed worker's Run returns says nothing
		default:
			if w.exitErr = err; err != nil {
				w.exitCode = 1
			}
		}
		close(w.done)
	}()
	return nil
}

// runProcess starts the worker binary on a free loopback port.
func (s *Stack) runProcess(w *Worker, spec workerSpec) error {
	env := s.hostEnv(spec)
	if env["WORKER_HTTP_ADDR"] == "" {
		port, err := FreePort()
		if err != nil {
			return err
		}
		env["WORKER_HTTP_ADDR"] = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	url, err := loopbackURL(env["WORKER_HTTP_ADDR"])
	if err != nil {
		return fmt.Errorf("cartworkertest: worker %s: %w", w.name, err)
	}
	w.url = url
	return startProcess(w, spec.binary, env)
}

// runWorkerContainer runs the worker image on the stack's network, its
// HTTP port on a random loopback port. Readiness is waited for by
// waitWorker, which reports it better than a wait strategy.
func (s *Stack) runWorkerContainer(ctx context.Context, w *Worker, spec workerSpec) error {
	env := s.containerEnv()
	maps.Copy(env, spec.env)
	c, err := s.runContainer(ctx, "worker-"+strings.ToLower(w.name)+"-"+randomHex(2), spec.image, runGeneric,
		tcnetwork.WithNetwork([]string{w.name}, s.network),
		testcontainers.WithEnv(env),
		publishOnLoopback(workerPort, 0),
	)
	if c != nil {
		s.addContainer(c)
		w.ctr = c.(*testcontainers.DockerContainer)
	}
	if err != nil {
		return err
	}
	w.url, err = w.ctr.PortEndpoint(ctx, workerPort, "http")
	return err
}

// waitWorker polls the worker until /readyz answers 200 (/healthz with
// healthyOnly), it exits, or the startup timeout passes.
func (s *Stack) waitWorker(ctx context.Context, w *Worker, healthyOnly bool) error {
	deadline := time.NewTimer(s.set.startupTimeout)
	defer deadline.Stop()
	url := w.ReadyURL()
	if healthyOnly {
		url = w.HealthURL()
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := "no answer yet"
	for {
		code, body, err := get(ctx, hc, url)
		switch {
		case err != nil:
			last = err.Error()
		case code == http.StatusOK:
			return nil
		default:
			last = fmt.Sprintf("%d %s", code, strings.TrimSpace(body))
		}
		if w.Exited() {
			return fmt.Errorf("cartworkertest: worker %s (%s) exited before it was ready (%v); its last log lines:\n%s",
				w.name, w.kind, w.Err(), w.tail())
		}
		select {
		case <-deadline.C:
			return fmt.Errorf("cartworkertest: worker %s (%s) not ready within %s: GET %s: %s; its last log lines:\n%s",
				w.name, w.kind, s.set.startupTimeout, url, last, w.tail())
		case <-ctx.Done():
			return fmt.Errorf("cartworkertest: worker %s (%s) not ready: %w; GET %s: %s", w.name, w.kind, ctx.Err(), url, last)
		case <-tick.C:
		}
	}
}

// tail is the last lines of the worker's output, for errors.
func (w *Worker) tail() string { return w.lastLines(logTail) }

// lastLines is the last n lines of the worker's output.
func (w *Worker) lastLines(n int) string {
	if w.ctr != nil {
		return containerTail(w.ctr, n)
	}
	return w.logs.tail(n)
}

// get fetches url: its status and body.
func get(ctx context.Context, hc *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b), err
}
