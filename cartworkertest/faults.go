package cartworkertest

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// Workers returns the stack's workers in the order of their numbers,
// stopped ones included.
func (s *Stack) Workers() []*Worker {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Worker
	for _, w := range s.workers {
		if w != nil {
			out = append(out, w)
		}
	}
	return out
}

// Worker returns worker number i, or nil if there is none. Workers are
// numbered from 0 in the order their start began: Run's, then AddWorker's.
// A worker that failed to start, or is starting, has no Worker.
func (s *Stack) Worker(i int) *Worker {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < 0 || i >= len(s.workers) {
		return nil
	}
	return s.workers[i]
}

func (s *Stack) worker(i int) (*Worker, error) {
	if w := s.Worker(i); w != nil {
		return w, nil
	}
	return nil, fmt.Errorf("cartworkertest: no worker %d (the stack has %d)", i, len(s.Workers()))
}

// StopWorker stops worker i gracefully (see Worker.Stop) and waits for it.
func (s *Stack) StopWorker(ctx context.Context, i int) error {
	w, err := s.worker(i)
	if err != nil {
		return err
	}
	return w.Stop(ctx)
}

// KillWorker ends worker i at once, without its graceful drain, and waits
// for it: what it held is redelivered after WORKER_ACK_WAIT and its
// partitions move once their leases expire.
//
// A host process or a container gets SIGKILL. An in-process worker has no
// process to kill: its NATS connection and its state client are closed at
// once, so it acknowledges, hands back and publishes nothing more, gives
// no lease back and starts no state call (a gRPC call in flight fails),
// and then it is cancelled. That is what NATS and daprd see of a SIGKILL.
// What differs: its goroutines end in order and KillWorker waits for them
// (goleak stays clean); an HTTP state call in flight may still complete;
// and its memory and HTTP port stay until it has returned. For a real
// process death, or to freeze a worker (SIGSTOP), use WithWorkerBinary.
func (s *Stack) KillWorker(ctx context.Context, i int) error {
	w, err := s.worker(i)
	if err != nil {
		return err
	}
	return w.Kill(ctx)
}

// PauseDaprd freezes daprd (docker pause): calls to it hang rather than
// fail, as with a sidecar starved of CPU. UnpauseDaprd, or Terminate,
// thaws it.
func (s *Stack) PauseDaprd(ctx context.Context) error {
	if err := s.dockerOn(ctx, s.daprd, "pause daprd", func(cli *testcontainers.DockerClient, id string) error {
		_, err := cli.ContainerPause(ctx, id, client.ContainerPauseOptions{})
		return err
	}); err != nil {
		return err
	}
	s.mu.Lock()
	s.paused = true
	s.mu.Unlock()
	return nil
}

// UnpauseDaprd thaws daprd after PauseDaprd; it does nothing when daprd
// is not paused.
func (s *Stack) UnpauseDaprd(ctx context.Context) error {
	s.mu.Lock()
	paused := s.paused
	s.paused = false
	s.mu.Unlock()
	if !paused {
		return nil
	}
	return s.dockerOn(ctx, s.daprd, "unpause daprd", func(cli *testcontainers.DockerClient, id string) error {
		_, err := cli.ContainerUnpause(ctx, id, client.ContainerUnpauseOptions{})
		return err
	})
}

// StopDaprd stops daprd (SIGTERM, then SIGKILL after 5 s): calls to it are
// refused until StartDaprd.
func (s *Stack) StopDaprd(ctx context.Context) error {
	grace := 5 * time.Second
	if err := s.daprd.Stop(ctx, &grace); err != nil {
		return fmt.Errorf("cartworkertest: stop daprd: %w", err)
	}
	return nil
}

// StartDaprd starts daprd again after StopDaprd, on the same ports, and
// returns once it is healthy.
func (s *Stack) StartDaprd(ctx context.Context) error {
	if err := s.daprd.Start(ctx); err != nil {
		return fmt.Errorf("cartworkertest: start daprd: %w%s", err, tailOf(s.daprd))
	}
	return nil
}

// KillNATS kills the NATS server (SIGKILL) and waits until it has exited.
// Its JetStream store, in a volume, and its port stay for StartNATS.
func (s *Stack) KillNATS(ctx context.Context) error {
	if err := s.dockerOn(ctx, s.nats, "kill nats", func(cli *testcontainers.DockerClient, id string) error {
		_, err := cli.ContainerKill(ctx, id, killOptions(syscall.SIGKILL))
		return err
	}); err != nil {
		return err
	}
	return poll(ctx, 30*time.Second, "nats to exit", func() error {
		st, err := s.nats.State(ctx)
		if err != nil {
			return err
		}
		if st.Running {
			return errors.New("still running")
		}
		return nil
	})
}

// StartNATS starts the NATS server again after KillNATS, on the same store
// and port, and returns once the stack's own connection has JetStream
// back.
func (s *Stack) StartNATS(ctx context.Context) error {
	if err := s.nats.Start(ctx); err != nil {
		return fmt.Errorf("cartworkertest: start nats: %w%s", err, tailOf(s.nats))
	}
	// The log line the wait strategy looks for is there from the first
	// run too: JetStream answering is the real sign.
	err := poll(ctx, s.set.startupTimeout, "JetStream back after the restart", func() error {
		_, err := s.js.AccountInfo(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("cartworkertest: %w%s", err, tailOf(s.nats))
	}
	return nil
}

// RestartNATS kills the NATS server and starts it again on the same
// JetStream store and port (KillNATS, then StartNATS): streams, consumers
// and stored commands survive, as with a persistent volume.
func (s *Stack) RestartNATS(ctx context.Context) error {
	if err := s.KillNATS(ctx); err != nil {
		return err
	}
	return s.StartNATS(ctx)
}

// dockerOn runs f on container c with a Docker client.
func (s *Stack) dockerOn(ctx context.Context, c *testcontainers.DockerContainer, what string, f func(cli *testcontainers.DockerClient, id string) error) error {
	return withDocker(ctx, func(cli *testcontainers.DockerClient) error {
		if err := f(cli, c.GetContainerID()); err != nil {
			return fmt.Errorf("cartworkertest: %s: %w", what, err)
		}
		return nil
	})
}

// withDocker runs f with a client of the Docker daemon.
func withDocker(ctx context.Context, f func(cli *testcontainers.DockerClient) error) error {
	cli, err := dockerClient(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	return f(cli)
}

// killOptions asks docker kill for sig.
func killOptions(sig syscall.Signal) client.ContainerKillOptions {
	names := map[syscall.Signal]string{
		syscall.SIGKILL: "KILL", syscall.SIGTERM: "TERM", syscall.SIGSTOP: "STOP",
		syscall.SIGCONT: "CONT", syscall.SIGINT: "INT", syscall.SIGQUIT: "QUIT",
	}
	name, ok := names[sig]
	if !ok {
		name = fmt.Sprint(int(sig))
	}
	return client.ContainerKillOptions{Signal: name}
}

// poll calls check until it returns nil, every 50 ms, for at most timeout
// (0: until ctx ends), and returns its last error otherwise.
func poll(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		switch {
		case err == nil:
			return nil
		case timeout > 0 && time.Now().After(deadline):
			return fmt.Errorf("waiting %s for %s: %w", timeout, what, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %w)", what, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
